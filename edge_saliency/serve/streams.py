"""MJPEG streams: one encoder per view, shared by all of that view's viewers.

An encoder thread starts with the first viewer of a view and stops a few seconds after the last
one leaves. It renders and JPEG-encodes each new snapshot once (at most `max_fps` a second) and
keeps only the newest JPEG. Each viewer's own HTTP thread sends the newest JPEG it has not sent
yet, so a slow viewer skips frames; neither it nor the encoder ever holds up inference.
"""
from __future__ import annotations

import logging
import threading
import time

import cv2

from edge_saliency.pipeline.render import Renderer

log = logging.getLogger("edge_saliency")

BOUNDARY = "edgesaliencyframe"
IDLE_STOP = 3.0  # seconds an encoder lingers after its last viewer left


class Encoded:
    __slots__ = ("seq", "jpeg", "frame_id")

    def __init__(self, seq: int, jpeg: bytes, frame_id: int):
        self.seq, self.jpeg, self.frame_id = seq, jpeg, frame_id


class ViewEncoder:
    def __init__(self, view: str, loop, renderer: Renderer, quality: int = 80, max_fps: float = 15.0, metrics=None):
        self.view = view
        self.loop = loop
        self.renderer = renderer
        self.quality = quality
        self.min_period = 1.0 / max_fps if max_fps > 0 else 0.0
        self.metrics = metrics
        self.viewers = 0
        self._cond = threading.Condition()
        self._latest: Encoded | None = None
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        self._idle_since: float | None = None

    def attach(self) -> None:
        with self._cond:
            self.viewers += 1
            self._idle_since = None
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=f"encoder-{self.view}", daemon=True)
                self._thread.start()
        if self.metrics is not None:
            self.metrics.viewers.labels(self.view).set(self.viewers)

    def detach(self) -> None:
        with self._cond:
            self.viewers -= 1
            if self.viewers == 0:
                self._idle_since = time.perf_counter()
        if self.metrics is not None:
            self.metrics.viewers.labels(self.view).set(self.viewers)

    def close(self) -> None:
        self._closed.set()
        with self._cond:
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def wait_newer(self, after_seq: int, timeout: float) -> Encoded | None:
        deadline = time.perf_counter() + timeout
        with self._cond:
            while self._latest is None or self._latest.seq <= after_seq:
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or self._closed.is_set():
                    return None
                self._cond.wait(remaining)
            return self._latest

    def encode(self, snap) -> bytes:
        """Render one snapshot in this view and JPEG-encode it."""
        t0 = time.perf_counter()
        img = self.renderer.render(snap.frame.image, snap.result, self.loop.hud)
        t1 = time.perf_counter()
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        t2 = time.perf_counter()
        if self.metrics is not None:
            self.metrics.observe_stage("render", t1 - t0)
            self.metrics.observe_stage("encode", t2 - t1)
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        return buf.tobytes()

    def _run(self) -> None:
        last = 0
        t_last = 0.0
        while not self._closed.is_set():
            with self._cond:
                if self.viewers == 0 and self._idle_since is not None and time.perf_counter() - self._idle_since > IDLE_STOP:
                    self._thread = None
                    return
            snap = self.loop.wait_newer(last, timeout=0.25)
            if snap is None:
                continue
            wait = self.min_period - (time.perf_counter() - t_last)
            if wait > 0:
                if self._closed.wait(wait):
                    break
                snap = self.loop.latest or snap  # the newest one after the pause
            last = snap.seq
            t_last = time.perf_counter()
            try:
                jpeg = self.encode(snap)
            except Exception as exc:  # logged; the stream goes on with the next frame
                log.warning("%s stream: cannot render frame %d: %s", self.view, snap.frame.id, exc)
                continue
            with self._cond:
                self._latest = Encoded(snap.seq, jpeg, snap.frame.id)
                self._cond.notify_all()


class Streams:
    """The encoders, one per view, made on first use."""

    def __init__(self, loop, make_renderer, views, quality: int, max_fps: float, max_viewers: int, metrics=None):
        self.loop = loop
        self.make_renderer = make_renderer  # view -> Renderer
        self.views = list(views)
        self.quality, self.max_fps, self.max_viewers = quality, max_fps, max_viewers
        self.metrics = metrics
        self._encoders: dict[str, ViewEncoder] = {}
        self._lock = threading.Lock()
        self.closed = threading.Event()
        self.frames = FrameCache(self, make_renderer, quality, max_fps, metrics)  # GET /api/frame.jpg

    @property
    def viewers(self) -> int:
        return sum(e.viewers for e in self._encoders.values())

    def encoder(self, view: str) -> ViewEncoder:
        with self._lock:
            enc = self._encoders.get(view)
            if enc is None:
                enc = ViewEncoder(view, self.loop, self.make_renderer(view), self.quality, self.max_fps, self.metrics)
                self._encoders[view] = enc
            return enc

    def try_attach(self, view: str) -> ViewEncoder | None:
        """The view's encoder with one more viewer, or None when max_viewers are connected (the count
        and the attach under one lock: concurrent viewers cannot overshoot the cap)."""
        enc = self.encoder(view)
        with self._lock:
            if self.closed.is_set() or sum(e.viewers for e in self._encoders.values()) >= self.max_viewers:
                return None
            enc.attach()
        return enc

    def newest_jpeg(self, view: str):
        """The newest JPEG a running encoder of `view` made (Encoded), or None."""
        enc = self._encoders.get(view)
        if enc is None or enc.closed or enc.viewers == 0:
            return None
        return enc._latest

    def close(self) -> None:
        self.closed.set()
        with self._lock:
            for enc in self._encoders.values():
                enc.close()


class FrameCache:
    """GET /api/frame.jpg: one render + JPEG per frame and view, however many clients ask, and no
    more often than the streams' `max_fps`; a running MJPEG encoder's JPEG of the same frame is
    reused as is."""

    def __init__(self, streams: Streams, make_renderer, quality: int, max_fps: float, metrics=None):
        self.streams = streams
        self.make_renderer = make_renderer
        self.quality = quality
        self.min_period = 1.0 / max_fps if max_fps > 0 else 0.0
        self.metrics = metrics
        self._entries: dict[str, tuple[int, bytes, float]] = {}  # view -> (frame id, jpeg, made at)
        self._renderers: dict[str, Renderer] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self.renders = 0

    def _view_lock(self, view: str) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(view, threading.Lock())

    def get(self, view: str, snap) -> tuple[int, bytes]:
        """(frame id, JPEG) of the newest frame in `view` (at most min_period old)."""
        with self._view_lock(view):
            now = time.perf_counter()
            e = self._entries.get(view)
            if e is not None and (e[0] >= snap.frame.id or now - e[2] < self.min_period):
                return e[0], e[1]
            enc = self.streams.newest_jpeg(view)
            if enc is not None and enc.frame_id >= snap.frame.id:
                self._entries[view] = (enc.frame_id, enc.jpeg, now)
                return enc.frame_id, enc.jpeg
            if view == "raw":
                img = snap.frame.image
            else:
                r = self._renderers.get(view)
                if r is None:
                    r = self._renderers[view] = self.make_renderer(view)
                img = r.render(snap.frame.image, snap.result, self.streams.loop.hud)
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            if not ok:
                raise RuntimeError("JPEG encoding failed")
            self.renders += 1
            self._entries[view] = (snap.frame.id, buf.tobytes(), now)
            return snap.frame.id, self._entries[view][1]
