"""Where processed frames go besides the window (pipeline/window.py): the overlay render, an mp4
recording, a JSON-lines log, a contact sheet. Each is a frame_loop.Sink.

Every sink is closed in `run`'s `finally`, so Ctrl-C / SIGTERM leave a playable recording and
a complete log.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np

from edge_saliency.errors import UserError
from edge_saliency.pipeline.frame_loop import Sink, Tick

FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}


class Overlay(Sink):
    """Renders each frame (renderer.render: the view, the map, the HUD) into `tick.image` for the
    sinks after it."""

    stage = "render"

    def __init__(self, renderer, hud):
        self.renderer, self.hud = renderer, hud  # hud: the loop's smoothed HudStats

    def on_frame(self, tick: Tick) -> None:
        tick.image = self.renderer.render(tick.frame.image, tick.result, self.hud)
        tick.view = self.renderer.view


def _writable(path: str, what: str) -> Path:
    p = Path(path).expanduser()
    if p.is_dir():
        raise UserError(f"{what} {path} is a folder; give a file name")
    if not p.parent.exists():
        raise UserError(f"{what} {path}: folder {p.parent} does not exist")
    if not os.access(p.parent, os.W_OK):
        raise UserError(f"{what} {path}: folder {p.parent} is not writable")
    return p


class Recorder(Sink):
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

    def on_frame(self, tick: Tick) -> None:
        self.write(tick.image, tick.frame.t_capture)

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


class JsonLog(Sink):
    """--log-json FILE: one JSON object per processed frame."""

    def __init__(self, path: str):
        self.path = _writable(path, "--log-json")
        self.f = open(self.path, "w", encoding="utf-8", buffering=1)  # line-buffered: a crash loses nothing
        self.lines = 0

    def on_frame(self, tick: Tick) -> None:
        self.write(tick.record())

    def write(self, record: dict) -> None:
        self.f.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.lines += 1

    def close(self) -> None:
        if not self.f.closed:
            self.f.close()


class ContactSheet(Sink):
    """A PNG grid of a few frames spread over the whole run (thumbnails kept at a doubling stride)."""

    def __init__(self, path: str, n: int = 6, cols: int = 3, thumb_width: int = 320):
        self.path = _writable(path, "contact sheet")
        self.n, self.cols, self.thumb_width = n, cols, thumb_width
        self.stride = 1
        self.kept: list[tuple[int, np.ndarray]] = []
        self.count = 0

    def on_frame(self, tick: Tick) -> None:
        self.offer(tick.frame.id, tick.image)

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
