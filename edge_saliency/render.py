"""Frame + result -> the image a user sees: overlay views, LOVI legend, HUD, "no signal" banner.

Views:  heatmap (SMOE) | recipro (Recipro-CAM) | fastcam (SMOE x Recipro-CAM) | lovi (LOVI colours
of the per-scale SMOE maps, with a legend) | side (frame | map) | raw (the frame alone).

Cheap by design: each map is normalised at the graph's resolution, upsampled once to the frame
size (cv2.resize), coloured with an OpenCV colour map (a LUT) and blended with cv2.addWeighted.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from edge_saliency import contract
from edge_saliency.methods import lovi

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
HELP_LINE = "keys: 1-6 view  v next  h HUD  +/- alpha  s snapshot  q quit"

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
    extra: dict = field(default_factory=dict)


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
        self._legend_cache: dict = {}

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
            return cv2.resize(lovi.lovi_bgr_u8(result.smoe_scales), size, interpolation=cv2.INTER_LINEAR)
        m = self.map_of(result, view)
        if m is None:
            return None
        big = cv2.resize(normalise_for_display(m), size, interpolation=cv2.INTER_LINEAR)
        return cv2.applyColorMap(big, self.colormap)

    # ------------------------------------------------------------------ the image
    def render(self, frame: np.ndarray, result, stats: HudStats | None = None, banner: str | None = None) -> np.ndarray:
        h, w = frame.shape[:2]
        view = self.view
        if view == "raw":
            out = frame.copy()
        elif view == "side":
            colour = self.coloured(result, self.side_view, (w, h))
            out = np.hstack([frame, colour if colour is not None else frame])
        else:
            colour = self.coloured(result, view, (w, h))
            out = frame.copy() if colour is None else cv2.addWeighted(frame, 1.0 - self.alpha, colour, self.alpha, 0.0)
        shown = self.side_view if view == "side" else view
        if shown == "lovi" and view != "raw" and self.legend and self.scale_names:
            self._draw_legend(out)
        if self.hud:
            self.draw_hud(out, result, stats, w)
        if banner:
            draw_banner(out, banner)
        return out

    def draw_hud(self, out: np.ndarray, result, stats: HudStats | None, frame_w: int) -> None:
        s = max(0.4, min(1.2, frame_w / 1000))
        lh = int(26 * s) + 4
        y = lh
        for i, (label, score) in enumerate(result.topk[: self.topk]):
            put_text(out, f"{i + 1}. {label[:32]}  {score * 100:.1f}%", (8, y), s * (1.15 if i == 0 else 1.0),
                     (255, 255, 255) if i == 0 else (220, 220, 220))
            y += lh
        if stats is not None:
            put_text(out, f"{stats.fps:5.1f} FPS  {stats.provider or self.provider}  view {self.view}"
                          f"{'' if self.view in ('raw', 'side') else f'  alpha {self.alpha:.2f}'}",
                     (8, y), s, (120, 255, 120))
            y += lh
            put_text(out, f"ms: capture wait {stats.capture_wait * 1e3:4.1f}  preprocess {stats.preprocess * 1e3:4.1f}  "
                          f"inference {stats.inference * 1e3:5.1f}  render {stats.render * 1e3:4.1f}",
                     (8, y), s * 0.9, (120, 255, 120))
        put_text(out, HELP_LINE, (8, out.shape[0] - 8), s * 0.85, (200, 200, 200))

    def _draw_legend(self, out: np.ndarray) -> None:
        n = len(self.scale_names)
        s = max(0.35, min(1.0, out.shape[1] / 1400))
        lh = int(22 * s) + 4
        box = int(14 * s) + 4
        widest = max([cv2.getTextSize(t, FONT, s, 1)[0][0] for t in self.scale_names] + [0])
        title_w = cv2.getTextSize("LOVI: early -> late", FONT, s, 1)[0][0]
        x = out.shape[1] - max(widest + box + 6, title_w) - 10
        y0 = out.shape[0] - 20 - lh * n - int(20 * s)
        colours = lovi.scale_colours_bgr(n)
        put_text(out, "LOVI: early -> late", (x, y0), s, (255, 255, 255))
        for i, (name, colour) in enumerate(zip(self.scale_names, colours)):
            y = y0 + (i + 1) * lh
            cv2.rectangle(out, (x, y - box + 2), (x + box, y + 2), colour, -1)
            put_text(out, name, (x + box + 6, y), s, (255, 255, 255))
        y = y0 + (n + 1) * lh
        cv2.rectangle(out, (x, y - box + 2), (x + box, y + 2), (255, 255, 255), -1)
        put_text(out, "all agree", (x + box + 6, y), s, (255, 255, 255))


def short_scale_name(name: str) -> str:
    """'_blocks.10._act1' -> 'blocks.10', 'layer3' -> 'layer3'."""
    parts = [p.strip("_") for p in name.split(".")]
    if len(parts) > 2 and parts[-1].startswith("act"):
        parts = parts[:-1]
    return ".".join(parts)[:18]


def put_text(img, text, org, scale=0.5, colour=(255, 255, 255)) -> None:
    """Text with a dark drop shadow: readable on any frame, no blending needed. (Same thickness for
    both: OpenCV 5 draws thicker text wider, so a thicker outline would not line up.)"""
    th = max(1, int(round(scale * 2)))
    d = max(1, th)
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
