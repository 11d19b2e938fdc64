"""One camera of the daemon: the shared FrameLoop (pipeline/frame_loop.py) in a thread, with a sink
that publishes each frame as the newest `Snapshot`.

Everything else (MJPEG encoders, the JSON API, explain jobs, MQTT) reads snapshots and never holds
up this loop: a consumer that is slow just sees fewer of them.

Health: fresh while a frame was processed within `health_stale` seconds and the capture reports
a signal; otherwise the reason (starting, no signal and for how long, source ended, stalled).
A finite source (video file, images) is replayed from the start when it ends if `loop` is set.
A source that is not open at start (`start(needs_open=True)`: a configured camera that is missing)
is opened by the capture with backoff, and health says so meanwhile. `beats` counts loop iterations,
frames or not: the systemd watchdog is fed by it (and by HTTP liveness), not by the camera.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from edge_saliency.pipeline.capture import Capture, Frame
from edge_saliency.pipeline.frame_loop import FrameLoop, Sink, Tick
from edge_saliency.pipeline.history import History
from edge_saliency.pipeline.sources import Source
from edge_saliency.runtime.model import Result

log = logging.getLogger("edge_saliency")


@dataclass
class Snapshot:
    seq: int  # 1, 2, 3... per processed frame
    frame: Frame
    result: Result
    record: dict  # the frame's record (records.result_record) plus seq, fps and source
    t_done: float  # time.perf_counter() when published


class _Publish(Sink):
    """The camera loop's sink: the newest snapshot for readers, the history, metrics, listeners."""

    def __init__(self, cam: "CameraLoop"):
        self.cam = cam

    def on_frame(self, tick: Tick) -> None:
        cam = self.cam
        t1 = time.perf_counter()
        record = tick.record(t_done=t1)
        t2 = time.perf_counter()
        record["seq"] = tick.seq
        record["fps"] = round(tick.fps, 2)
        record["source"] = cam.source.describe()
        snap = Snapshot(tick.seq, tick.frame, tick.result, record, t2)
        cam.history.add(record.get("latency_ms"), tick.result.label, tick.result.score, t=record.get("t_display"))
        with cam._cond:
            cam._latest = snap
            cam._cond.notify_all()
        if cam.metrics is not None:
            cam.metrics.observe_frame({"capture_wait": tick.wait, "preprocess": tick.result.timings["preprocess"],
                                       "inference": tick.result.timings["inference"], "postprocess": t2 - t1},
                                      latency=t2 - tick.frame.t_capture)
        for fn in cam.listeners:
            try:
                fn(cam.name, snap)
            except Exception as exc:  # a listener's bug must not stop inference
                log.warning("%s: result listener failed: %s", cam.name, exc)


