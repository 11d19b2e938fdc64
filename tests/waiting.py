"""Waiting in tests for something that must happen, without making speed a test."""
from __future__ import annotations

import time

# The bound on every wait for something that must happen (a frame, a state, a message). A wait returns
# as soon as the condition holds, so the bound costs nothing when the code works: it exists only so that
# a hang fails the test instead of stalling the suite. It is that large because the suite runs on
# shared 2-core machines next to other jobs, where one frame of the model can take a second and a
# daemon's first frame tens of seconds; how fast things are is measured in benchmarks/, not here.
PATIENCE_S = 120.0


def wait_for(fn, timeout=PATIENCE_S, every=0.1):
    """Poll fn() until it returns something truthy (bounded by `timeout`, see PATIENCE_S); that value, or None."""
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        v = fn()
        if v:
            return v
        time.sleep(every)
    return None
