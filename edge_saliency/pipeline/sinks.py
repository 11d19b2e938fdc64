"""Where rendered frames go: an OpenCV window, an mp4 recording, a JSON-lines log, a contact sheet.

Every sink is closed in the loop's `finally`, so Ctrl-C / SIGTERM leave a playable recording and
a complete log.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np

from edge_saliency.errors import UserError

FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}


def has_display() -> bool:
    """Whether an OpenCV window can open (Qt aborts the process when it cannot, so ask first)."""
    from edge_saliency.runtime.sysdeps import has_display as _has_display

    return _has_display()


class WindowUnavailable(UserError):
    """A window was asked for and this OpenCV cannot open one."""


def _writable(path: str, what: str) -> Path:
    p = Path(path).expanduser()
    if p.is_dir():
        raise UserError(f"{what} {path} is a folder; give a file name")
    if not p.parent.exists():
        raise UserError(f"{what} {path}: folder {p.parent} does not exist")
    if not os.access(p.parent, os.W_OK):
        raise UserError(f"{what} {path}: folder {p.parent} is not writable")
    return p


class Recorder:
    """--record FILE: the rendered frames as a video (mp4v in .mp4/.mov/.m4v/.mkv, MJPG in .avi)."""

    def __init__(self, path: str, fps: float = 30.0):
        self.path = _writable(path, "--record")
        ext = self.path.suffix.lower()
        if ext not in FOURCC:
            raise UserError(f"--record {path}: unknown video type {ext or '(no extension)'}; use one of {', '.join(FOURCC)}")
        self.fourcc = cv2.VideoWriter_fourcc(*FOURCC[ext])
        self.fps = float(fps) if fps and 1 <= fps <= 240 else 30.0
        self.writer: cv2.VideoWriter | None = None
        self.size: tuple[int, int] | None = None
        self.frames = 0
        self.timed = False  # live sources: repeat frames so the file plays at the real pace
        self._t0: float | None = None

    def write(self, img: np.ndarray, t_capture: float | None = None) -> None:
        """Append a frame; with `timed` and a capture time, as many times as keeps the file in real time."""
        repeat = 1
        if self.timed and t_capture is not None:
            if self._t0 is None:
                self._t0 = t_capture
            due = int((t_capture - self._t0) * self.fps) + 1  # frames the file should hold by now
            repeat = max(1, due - self.frames) if self.frames else 1
        h, w = img.shape[:2]
        if self.writer is None:
            self.size = (w - w % 2, h - h % 2)  # codecs want even sides
            self.writer = cv2.VideoWriter(str(self.path), self.fourcc, self.fps, self.size)
            if not self.writer.isOpened():
                self.writer = None
                raise UserError(f"cannot write video {self.path} (no encoder for {self.path.suffix} in this OpenCV)")
        if (w, h) != self.size:  # the view changed size (e.g. to side by side): fit, do not break the file
            img = cv2.resize(img, self.size, interpolation=cv2.INTER_AREA)
        for _ in range(repeat):
            self.writer.write(img)
        self.frames += repeat

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None


class JsonLog:
    """--log-json FILE: one JSON object per processed frame."""

    def __init__(self, path: str):
        self.path = _writable(path, "--log-json")
        self.f = open(self.path, "w", encoding="utf-8", buffering=1)  # line-buffered: a crash loses nothing
        self.lines = 0

    def write(self, record: dict) -> None:
        self.f.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.lines += 1

    def close(self) -> None:
        if not self.f.closed:
            self.f.close()


class ContactSheet:
    """A PNG grid of a few frames spread over the whole run (thumbnails kept at a doubling stride)."""

    def __init__(self, path: str, n: int = 6, cols: int = 3, thumb_width: int = 320):
        self.path = _writable(path, "contact sheet")
        self.n, self.cols, self.thumb_width = n, cols, thumb_width
        self.stride = 1
        self.kept: list[tuple[int, np.ndarray]] = []
        self.count = 0

    def offer(self, frame_id: int, img: np.ndarray) -> None:
        self.count += 1
        if (self.count - 1) % self.stride:
            return
        h, w = img.shape[:2]
        tw = self.thumb_width * (2 if w > 1.6 * h * 1.5 else 1)  # side-by-side frames stay legible
        th = max(1, round(h * tw / w))
        self.kept.append((frame_id, cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA)))
        if len(self.kept) > 2 * self.n:
            self.kept = self.kept[::2]
            self.stride *= 2

    def close(self) -> Path | None:
        if not self.kept:
            return None
        idx = np.linspace(0, len(self.kept) - 1, min(self.n, len(self.kept))).round().astype(int)
        picks = [self.kept[i] for i in sorted(set(idx))]
        th = max(t.shape[0] for _, t in picks)
        tw = max(t.shape[1] for _, t in picks)
        cols = min(self.cols, len(picks))
        rows = -(-len(picks) // cols)
        sheet = np.full((rows * (th + 4) + 4, cols * (tw + 4) + 4, 3), 24, np.uint8)
        for k, (fid, thumb) in enumerate(picks):
            r, c = divmod(k, cols)
            y, x = 4 + r * (th + 4), 4 + c * (tw + 4)
            sheet[y:y + thumb.shape[0], x:x + thumb.shape[1]] = thumb
            cv2.putText(sheet, f"frame {fid}", (x + 6, y + thumb.shape[0] - 8), cv2.FONT_HERSHEY_SIMPLEX,
                        0.45, (255, 255, 255), 1, cv2.LINE_AA)
        if not cv2.imwrite(str(self.path), sheet):
            raise UserError(f"cannot write {self.path}")
        return self.path


class Window:
    """The OpenCV window; `show` returns the key pressed (-1 for none).

    Resizable, without the Qt toolbar, and sized to the image (up to MAX_SIZE) whenever the image
    size changes, e.g. to the side-by-side view (a WINDOW_NORMAL window otherwise opens at Qt's
    default 400x300 and shows a 640x480 frame shrunk)."""

    MAX_SIZE = (1600, 900)

    def __init__(self, title: str = "edge-saliency"):
        self.title = title
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL)
        except cv2.error as exc:  # e.g. the headless build: "The function is not implemented"
            msg = " ".join(str(exc).split())
            raise WindowUnavailable(f"no window: OpenCV cannot open one ({msg[-160:]})") from None
        self.shown = False
        self._size: tuple[int, int] | None = None

    def show(self, img: np.ndarray, wait_ms: int = 1) -> int:
        size = (img.shape[1], img.shape[0])
        if size != self._size:
            k = min(1.0, self.MAX_SIZE[0] / size[0], self.MAX_SIZE[1] / size[1])
            try:
                cv2.resizeWindow(self.title, int(size[0] * k), int(size[1] * k))
            except cv2.error:
                pass
            self._size = size
        cv2.imshow(self.title, img)
        self.shown = True
        return cv2.waitKey(wait_ms)

    @property
    def closed(self) -> bool:
        if not self.shown:
            return False
        try:
            return cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1
        except cv2.error:
            return True

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
        except cv2.error:
            pass