class CameraLoop:
    """A camera's frame loop in its own thread, its newest snapshot, and its health."""

    def __init__(self, model, source: Source, realtime: bool = True, stale_after: float | None = None,
                 topk: int = 5, class_index: int | None = None, health_stale: float = 3.0, replay: bool = True,
                 metrics=None, capture_factory=Capture, name: str = "default", max_fps: float | None = None):
        self.model, self.source = model, source
        self.name = name  # the camera's name (metrics label, URLs, MQTT topics)
        self.listeners: list = []  # fn(name, snapshot) after each frame; must not block (e.g. the MQTT queue)
        self.realtime, self.stale_after = realtime, stale_after
        self.health_stale = health_stale
        self.replay = replay  # play a finite source again from the start when it ends
        self.metrics = metrics
        self.capture_factory = capture_factory
        self.stop_event = threading.Event()
        self.frames = FrameLoop(model, None, sinks=[_Publish(self)], topk=topk, class_index=class_index,
                                stop=self.stop_event, poll=0.1, max_fps=max_fps, on_source_end=self._source_ended)
        self.ended = ""  # why the loop stopped ("" while it runs)
        self.source_ended = False
        self.replays = 0
        self.t_start = time.perf_counter()
        self._cond = threading.Condition()
        self._latest: Snapshot | None = None
        self._thread: threading.Thread | None = None
        self.error: str | None = None
        self.history = History()  # per-second FPS, latency and class for GET /api/history
        self._reopen_delay = 0.0

    # what the streams, the API and the watchdog read from the frame loop
    capture = property(lambda self: self.frames.capture)
    hud = property(lambda self: self.frames.hud)  # the smoothed timings drawn on streamed frames
    beats = property(lambda self: self.frames.beats)  # loop iterations (the watchdog's proof of progress)
    region_map = property(lambda self: self.frames.region_map)

    # ------------------------------------------------------------------ lifecycle
    def start(self, needs_open: bool = False) -> "CameraLoop":
        """needs_open: the source could not be opened yet; the capture keeps trying (one camera of several)."""
        cap = self.capture_factory(self.source, realtime=self.realtime, stale_after=self.stale_after)
        self.frames.capture = cap
        if self.metrics is not None:
            self.metrics.watch_capture(cap)
        if needs_open:
            cap.start(needs_open=True)
        else:
            cap.start()
        self.t_start = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="camera-loop", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 1.5) -> None:
        """Finish the frame in hand, then stop the loop and the capture."""
        self.stop_event.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.capture is not None:
            self.capture.stop(timeout=0.3)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ readers
    @property
    def latest(self) -> Snapshot | None:
        return self._latest

    def wait_newer(self, after_seq: int, timeout: float) -> Snapshot | None:
        """The newest snapshot with seq > after_seq, or None after timeout (or when stopping)."""
        deadline = time.perf_counter() + timeout
        with self._cond:
            while self._latest is None or self._latest.seq <= after_seq:
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or self.stop_event.is_set():
                    return None
                self._cond.wait(remaining)
            return self._latest

    @property
    def fps(self) -> float:
        snap = self._latest
        if snap is None or time.perf_counter() - snap.t_done > self.health_stale:
            return 0.0
        return self.frames.fps

    def health(self) -> tuple[bool, str]:
        """(fresh, reason): what /healthz answers and what the watchdog is fed by."""
        now = time.perf_counter()
        cap = self.capture
        snap = self._latest
        desc = self.source.describe() if self.source is not None else "source"
        if self.error:
            return False, f"inference failed: {self.error}"
        if self.ended and self.ended != "running":
            return False, f"stopped: {self.ended}"
        if cap is not None and cap.no_signal:
            return False, (f"no frames from {desc} for {cap.signal_lost_for:.1f} s; reconnecting "
                           f"({cap.stats['reconnects']} reconnects so far)")
        if self.source_ended and not self.replay:
            return False, f"{desc} ended (end of file; set loop = true to replay it)"
        if snap is None:
            return False, f"starting: no frame processed yet ({now - self.t_start:.1f} s)"
        age = now - snap.t_done
        if age > self.health_stale:
            return False, f"no frame processed for {age:.1f} s (limit {self.health_stale:g} s)"
        return True, f"frame {snap.record['frame']} processed {age * 1e3:.0f} ms ago"

    # ------------------------------------------------------------------ the loop
    def _run(self) -> None:
        try:
            self.frames.run()
            self.ended = "stopped"
        except Exception as exc:  # logged, and /healthz + the watchdog report it; systemd restarts us
            self.error = f"{type(exc).__name__}: {exc}"
            self.ended = "error"
            log.error("inference loop failed: %s", self.error)
            with self._cond:
                self._cond.notify_all()

    def _source_ended(self) -> Capture | bool:
        """The frame loop's on_source_end: the capture replaying the file, or True (stay up, unhealthy)."""
        cap = self._restart_finite()
        if cap is None:
            self.source_ended = True
            return True
        return cap

    def _restart_finite(self) -> Capture | None:
        """A finite source ended: replay it from the start (loop = true); None if not (now)."""
        if not self.replay or self.stop_event.is_set():
            return None
        old = self.capture
        src = self.source.clone()
        try:
            src.open()
        except Exception as exc:  # retried with backoff; logged once per streak
            if self._reopen_delay == 0:
                log.warning("%s: cannot reopen to replay it (%s); retrying with backoff", self.source.describe(), exc)
            self._reopen_delay = min(max(self._reopen_delay * 2, 0.25), 5.0)
            self.stop_event.wait(self._reopen_delay)
            return None
        self._reopen_delay = 0.0
        old.stop(timeout=0.3)
        self.source = src
        self.replays += 1
        cap = self.capture_factory(src, realtime=self.realtime, stale_after=self.stale_after)
        cap.stats.update(old.stats)  # counters (and frame ids) go on across replays
        self.frames.capture = cap
        if self.metrics is not None:
            self.metrics.watch_capture(cap)
        cap.start()
        log.info("%s ended; replaying it (%d)", self.source.describe(), self.replays)
        return cap
