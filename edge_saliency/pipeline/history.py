"""The last few minutes of the daemon's frames, one summary per second, for the page's plots
(GET /api/history): frames and FPS, capture-to-result latency p50/p99, the class seen most.

Cheap on the inference thread: `add` appends to the open second's lists; a second is summarised
once, when the next one starts. Seconds without a frame are kept (frames 0), so a stall shows up
as a gap in the plots rather than being skipped over.
"""
from __future__ import annotations

import threading
import time
from collections import Counter, deque

import numpy as np


class History:
    def __init__(self, seconds: int = 300, clock=time.time):
        self.seconds = int(seconds)
        self.clock = clock
        self._done: deque = deque(maxlen=self.seconds)
        self._open_t: int | None = None
        self._lat: list[float] = []
        self._labels: list[str] = []
        self._scores: dict[str, list[float]] = {}
        self._since: float | None = None  # the very first frame's time: that second is only partly covered
        self._lock = threading.Lock()

    def add(self, latency_ms: float | None, label: str, score: float, t: float | None = None) -> None:
        """One processed frame (t: wall-clock seconds, default now)."""
        t = self.clock() if t is None else t
        sec = int(t)
        with self._lock:
            if self._open_t is None:
                self._since = t
            self._roll(sec)
            if latency_ms is not None:
                self._lat.append(float(latency_ms))
            self._labels.append(label)
            self._scores.setdefault(label, []).append(float(score))

    def _roll(self, sec: int) -> None:
        if self._open_t is None:
            self._open_t = sec
        if sec <= self._open_t:
            return
        self._done.append(self._summary())
        for gap in range(max(self._open_t + 1, sec - self.seconds), sec):  # the deque keeps the last ones
            self._done.append({"t": gap, "frames": 0, "fps": 0.0, "latency_p50": None, "latency_p99": None,
                               "label": None, "score": None})
        self._open_t, self._lat, self._labels, self._scores = sec, [], [], {}

    def _summary(self) -> dict:
        n = len(self._labels)
        covered = 1.0
        if self._since is not None:  # the first second: frames since the first one, not since the second began
            covered, self._since = max(self._open_t + 1 - self._since, 1e-3), None
        point = {"t": self._open_t, "frames": n, "fps": round(n / covered, 2), "latency_p50": None, "latency_p99": None,
                 "label": None, "score": None}
        if self._lat:
            p50, p99 = np.percentile(self._lat, [50, 99])
            point["latency_p50"], point["latency_p99"] = round(float(p50), 2), round(float(p99), 2)
        if n:
            label = Counter(self._labels).most_common(1)[0][0]
            point["label"] = label
            point["score"] = round(float(np.mean(self._scores[label])), 4)
        return point

    def snapshot(self) -> dict:
        """Complete seconds, oldest first (the second in progress is left out: its FPS is not known yet)."""
        with self._lock:
            self._roll(int(self.clock()))
            points = list(self._done)
        counts = Counter(p["label"] for p in points if p["label"] is not None)
        return {"interval_s": 1, "window_s": self.seconds, "points": points,
                "classes": [[label, n] for label, n in counts.most_common()]}
