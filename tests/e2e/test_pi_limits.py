"""benchmarks/pi_limits.py, short: the live loop and the daemon keep running on 1 core within
512 MB, with bounded RSS, and the memory limit really bites. Needs root (a cgroup) or prlimit."""
from __future__ import annotations

import os

import pytest

from benchmarks import pi_limits


def test_run_and_serve_within_pi_zero_limits(lite0_onnx):
    if os.geteuid() != 0 and not pi_limits._systemd_is_pid1():
        pytest.skip("needs root for a memory cgroup (or systemd-run --scope)")
    tried = []
    try:
        limit = pi_limits.make_limit(512, 0, tried)
    except RuntimeError as exc:
        pytest.skip(str(exc))
    limit.close()
    if limit.method == "prlimit-as":
        pytest.skip(f"only an address-space limit is available here ({'; '.join(tried)})")
    report = pi_limits.check(str(lite0_onnx), seconds=6.0, mem_mb=512, core=0)
    lim, imp, run, srv = report["limit"], report["imports"], report["run"], report["serve"]
    assert lim["probe"]["enforced"], lim["probe"]
    assert imp["ok"] and not imp["torch_imported"] and 0 < imp["import_mb"] < imp["model_loaded_mb"] < 512, imp
    assert run["ok"], run
    assert run["rss"]["affinity"] == [0] and run["frames"] >= 3
    assert srv["ok"], srv
    assert srv["rss"]["affinity"] == [0] and srv["rc"] == 0
