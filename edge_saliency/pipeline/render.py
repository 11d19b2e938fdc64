"""Frame + result -> the image a user sees: overlay views, LOVI legend, HUD, "no signal" banner.

Views:  heatmap (SMOE) | recipro (Recipro-CAM) | fastcam (SMOE x Recipro-CAM) | lovi (LOVI colours
of the per-scale SMOE maps, with a legend) | side (frame | map) | raw (the frame alone).

Cheap by design: each map is normalised at the graph's resolution, upsampled once to the frame
size (cv2.resize), coloured with an OpenCV colour map (a LUT) and blended with cv2.addWeighted.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge_saliency import contract
from edge_saliency.pipeline import lovi

VIEWS = ("heatmap", "recipro", "fastcam", "lovi", "side", "raw")
VIEW_HELP = {
    "heatmap": "SMOE Scale map", "recipro": "Recipro-CAM of the top class",
    "fastcam": "SMOE x Recipro-CAM", "lovi": "LOVI colours per layer", "side": "frame | map", "raw": "frame only",
}
# which outputs each view needs
VIEW_NEEDS = {
    "heatmap": (contract.SMOE,), "recipro": (contract.RECIPRO,), "fastcam": (contract.SMOE, contract.RECIPRO),
    "lovi": (contract.SMOE_SCALES,), "side": (), "raw": (),
}
COLORMAPS = {name[len("COLORMAP_"):].lower(): getattr(cv2, name) for name in dir(cv2) if name.startswith("COLORMAP_")}

FONT = cv2.FONT_HERSHEY_SIMPLEX


def available_views(outputs) -> list[str]:
    """Views a model with these outputs can show ('fastcam' with one of its two maps degrades to it)."""
    outs = set(outputs)
    views = []
    for v in VIEWS:
        if v == "fastcam":
            ok = bool(outs & {contract.SMOE, contract.RECIPRO})
        else:
            ok = all(n in outs for n in VIEW_NEEDS[v])
        if ok:
            views.append(v)
    return views


@dataclass
class HudStats:
    """What the HUD shows besides the labels (seconds; fps in frames per second)."""

    fps: float = 0.0
    capture_wait: float = 0.0
    preprocess: float = 0.0
    inference: float = 0.0
    render: float = 0.0
    provider: str = ""


def normalise_for_display(m: np.ndarray) -> np.ndarray:
    """[h, w] float map -> uint8 0..255, min-max stretched (a flat map is all zero)."""
    lo, hi = float(m.min()), float(m.max())
    if not hi > lo:
        return np.zeros(m.shape, np.uint8)
    return ((m - lo) * (255.0 / (hi - lo))).astype(np.uint8)


class Renderer:
    def __init__(self, view: str = "fastcam", alpha: float = 0.5, colormap: str = "jet", hud: bool = True,
                 topk: int = 3, scale_names=(), provider: str = "", outputs=contract.OUTPUTS,
                 legend: bool = True):
        self.views = available_views(outputs)
        if view not in VIEWS:
            raise ValueError(f"unknown view {view!r}; choose from: {', '.join(VIEWS)}")
        if view not in self.views:
            raise ValueError(f"this model cannot show the {view} view (it lacks "
                             f"{', '.join(n for n in VIEW_NEEDS[view])}); it can show: {', '.join(self.views)}")
        if colormap not in COLORMAPS:
            raise ValueError(f"unknown colour map {colormap!r}; choose from: {', '.join(sorted(COLORMAPS))}")
        self.view = view
        self.side_view = view if view not in ("side", "raw") else next(
            (v for v in ("fastcam", "heatmap", "recipro", "lovi") if v in self.views), "raw")
        self.alpha = float(alpha)
        self.colormap = COLORMAPS[colormap]
        self.hud = hud
        self.topk = topk
        self.provider = provider
        self.scale_names = [short_scale_name(n) for n in scale_names]
        self.legend = legend
        self.boxes: list[tuple[str, tuple[int, int, int, int]]] = []  # (what, x0 y0 x1 y1) drawn by the last render

    # ------------------------------------------------------------------ view control
    def set_view(self, view: str) -> bool:
        if view not in self.views:
            return False
        self.view = view
        if view not in ("side", "raw"):
            self.side_view = view
        return True

    def next_view(self) -> str:
        i = self.views.index(self.view)
        self.set_view(self.views[(i + 1) % len(self.views)])
        return self.view

    def nudge_alpha(self, delta: float) -> float:
        self.alpha = float(np.clip(self.alpha + delta, 0.0, 1.0))
        return self.alpha

    # ------------------------------------------------------------------ maps
    @staticmethod
    def map_of(result, view: str) -> np.ndarray | None:
        """The saliency map a view shows, at the graph's resolution."""
        name = {"heatmap": "smoe", "recipro": "recipro", "fastcam": "fastcam"}.get(view)
        return None if name is None else result.map(name)

    def coloured(self, result, view: str, size: tuple[int, int]) -> np.ndarray | None:
        """[H, W, 3] uint8 colour image of a view's map at size (w, h); None for raw."""
        if view == "lovi":
            if result.smoe_scales is None:
                return None
            return cv2.resize(lovi.lovi_display_bgr_u8(result.smoe_scales), size, interpolation=cv2.INTER_LINEAR)
        m = self.map_of(result, view)
        if m is None:
            return None
        big = cv2.resize(normalise_for_display(m), size, interpolation=cv2.INTER_LINEAR)
        return cv2.applyColorMap(big, self.colormap)

    # ------------------------------------------------------------------ the image
    def render(self, frame: np.ndarray, result, stats: HudStats | None = None, banner: str | None = None) -> np.ndarray:
        """The overlay as recordings, the daemon's stream and the window all get it (no key help:
        that is the window's, see `draw_help`). `self.boxes` lists what was drawn where."""
        h, w = frame.shape[:2]
        view = self.view
        self.boxes = []
        self.texts: list[tuple[str, str]] = []  # (what, text) of the HUD lines drawn
        if view == "raw":
            out = frame.copy()
        elif view == "side":
            colour = self.coloured(result, self.side_view, (w, h))
            out = np.hstack([frame, colour if colour is not None else frame])
        elif view == "lovi":
            colour = self.coloured(result, view, (w, h))
            out = frame.copy() if colour is None else blend_by_value(frame, colour, self.alpha)
        else:
            colour = self.coloured(result, view, (w, h))
            out = frame.copy() if colour is None else cv2.addWeighted(frame, 1.0 - self.alpha, colour, self.alpha, 0.0)
        shown = self.side_view if view == "side" else view
        top = 0
        if self.hud:
            top = self.draw_hud(out, result, stats, w)
        if shown == "lovi" and view != "raw" and self.legend and self.scale_names:
            self._draw_legend(out, top)
        if banner:
            draw_banner(out, banner)
        return out

    def draw_hud(self, out: np.ndarray, result, stats: HudStats | None, frame_w: int) -> int:
        """Labels and stats, top left, each line fitted to the width. Returns the block's bottom y."""
        H, W = out.shape[:2]
        s = hud_scale(frame_w, H)
        y = MARGIN
        lines = []
        for i, (label, score) in enumerate(result.topk[: self.topk]):
            lines.append((f"{i + 1}. {label[:32]}  {score * 100:.1f}%", s * (1.15 if i == 0 else 1.0),
                          (255, 255, 255) if i == 0 else (220, 220, 220), "label"))
        if stats is not None:
            fps = f"{stats.fps:.1f} FPS" if stats.fps > 0 else "-- FPS"
            lines.append((f"{fps}  {stats.provider or self.provider}  {self.view}"
                          f"{'' if self.view in ('raw', 'side') else f'  alpha {self.alpha:.2f}'}", s, (120, 255, 120), "stats"))
            render = f"  render {stats.render * 1e3:.1f}" if stats.render > 0 else ""  # 0: not measured (yet)
            lines.append((f"ms: wait {stats.capture_wait * 1e3:.1f}  pre {stats.preprocess * 1e3:.1f}  "
                          f"infer {stats.inference * 1e3:.1f}{render}", s * 0.9, (120, 255, 120), "timings"))
        for text, scale, colour, kind in lines:
            text, scale = fit_text(text, scale, W - 2 * MARGIN)
            (tw, th), base = cv2.getTextSize(text, FONT, scale, thickness(scale))
            y += th
            self.boxes.append((kind, draw_text(out, text, (MARGIN, y), scale, colour)))
            self.texts.append((kind, text))
            y += base + line_gap(scale)
        return y

    def draw_help(self, out: np.ndarray, full: bool = True) -> None:
        """Key help, bottom left, for the window only: wrapped to the room the HUD and legend leave
        (`full=False`: just the '? keys' hint). Call after `render` on the same image."""
        H, W = out.shape[:2]
        frame_w = W // 2 if self.view == "side" else W
        s = hud_scale(frame_w, H) * 0.85
        self.boxes = [kb for kb in self.boxes if kb[0] != "help"]  # the window may show one render many times
        taken = [b for _, b in self.boxes]
        top = max([b[3] for k, b in self.boxes if k in ("label", "stats", "timings")] + [0]) + 4
        right = min([b[0] for k, b in self.boxes if k.startswith("legend")] + [W]) - MARGIN
        words = HELP_ITEMS if full else ("? keys",)
        width = right - MARGIN
        for _ in range(4):  # shrink until the wrapped lines fit between the HUD and the bottom
            lines = wrap(words, s, width)
            (_, th), base = cv2.getTextSize("Ag", FONT, s, thickness(s))
            lh = th + base + line_gap(s)
            if H - MARGIN - lh * len(lines) >= top or s <= MIN_SCALE:
                break
            s = max(MIN_SCALE, s * 0.8)
        y = H - MARGIN - base - lh * (len(lines) - 1)
        for line in lines:
            if y - th < top:
                y += lh
                continue  # no room above: drop the line rather than draw over the HUD
            box = text_box(line, (MARGIN, y), s)
            if not any(_overlap(box, t) for t in taken):
                self.boxes.append(("help", draw_text(out, line, (MARGIN, y), s, (230, 230, 230))))
            y += lh

    def _draw_legend(self, out: np.ndarray, top: int = 0) -> None:
        """Which colour is which layer, bottom right: early (magenta) at the top to late (red)."""
        H, W = out.shape[:2]
        n = len(self.scale_names)
        rows = [("LOVI layer colours", None)] + [(f"{name}{' (early)' if i == 0 else ' (late)' if i == n - 1 else ''}", c)
                                                  for i, (name, c) in enumerate(zip(self.scale_names, lovi.scale_colours_bgr(n)))]
        rows.append(("all layers agree", (255, 255, 255)))
        s = max(MIN_SCALE, hud_scale(W // 2 if self.view == "side" else W, H) * 0.85)
        for _ in range(6):  # shrink until it fits under the HUD and inside the width
            (_, th), base = cv2.getTextSize("Ag", FONT, s, thickness(s))
            lh = th + base + line_gap(s)
            sw = th + 2
            width = max(cv2.getTextSize(t, FONT, s, thickness(s))[0][0] + (sw + 6 if c else 0) for t, c in rows) + 2
            height = lh * len(rows)
            if (H - MARGIN - height >= top and width < W / 2) or s <= MIN_SCALE:
                break
            s = max(MIN_SCALE, s * 0.85)
        x = W - MARGIN - width
        y = H - MARGIN - base - lh * (len(rows) - 1)
        for text, colour in rows:
            if y - th < top:
                y += lh
                continue
            tx = x
            if colour is not None:
                cv2.rectangle(out, (x, y - th), (x + sw, y + 1), (0, 0, 0), -1)
                cv2.rectangle(out, (x + 1, y - th + 1), (x + sw - 1, y), colour, -1)
                self.boxes.append(("legend-swatch", (x, y - th, x + sw + 1, y + 2)))
                tx = x + sw + 6
            self.boxes.append(("legend", draw_text(out, text, (tx, y), s, (255, 255, 255))))
            y += lh


MARGIN = 8
MIN_SCALE = 0.32
HELP_ITEMS = ("1-6 view", "v next", "h HUD", "+/- alpha", "s snapshot", "? keys", "q quit")


def hud_scale(frame_w: int, frame_h: int) -> float:
    """Font scale for a frame: 0.64 at 640x480, from 0.38 (320x240) up to 1.2 (1920x1080)."""
    return float(max(0.38, min(1.2, frame_w / 1000, frame_h / 750)))


def thickness(scale: float) -> int:
    return max(1, int(round(scale * 2)))


def line_gap(scale: float) -> int:
    """Pixels between one line's baseline+descent and the next line's cap height: room for the
    shadow and anti-aliasing of both (see `text_box`), so boxes of adjacent lines never touch."""
    return 3 * thickness(scale) + 3


def fit_text(text: str, scale: float, width: int) -> tuple[str, float]:
    """Shrink the scale (down to MIN_SCALE), then shorten the text, until it fits in width pixels."""
    while scale > MIN_SCALE and text_width(text, scale) > width:
        scale = max(MIN_SCALE, scale * 0.92)
    while len(text) > 4 and text_width(text, scale) > width:
        text = text[:-4].rstrip() + "..."
    return text, scale


def text_width(text: str, scale: float) -> int:
    return cv2.getTextSize(text, FONT, scale, thickness(scale))[0][0] + thickness(scale) + 1


def wrap(items, scale: float, width: int) -> list[str]:
    """Join items with two spaces into as few lines as fit in width pixels."""
    lines: list[str] = []
    for item in items:
        if lines and text_width(lines[-1] + "  " + item, scale) <= width:
            lines[-1] += "  " + item
        else:
            lines.append(item)
    return lines


def text_box(text: str, org, scale: float) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), exclusive, of what `put_text` paints: glyphs, descenders, shadow, anti-aliasing."""
    th = thickness(scale)
    (tw, h), base = cv2.getTextSize(text, FONT, scale, th)
    x, y = org
    return (x - th - 1, y - h - th - 1, x + tw + 2 * th + 2, y + base + 2 * th + 1)


def draw_text(img, text, org, scale, colour) -> tuple[int, int, int, int]:
    put_text(img, text, org, scale, colour)
    return text_box(text, org, scale)


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


OPACITY_GAMMA = 1.5


def blend_by_value(frame: np.ndarray, colour: np.ndarray, alpha: float) -> np.ndarray:
    """LOVI over the frame: each pixel's opacity follows the colour's value v,
    min(1, 2 alpha v^1.5), so where no layer fires the frame shows as it is (a constant blend
    would darken it with black) and strong responses cover it; alpha 0.5 -> opacity v^1.5."""
    lut = np.clip(2.0 * alpha * (np.arange(256) / 255.0) ** OPACITY_GAMMA, 0.0, 1.0)
    lut = np.round(lut * 255.0).astype(np.uint8)
    value = cv2.max(cv2.max(colour[..., 0], colour[..., 1]), colour[..., 2])  # uint8 ops: a few ms at 640x480
    a = cv2.cvtColor(cv2.LUT(value, lut), cv2.COLOR_GRAY2BGR)
    return cv2.add(cv2.multiply(colour, a, scale=1 / 255.0), cv2.multiply(frame, 255 - a, scale=1 / 255.0))


def short_scale_name(name: str) -> str:
    """'_blocks.10._act1' -> 'blocks.10', 'layer3' -> 'layer3'."""
    parts = [p.strip("_") for p in name.split(".")]
    if len(parts) > 2 and parts[-1].startswith("act"):
        parts = parts[:-1]
    return ".".join(parts)[:18]


def put_text(img, text, org, scale=0.5, colour=(255, 255, 255)) -> None:
    """Text with a dark drop shadow: readable on any frame, no blending needed. (Same thickness for
    both: OpenCV 5 draws thicker text wider, so a thicker outline would not line up.)"""
    th = thickness(scale)
    d = th
    cv2.putText(img, text, (org[0] + d, org[1] + d), FONT, scale, (0, 0, 0), th, cv2.LINE_AA)
    cv2.putText(img, text, org, FONT, scale, colour, th, cv2.LINE_AA)


def draw_banner(img: np.ndarray, text: str) -> None:
    """A red bar across the middle of the image with white text (in place)."""
    h, w = img.shape[:2]
    s = max(0.6, min(1.6, w / 640))
    (tw, th), _ = cv2.getTextSize(text, FONT, s, 2)
    y0, y1 = h // 2 - th - 12, h // 2 + 12
    cv2.rectangle(img, (0, y0), (w, y1), (0, 0, 170), -1)
    cv2.putText(img, text, ((w - tw) // 2, h // 2), FONT, s, (255, 255, 255), 2, cv2.LINE_AA)
