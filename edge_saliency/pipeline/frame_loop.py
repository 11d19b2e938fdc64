"""The one frame loop of `run` and `serve`: capture -> predict -> sinks, one frame at a time.

    loop = FrameLoop(model, capture, sinks=[Overlay(renderer), recorder, window], max_frames=300)
    summary = loop.run()           # returns when a bound is reached, a sink says stop, or `stop` is set

Each processed frame becomes a `Tick` handed to every sink in order (`Sink.on_frame`); a sink may
add to it (the `Overlay` puts the rendered image there for the recorder and the window after it) or
ask the loop to stop by returning the reason. When no new frame came within the poll, sinks get
`on_idle` (the window keeps answering keys and shows NO SIGNAL). The loop keeps the stage timings
(summed in `Summary.stage_seconds`, smoothed once in `hud` for the HUD), the FPS over the last
second, and `beats` (iterations, frames or not: what a watchdog checks).

`run` configures it with the overlay, window, recorder, JSON log and contact sheet
(pipeline/live.py); the daemon with a sink that publishes the newest snapshot to its readers
(serve/camera_loop.py). A finite source that ends calls `on_source_end`: it may hand back a new
`Capture` (the daemon replays the file), True to keep going without frames, or None to stop.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from edge_saliency.pipeline.capture import Capture, Frame
from edge_saliency.pipeline.records import region_map_for, result_record
from edge_saliency.pipeline.render import HudStats

log = logging.getLogger("edge_saliency")

STAGES = ("capture_wait", "preprocess", "inference", "render", "sinks")
SAMPLES_KEPT = 100_000  # per-frame lag and latency samples a Summary keeps (the newest; a daemon runs for months)


class StopSignal:
    """SIGINT/SIGTERM -> `flag` (an Event the loop checks); a second signal interrupts at once.
    `install()` only takes the signals in the main thread; `restore()` gives them back."""

    def __init__(self):
        self.flag = threading.Event()
        self.reason = ""
        self._old = {}

    def install(self) -> "StopSignal":
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.flag.is_set():
            raise KeyboardInterrupt
        self.reason = signal.Signals(signum).name
        self.flag.set()

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


class FpsMeter:
    """Frames per second over the last `window` seconds of frame times, counted from the loop's
    start: the first frame already has a measured rate (1 / its own time), never 0."""

    def __init__(self, t_start: float, window: float = 1.0):
        self.window = window
        self.times: list[float] = [t_start]

    def rate(self, now: float) -> float:
        """The rate if a frame is done at `now` (call before drawing the HUD of that frame)."""
        times = [t for t in self.times if now - t <= self.window] or self.times[-1:]
        return len(times) / max(now - times[0], 1e-6)  # frames after times[0], this one included

    def tick(self, t: float) -> None:
        self.times = [x for x in self.times if t - x <= self.window] + [t]


@dataclass
class Summary:
    frames: int = 0
    seconds: float = 0.0
    ended: str = ""  # why the loop stopped
    stage_seconds: dict = field(default_factory=lambda: {k: 0.0 for k in STAGES})  # summed per stage
    # the newest SAMPLES_KEPT frames:
    behind_at_pickup: deque = field(default_factory=lambda: deque(maxlen=SAMPLES_KEPT))  # newest captured id - id, when taken
    behind_at_display: deque = field(default_factory=lambda: deque(maxlen=SAMPLES_KEPT))  # the same after the sinks
    latency: deque = field(default_factory=lambda: deque(maxlen=SAMPLES_KEPT))  # capture -> sinks done, seconds

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def mean_ms(self, stage: str) -> float:
        return 1e3 * self.stage_seconds.get(stage, 0.0) / max(1, self.frames)

    @property
    def outside_inference(self) -> float:
        """Share of the loop's wall time not spent in session.run."""
        return 1.0 - self.stage_seconds.get("inference", 0.0) / self.seconds if self.seconds > 0 else 0.0

    @property
    def own_work(self) -> float:
        """Share of the loop's wall time spent on its own work (not session.run, not waiting for frames)."""
        if self.seconds <= 0:
            return 0.0
        return 1.0 - (self.stage_seconds.get("inference", 0.0) + self.stage_seconds.get("capture_wait", 0.0)) / self.seconds


@dataclass
class Tick:
    """One processed frame on its way through the sinks."""

    seq: int  # 1, 2, 3... per processed frame of this loop
    frame: Frame
    result: object  # runtime.model.Result
    capture: Capture
    wait: float  # seconds spent waiting for this frame
    fps: float  # the loop's rate with this frame
    region_map: str
    topk: int
    image: np.ndarray | None = None  # the rendered overlay, once the Overlay sink has run
    view: str | None = None  # the view it was rendered in

    def record(self, t_done: float | None = None, behind: int | None = None) -> dict:
        """The frame's JSON record (records.result_record); t_done defaults to now."""
        t_done = time.perf_counter() if t_done is None else t_done
        behind = self.capture.latest_id - self.frame.id if behind is None else behind
        return result_record(self.frame, self.result, self.region_map, self.topk, t_done=t_done, behind=behind,
                             view=self.view)


