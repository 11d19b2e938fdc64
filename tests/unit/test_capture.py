"""Latest-frame capture: hand-off, latest-frame semantics, garbage frames, faults and recovery."""
from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

from edge_saliency.pipeline.capture import Capture, frame_problem
from edge_saliency.pipeline.sources import EndOfStream, Source, SourceError, SyntheticSource, read_stamp, stamp
from waiting import PATIENCE_S, wait_for


def stamped(i, shape=(40, 600, 3)):
    img = np.zeros(shape, np.uint8)
    stamp(img, i)
    return img


class ScriptedSource(Source):
    """Plays a list: arrays (stamped), None (failed read), anything else as a garbage frame; then ends."""

    kind = "scripted"
    finite = True
    paced = True

    def __init__(self, items, fps=200.0):
        super().__init__("scripted")
        self.items = list(items)
        self.fps = fps

    def read(self):
        if not self.items:
            raise EndOfStream
        return self.items.pop(0)


class Device:
    """A camera shared by a source and its clones: it can die (reads fail or block) and come back."""

    def __init__(self):
        self.alive = True
        self.mode = "fail"
        self.unblock = threading.Event()
        self.count = 0
        self.opens = 0


class FlakyCamera(Source):
    kind = "flaky"
    live = True
    paced = True  # generated: the capture paces it to fps

    def __init__(self, device, fps=100.0):
        super().__init__("flaky")
        self.device = device
        self.fps = fps

    def clone(self):
        return FlakyCamera(self.device, self.fps)

    def open(self):
        if not self.device.alive:
            raise SourceError("flaky camera is gone")
        self.device.opens += 1

    def read(self):
        d = self.device
        if not d.alive:
            if d.mode == "block":
                d.unblock.wait(10)
            return None
        d.count += 1
        return stamped(d.count)


def collect(cap, n=None, until=None, timeout=PATIENCE_S, delay=0.0, after=0):
    """The frames handed off (frame, newest id when taken) until n came, `until` says so, or the source
    ended. `timeout` only guards against a hang (see PATIENCE_S): the tests count frames, not seconds."""
    got, last = [], after
    t_end = time.perf_counter() + timeout
    while time.perf_counter() < t_end and (n is None or len(got) < n):
        f = cap.get(last, timeout=0.05)
        if f is None:
            if cap.finished(last):
                break
            continue
        got.append((f, cap.latest_id))
        last = f.id
        if until and until(f):
            break
        time.sleep(delay)
    return got


def test_frame_problem_names_each_kind_of_garbage():
    assert frame_problem(np.zeros((10, 10, 3), np.uint8)) is None
    assert "grayscale" in frame_problem(np.zeros((10, 10), np.uint8))
    assert "grayscale" in frame_problem(np.zeros((10, 10, 1), np.uint8))
    assert "16-bit" in frame_problem(np.zeros((10, 10, 3), np.uint16))
    assert "wrong shape" in frame_problem(np.zeros((10, 10, 4), np.uint8))
    assert "not an image" in frame_problem("frame")
    assert "tiny" in frame_problem(np.zeros((2, 2, 3), np.uint8))


def test_fast_mode_hands_off_every_frame_once_in_order():
    src = ScriptedSource([stamped(i) for i in range(40)])
    with Capture(src, realtime=False) as cap:
        got = collect(cap, delay=0.002)
        assert cap.finished(got[-1][0].id)
    assert [f.id for f, _ in got] == list(range(1, 41))
    assert [read_stamp(f.image) for f, _ in got] == list(range(40))
    assert cap.stats["dropped"] == 0


def test_garbage_frames_are_skipped_with_one_log_line_per_kind(caplog):
    items = [stamped(0), None, np.zeros((40, 600), np.uint8), stamped(1), np.zeros((40, 600, 3), np.uint16),
             np.zeros((40, 600, 4), np.uint8), stamped(2), np.zeros((40, 600, 3), np.uint16), "junk", stamped(3)]
    caplog.set_level(logging.WARNING, logger="edge_saliency")
    with Capture(ScriptedSource(items), realtime=False) as cap:
        got = collect(cap)
    assert [read_stamp(f.image) for f, _ in got] == [0, 1, 2, 3]
    assert [f.id for f, _ in got] == [1, 2, 3, 4]
    assert cap.stats["skipped"] == 5 and cap.stats["failed_reads"] == 1
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("16-bit" in m for m in msgs) == 1  # the second 16-bit frame is counted, not logged
    assert sum("grayscale" in m for m in msgs) == 1
    assert sum("wrong shape" in m for m in msgs) == 1
    assert sum("read failed" in m for m in msgs) == 1


def test_realtime_paces_a_file_to_its_fps():
    fps = 50.0
    src = ScriptedSource([stamped(i) for i in range(15)], fps=fps)
    with Capture(src, realtime=True) as cap:
        got = collect(cap)
    times = [f.t_capture for f, _ in got]
    assert len(got) >= 2
    # frames are never delivered faster than the file's own rate (a lower bound: load only slows it)
    assert times[-1] - times[0] >= (read_stamp(got[-1][0].image) - read_stamp(got[0][0].image)) / fps * 0.95


def test_latest_frame_semantics_with_a_30fps_stamped_source():
    src = SyntheticSource("synthetic", fps=30.0, size=(320, 240))
    src.open()
    with Capture(src, realtime=True) as cap:
        got = collect(cap, n=25, delay=0.07)  # a consumer slower than the source
    assert len(got) == 25
    ids = [f.id for f, _ in got]
    assert ids == sorted(set(ids))  # never the same frame twice
    for f, newest_when_taken in got:
        assert newest_when_taken - f.id <= 1  # never more than one frame behind the newest captured
        assert read_stamp(f.image) == f.id - 1  # the image is that frame's own
    assert cap.stats["dropped"] > 0 and max(np.diff(ids)) >= 2  # old frames were dropped, not queued


@pytest.mark.parametrize("mode", ["fail", "block"])
def test_camera_that_dies_mid_stream_and_comes_back(mode, caplog):
    caplog.set_level(logging.INFO, logger="edge_saliency")
    dev = Device()
    dev.mode = mode
    cap = Capture(FlakyCamera(dev), realtime=True, stale_after=0.25, backoff=(0.05, 0.2)).start()
    try:
        before = collect(cap, n=5)
        assert len(before) == 5 and not cap.no_signal
        dev.alive = False
        assert wait_for(lambda: cap.no_signal, every=0.02)  # detected by frame age (stale_after), however late
        last = before[-1][0].id
        # a window in which nothing may arrive (not a deadline: a slow machine only makes it easier)
        assert cap.get(last, timeout=0.4) is None  # nothing new while it is gone
        assert cap.no_signal
        dev.alive = True
        after = collect(cap, n=5, after=last)
        dev.unblock.set()  # let an abandoned blocked read return
    finally:
        cap.stop()
    assert len(after) == 5 and after[0][0].id > last
    assert not cap.no_signal
    assert cap.stats["faults"] == 1 and cap.stats["reconnects"] >= 1
    lost = [r for r in caplog.records if "retrying with backoff" in r.getMessage()]
    back = [r for r in caplog.records if "frames are back" in r.getMessage()]
    assert len(lost) == 1 and len(back) == 1  # logged once, not once per retry
