"""Per-second history for the page's plots: FPS, latency p50/p99, top class; and GET /api/history."""
from __future__ import annotations

import time

import pytest

from edge_saliency.pipeline.history import History
from serve_util import get_json, running, wait_for


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def test_seconds_are_summarised_when_complete_and_gaps_are_kept():
    clock = Clock()
    h = History(seconds=5, clock=clock)
    for i in range(20):  # second 1000: 20 frames, latencies 10..29 ms, mostly cats
        h.add(10.0 + i, "cat" if i < 15 else "cup", 0.5 + 0.01 * i, t=1000.0 + i / 20)
    assert h.snapshot()["points"] == []  # the second in progress is not reported
    clock.t = 1001.2
    h.add(50.0, "cup", 0.9, t=1001.2)
    snap = h.snapshot()
    (p,) = snap["points"]
    assert p["t"] == 1000 and p["frames"] == 20 and p["fps"] == 20.0  # the first frame came at 1000.0
    assert p["latency_p50"] == pytest.approx(19.5) and p["latency_p99"] == pytest.approx(28.81, abs=0.01)
    assert p["label"] == "cat" and p["score"] == pytest.approx(0.57)
    clock.t = 1004.5  # nothing for two seconds: they show as empty, not skipped
    snap = h.snapshot()
    assert [q["t"] for q in snap["points"]] == [1000, 1001, 1002, 1003]
    assert [q["frames"] for q in snap["points"]] == [20, 1, 0, 0]
    assert snap["points"][2]["label"] is None and snap["points"][2]["latency_p50"] is None
    assert snap["classes"] == [["cat", 1], ["cup", 1]]
    late = History(clock=clock)  # started half way through a second: its rate counts from the first frame
    for i in range(10):
        late.add(5.0, "cat", 0.5, t=1200.5 + i / 20)
    clock.t = 1201.1
    assert late.snapshot()["points"][0]["fps"] == pytest.approx(20.0)
    clock.t = 1100.0  # only the window is kept
    pts = h.snapshot()["points"]
    assert len(pts) == 5 and pts[-1]["t"] == 1099


def test_api_history_serves_the_last_seconds(lite0_model):
    with running(lite0_model) as d:
        assert wait_for(lambda: d.loop.latest, 60)
        time.sleep(2.5)
        status, j = get_json(d, "/api/history")
        assert status == 200 and j["interval_s"] == 1 and j["window_s"] == 300
        full = [p for p in j["points"] if p["frames"]]
        assert full and all(p["fps"] > 0 and 0 < p["latency_p50"] <= p["latency_p99"] for p in full)
        assert all(isinstance(p["label"], str) for p in full)
        status, err = get_json(d, "/api/history?x=1")
        assert status == 400