class Sink:
    """What a sink can do; every method is optional. `stage` names the Summary stage its time counts in."""

    stage = "sinks"

    def on_frame(self, tick: Tick) -> str | None:
        """Handle a processed frame; return a reason to stop the loop (e.g. 'quit'), else None."""
        return None

    def on_idle(self, loop: "FrameLoop") -> str | None:
        """No new frame within the poll; return a reason to stop, else None."""
        return None

    def ended(self) -> str | None:
        """Checked before each frame: a reason to stop (e.g. 'window closed'), else None."""
        return None


def _ema(old: float, new: float, started: bool) -> float:
    return 0.9 * old + 0.1 * new if started else new


class FrameLoop:
    def __init__(self, model, capture: Capture, sinks=(), max_frames: int | None = None,
                 duration: float | None = None, topk: int = 3, class_index: int | None = None,
                 stop: threading.Event | None = None, poll: float = 0.25, max_fps: float | None = None,
                 on_source_end: Callable[[], Capture | bool | None] | None = None,
                 status_every: float | None = None, say=print):
        self.model, self.capture = model, capture
        self.sinks = list(sinks)
        self.max_frames, self.duration = max_frames, duration
        self.topk, self.class_index = topk, class_index
        self.stop = stop or threading.Event()
        self.poll = poll
        self.max_fps = max_fps  # most frames per second through the model (None: as fast as it goes)
        self.on_source_end = on_source_end
        self.status_every = status_every
        self.say = say
        self.region_map = region_map_for(getattr(model, "outputs", []))
        self.hud = HudStats(provider=getattr(model, "provider", ""))  # the smoothed timings the HUD shows
        self.fps = 0.0
        self.beats = 0  # loop iterations, frames or not
        self.summary = Summary()

    def run(self) -> Summary:
        summary = self.summary
        st = summary.stage_seconds
        last_id, seq, wait, smoothed = 0, 0, 0.0, False
        t_start = time.perf_counter()
        t_last = t_start
        meter = FpsMeter(t_start)
        next_status = t_start + self.status_every if self.status_every else None
        while True:
            self.beats += 1
            summary.ended = self._bound(summary, t_start)
            if summary.ended:
                break
            cap = self.capture
            t0 = time.perf_counter()
            frame = cap.get(last_id, timeout=self.poll)
            wait += time.perf_counter() - t0
            if frame is None:
                if cap.finished(last_id):
                    then = self.on_source_end() if self.on_source_end is not None else None
                    if isinstance(then, Capture):  # its frame ids may start again from 0
                        self.capture, wait, last_id = then, 0.0, 0
                        continue
                    if not then:
                        summary.ended = "end of source"
                        break
                    self.stop.wait(0.1)
                    continue
                summary.ended = next((why for s in self.sinks if (why := s.on_idle(self))), "")
                if summary.ended:
                    break
                continue
            summary.behind_at_pickup.append(cap.latest_id - frame.id)
            last_id = frame.id
            t_frame = time.perf_counter()
            result = self.model.predict(frame.image, class_index=self.class_index, topk=max(self.topk, 1))
            t_result = time.perf_counter()
            seq += 1
            self.fps = meter.rate(t_result)
            hud = self.hud
            hud.fps = self.fps
            hud.capture_wait = _ema(hud.capture_wait, wait, smoothed)
            hud.preprocess = _ema(hud.preprocess, result.timings["preprocess"], smoothed)
            hud.inference = _ema(hud.inference, result.timings["inference"], smoothed)
            tick = Tick(seq, frame, result, cap, wait, self.fps, self.region_map, self.topk)
            spent = dict.fromkeys(STAGES[3:], 0.0)
            stop_why = ""
            t = t_result
            for sink in self.sinks:
                why = sink.on_frame(tick)
                now = time.perf_counter()
                spent[sink.stage] = spent.get(sink.stage, 0.0) + now - t
                t = now
                if why and not stop_why:
                    stop_why = why
            t_done = t
            meter.tick(t_done)
            summary.behind_at_display.append(cap.latest_id - frame.id)
            summary.latency.append(t_done - frame.t_capture)
            summary.frames += 1
            st["capture_wait"] += wait
            st["preprocess"] += result.timings["preprocess"]
            st["inference"] += result.timings["inference"]
            for stage, s in spent.items():
                st[stage] = st.get(stage, 0.0) + s
            hud.render = _ema(hud.render, spent["render"], smoothed)
            smoothed, wait, t_last = True, 0.0, t_done
            if stop_why:
                summary.ended = stop_why
                break
            if next_status is not None and t_done >= next_status:
                next_status = t_done + self.status_every
                self.say(f"frame {frame.id}: {summary.frames / (t_done - t_start):.1f} FPS, {result.label} {result.score:.2f}")
            if self.max_fps:
                pause = 1.0 / self.max_fps - (time.perf_counter() - t_frame)
                if pause > 0:
                    self.stop.wait(pause)
        summary.seconds = (t_last if summary.frames else time.perf_counter()) - t_start
        return summary

    def _bound(self, summary: Summary, t_start: float) -> str:
        """Why the loop must stop before the next frame ('' to go on)."""
        if self.stop.is_set():
            return "stopped"
        if self.duration is not None and time.perf_counter() - t_start >= self.duration:
            return "duration"
        if self.max_frames is not None and summary.frames >= self.max_frames:
            return "max-frames"
        return next((why for s in self.sinks if (why := s.ended())), "")
