"""The one frame loop (pipeline/frame_loop.py) that `run` and `serve` configure: its order of sinks,
its bounds and stop reasons, its stage accounting, the end of a source, with a stand-in model so
the loop's own behaviour is what is tested (the real model runs through it in test_live/test_serve)."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from edge_saliency.pipeline.capture import Capture
from edge_saliency.pipeline.frame_loop import FrameLoop, Sink
from edge_saliency.pipeline.sources import EndOfStream, SyntheticSource, read_stamp
from edge_saliency.runtime.model import Result


class StampModel:
    """Predicts the stamped frame number as the class; a 4x4 map peaked at the top left."""

    outputs = ["smoe"]
    provider = "cpu"

    def __init__(self):
        self.calls = 0

    def predict(self, image, class_index=None, topk=3):
        self.calls += 1
        n = read_stamp(image)
        m = np.zeros((4, 4), np.float32)
        m[0, 0] = 1.0
        return Result(class_index=n, label=f"frame {n}", score=0.5, topk=[(f"frame {n}", 0.5)],
                      logits=np.zeros(3, np.float32), smoe=m, timings={"preprocess": 0.001, "inference": 0.002})


class Finite(SyntheticSource):
    """A synthetic source with an end (a file, for the loop); every frame handed over (--fast)."""

    live = False

    def __init__(self, frames: int):
        super().__init__("synthetic", fps=1000.0, size=(64, 48))
        self.frames = frames

    def read(self):
        if self.index >= self.frames:
            raise EndOfStream
        return super().read()


def capture_of(frames: int) -> Capture:
    src = Finite(frames)
    src.open()
    return Capture(src, realtime=False).start()


class Collect(Sink):
    def __init__(self, name, log, stop_at=None):
        self.name, self.log, self.stop_at = name, log, stop_at

    def on_frame(self, tick):
        self.log.append((self.name, tick.seq, tick.result.class_index))
        return "enough" if self.stop_at is not None and tick.seq >= self.stop_at else None


def test_every_frame_of_a_file_goes_through_every_sink_in_order_and_the_loop_says_why_it_ended():
    log = []
    cap = capture_of(7)
    try:
        summary = FrameLoop(StampModel(), cap, [Collect("a", log), Collect("b", log)], poll=0.05).run()
    finally:
        cap.stop()
    assert summary.ended == "end of source" and summary.frames == 7
    assert log == [(name, seq, seq - 1) for seq in range(1, 8) for name in ("a", "b")]  # frames 0..6, a before b
    assert summary.stage_seconds["preprocess"] == pytest.approx(0.007) and summary.stage_seconds["inference"] == pytest.approx(0.014)
    assert len(summary.latency) == len(summary.behind_at_pickup) == 7


@pytest.mark.parametrize("bound, ended", [({"max_frames": 3}, "max-frames"), ({"sink_stop": 2}, "enough")])
def test_bounds_and_a_sink_stop_the_loop(bound, ended):
    log = []
    cap = capture_of(50)
    try:
        loop = FrameLoop(StampModel(), cap, [Collect("a", log, stop_at=bound.get("sink_stop"))],
                         max_frames=bound.get("max_frames"), poll=0.05)
        summary = loop.run()
    finally:
        cap.stop()
    assert summary.ended == ended
    assert summary.frames == bound.get("max_frames", bound.get("sink_stop"))


def test_the_stop_flag_ends_the_loop_and_a_sink_can_end_it_before_a_frame():
    stop = threading.Event()
    stop.set()
    cap = capture_of(50)
    try:
        assert FrameLoop(StampModel(), cap, [], stop=stop).run().ended == "stopped"

        class Closed(Sink):
            def ended(self):
                return "window closed"
        s = FrameLoop(StampModel(), cap, [Closed()]).run()
        assert s.ended == "window closed" and s.frames == 0
    finally:
        cap.stop()


def test_a_finite_source_is_handed_over_to_a_new_capture_when_on_source_end_gives_one():
    log = []
    caps = [capture_of(4)]

    def again():
        if len(caps) == 3:
            return None  # the third end stops the loop
        caps.append(capture_of(4))
        return caps[-1]

    loop = FrameLoop(StampModel(), caps[0], [Collect("a", log)], poll=0.05, on_source_end=again)
    try:
        summary = loop.run()
    finally:
        for c in caps:
            c.stop()
    assert summary.ended == "end of source" and summary.frames == 12  # 3 plays of 4 frames
    assert [cls for _, _, cls in log] == [0, 1, 2, 3] * 3 and [seq for _, seq, _ in log] == list(range(1, 13))


def test_the_record_of_a_tick_carries_the_region_from_the_map_and_the_timings():
    got = []

    class Rec(Sink):
        def on_frame(self, tick):
            got.append(tick.record())

    cap = capture_of(2)
    try:
        FrameLoop(StampModel(), cap, [Rec()], poll=0.05).run()
    finally:
        cap.stop()
    rec = got[0]
    assert rec["frame"] == 1 and rec["class"] == 0 and rec["map"] == "smoe"  # capture ids count from 1, stamps from 0
    x0, y0, x1, y1 = rec["box"]
    assert x0 == 0 and y0 == 0 and x1 <= 32 and y1 <= 24  # the peak cell of the 4x4 map: the top-left quarter
    assert rec["timings_ms"] == {"preprocess": 1.0, "inference": 2.0}
    assert "view" not in rec  # no Overlay ran


STOP_SIGNAL = """
import os, signal
from edge_saliency.pipeline.frame_loop import StopSignal
before = signal.getsignal(signal.SIGTERM)
stop = StopSignal().install()
os.kill(os.getpid(), signal.SIGTERM)
print(stop.flag.wait(2), stop.reason)
stop.restore()
print(signal.getsignal(signal.SIGTERM) is before)
"""


def test_stop_signal_sets_the_flag_on_sigterm_and_restores_the_handler():
    """In a process of its own: a real SIGTERM, and no other test's threads or signal state
    (after an in-process `bench` with OpenVINO, the kernel cannot deliver a signal to the main
    thread's Python handler here: SIGSEGV in kill(); the commands themselves stop cleanly)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    p = subprocess.run([sys.executable, "-c", STOP_SIGNAL], capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0 and p.stdout.split() == ["True", "SIGTERM", "True"], (p.stdout, p.stderr)
