"""The daemon's inference loop: capture -> model -> salient region -> the newest `Snapshot`.

One thread takes the newest frame from the latest-frame `Capture`, runs the model on it and
publishes a `Snapshot` (frame, result, JSON record). Everything else (MJPEG encoders, the JSON
API, explain jobs) reads snapshots and never holds up this loop: a consumer that is slow just
sees fewer of them.

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
from edge_saliency.pipeline.history import History
from edge_saliency.pipeline.live import FpsMeter, region_map_for, result_record
from edge_saliency.runtime.model import Result
from edge_saliency.pipeline.render import HudStats
from edge_saliency.pipeline.sources import Source

log = logging.getLogger("edge_saliency")


@dataclass
class Snapshot:
    seq: int  # 1, 2, 3... per processed frame
    frame: Frame
    result: Result
    record: dict  # result_record(...) plus the engine's fields
    t_done: float  # time.perf_counter() when published


class Engine:
    def __init__(self, model, source: Source, realtime: bool = True, stale_after: float | None = None,
                 topk: int = 5, class_index: int | None = None, health_stale: float = 3.0, loop: bool = True,
                 metrics=None, capture_factory=Capture, name: str = "default", max_fps: float | None = None):
        self.model, self.source = model, source
        self.name = name  # the camera's name (metrics label, URLs, MQTT topics)
        self.max_fps = max_fps  # most frames per second through the model (None: as fast as it goes)
        self.listeners: list = []  # fn(name, snapshot) after each frame; must not block (e.g. the MQTT queue)
        self.realtime, self.stale_after = realtime, stale_after
        self.topk, self.class_index = topk, class_index
        self.health_stale = health_stale
        self.loop = loop
        self.metrics = metrics
        self.capture_factory = capture_factory
        self.capture: Capture | None = None
        self.region_map = region_map_for(getattr(model, "outputs", []))
        self.hud = HudStats(provider=getattr(model, "provider", ""))
        self.stop_event = threading.Event()
        self.ended = ""  # why the loop stopped ("" while it runs)
        self.source_ended = False
        self.replays = 0
        self.t_start = time.perf_counter()
        self._cond = threading.Condition()
        self._latest: Snapshot | None = None
        self._thread: threading.Thread | None = None
        self._fps = 0.0
        self.error: str | None = None
        self.history = History()  # per-second FPS, latency and class for GET /api/history
        self.beats = 0  # loop iterations (the watchdog's proof of progress)
        self._reopen_delay = 0.0

    # ------------------------------------------------------------------ lifecycle
    def start(self, needs_open: bool = False) -> "Engine":
        """needs_open: the source could not be opened yet; the capture keeps trying (one camera of several)."""
        self.capture = self.capture_factory(self.source, realtime=self.realtime, stale_after=self.stale_after)
        if self.metrics is not None:
            self.metrics.watch_capture(self.capture)
        if needs_open:
            self.capture.start(needs_open=True)
        else:
            self.capture.start()
        self.t_start = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
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
        return self._fps

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
        if self.source_ended and not self.loop:
            return False, f"{desc} ended (end of file; set loop = true to replay it)"
        if snap is None:
            return False, f"starting: no frame processed yet ({now - self.t_start:.1f} s)"
        age = now - snap.t_done
        if age > self.health_stale:
            return False, f"no frame processed for {age:.1f} s (limit {self.health_stale:g} s)"
        return True, f"frame {snap.record['frame']} processed {age * 1e3:.0f} ms ago"

    # ------------------------------------------------------------------ the loop
    def _run(self) -> None:
        last_id = 0
        seq = 0
        meter = FpsMeter(time.perf_counter())  # frames per second over the last second, from the first frame on
        ema_started = False
        try:
            while not self.stop_event.is_set():
                self.beats += 1
                cap = self.capture
                t0 = time.perf_counter()
                frame = cap.get(last_id, timeout=0.1)
                wait = time.perf_counter() - t0
                if frame is None:
                    if cap.finished(last_id):
                        if not self._restart_finite():
                            self.source_ended = True
                            self.stop_event.wait(0.1)
                    continue
                last_id = frame.id
                t_frame = time.perf_counter()
                result = self.model.predict(frame.image, class_index=self.class_index, topk=self.topk)
                t1 = time.perf_counter()
                record = result_record(frame, result, self.region_map, self.topk, t_done=t1,
                                       behind=cap.latest_id - frame.id)
                t2 = time.perf_counter()
                seq += 1
                self._fps = meter.rate(t2)
                meter.tick(t2)
                record["seq"] = seq
                record["fps"] = round(self._fps, 2)
                record["source"] = self.source.describe()
                hud = self.hud
                hud.fps = self._fps
                hud.capture_wait = wait if not ema_started else 0.9 * hud.capture_wait + 0.1 * wait
                hud.preprocess = result.timings["preprocess"] if not ema_started else 0.9 * hud.preprocess + 0.1 * result.timings["preprocess"]
                hud.inference = result.timings["inference"] if not ema_started else 0.9 * hud.inference + 0.1 * result.timings["inference"]
                ema_started = True
                snap = Snapshot(seq, frame, result, record, t2)
                self.history.add(record.get("latency_ms"), result.label, result.score, t=record.get("t_display"))
                with self._cond:
                    self._latest = snap
                    self._cond.notify_all()
                if self.metrics is not None:
                    self.metrics.observe_frame({"capture_wait": wait, "preprocess": result.timings["preprocess"],
                                                "inference": result.timings["inference"], "postprocess": t2 - t1},
                                               latency=t2 - frame.t_capture)
                for fn in self.listeners:
                    try:
                        fn(self.name, snap)
                    except Exception as exc:  # a listener's bug must not stop inference
                        log.warning("%s: result listener failed: %s", self.name, exc)
                if self.max_fps:
                    pause = 1.0 / self.max_fps - (time.perf_counter() - t_frame)
                    if pause > 0:
                        self.stop_event.wait(pause)
            self.ended = "stopped"
        except Exception as exc:  # logged, and /healthz + the watchdog report it; systemd restarts us
            self.error = f"{type(exc).__name__}: {exc}"
            self.ended = "error"
            log.error("inference loop failed: %s", self.error)
            with self._cond:
                self._cond.notify_all()

    def _restart_finite(self) -> bool:
        """A finite source ended: replay it from the start (loop = true)."""
        if not self.loop or self.stop_event.is_set():
            return False
        old = self.capture
        src = self.source.clone()
        try:
            src.open()
        except Exception as exc:  # retried with backoff; logged once per streak
            if self._reopen_delay == 0:
                log.warning("%s: cannot reopen to replay it (%s); retrying with backoff", self.source.describe(), exc)
            self._reopen_delay = min(max(self._reopen_delay * 2, 0.25), 5.0)
            self.stop_event.wait(self._reopen_delay)
            return False
        self._reopen_delay = 0.0
        old.stop(timeout=0.3)
        self.source = src
        self.replays += 1
        cap = self.capture_factory(src, realtime=self.realtime, stale_after=self.stale_after)
        cap.stats.update(old.stats)  # counters (and frame ids) go on across replays
        self.capture = cap
        if self.metrics is not None:
            self.metrics.watch_capture(cap)
        cap.start()
        log.info("%s ended; replaying it (%d)", self.source.describe(), self.replays)
        return True
