"""Shared pieces of the benchmark scripts: the machine, interleaved timing, result files.

Every comparison runs its variants side by side in one process, round robin, so that machine
noise (other processes, thermal state, frequency) hits all of them alike; results are ratios of
medians. Nothing here is a test: tests never time anything.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from edge_saliency.runtime.device_info import cpu_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def machine() -> dict:
    import onnxruntime as ort

    info = {
        "cpu": cpu_model(), "cores": os.cpu_count(), "machine": platform.machine(),
        "python": platform.python_version(), "onnxruntime": ort.__version__,
        "ort_providers": ort.get_available_providers(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    try:
        import openvino

        info["openvino"] = openvino.__version__
    except ImportError:
        pass
    return info


def interleaved(runners: dict[str, Callable[[], object]], runs: int, warmup: int = 20,
                progress: bool = True) -> dict[str, np.ndarray]:
    """Seconds per call of each runner: ``warmup`` calls each, then ``runs`` rounds; in each round
    every runner is called once, the order rotating so no variant always follows the same one."""
    names = list(runners)
    for name in names:
        for _ in range(warmup):
            runners[name]()
    times = {n: np.empty(runs) for n in names}
    for r in range(runs):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            t0 = time.perf_counter()
            runners[name]()
            times[name][r] = time.perf_counter() - t0
        if progress and (r + 1) % max(1, runs // 10) == 0:
            print(f"\r  {r + 1}/{runs} rounds", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return times


def summary(times: dict[str, np.ndarray], baseline: str | None = None) -> list[dict]:
    rows = []
    base = float(np.median(times[baseline])) if baseline else None
    for name, t in times.items():
        med = float(np.median(t))
        rows.append({"variant": name, "runs": len(t), "median_ms": med * 1e3,
                     "p10_ms": float(np.percentile(t, 10)) * 1e3, "p90_ms": float(np.percentile(t, 90)) * 1e3,
                     "ratio": med / base if base else None})
    return rows


def table(rows: list[dict], ratio_label: str = "ratio") -> str:
    lines = [f"| variant | runs | median ms | p10 ms | p90 ms | {ratio_label} |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = f"{r['ratio']:.3f}" if r.get("ratio") is not None else ""
        lines.append(f"| {r['variant']} | {r['runs']} | {r['median_ms']:.2f} | {r['p10_ms']:.2f} | "
                     f"{r['p90_ms']:.2f} | {ratio} |")
    return "\n".join(lines)


def command_line() -> str:
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])


def write_results(name: str, title: str, body_md: str, data: dict) -> tuple[Path, Path]:
    """benchmarks/results/<name>.md and .json, with the command, machine and date."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    mach = machine()
    md = (f"# {title}\n\nCommand: `{command_line()}`  \nDate: {stamp}  \nMachine: {mach['cpu']}, "
          f"{mach['cores']} cores, onnxruntime {mach['onnxruntime']}"
          + (f", openvino {mach['openvino']}" if "openvino" in mach else "")
          + f", load average at the end {tuple(round(x, 2) for x in mach['load_average'] or ())}\n\n{body_md}\n")
    md_path, json_path = RESULTS / f"{name}.md", RESULTS / f"{name}.json"
    md_path.write_text(md)
    json_path.write_text(json.dumps({"command": command_line(), "date": stamp, "machine": mach, **data}, indent=1))
    return md_path, json_path


def http_get(host: str, port: int, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """(status, body) of one GET on a fresh connection (the daemon benchmarks' client)."""
    import http.client

    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()
