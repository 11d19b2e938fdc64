"""FPS per camera of `edge-saliency serve` with 1, 2 and 4 cameras sharing one model session.

    python benchmarks/serve_cameras_fps.py                    # ~4 min on 2 cores
    python benchmarks/serve_cameras_fps.py --rounds 5 --measure-s 20 --threads 2

Each configuration is an in-process daemon (127.0.0.1, port 0) with N synthetic 640x480 cameras
([cameras.camK] tables, one shared session), in two modes:
  paced    the sources deliver 30 FPS, like real cameras; the capture keeps the newest frame
  unpaced  hand-off (realtime = false): every camera takes frames as fast as inference goes
After --warmup-s, each camera's processed frames are counted over --measure-s. Configurations
run interleaved (rounds, the order rotating) so machine noise hits all alike; the table shows the
median over rounds of each camera's FPS (the mean over the cameras of a configuration, and the
slowest one) and the total. Nothing here is a test.

Results: benchmarks/results/serve_cameras_fps.md and .json.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.harness import write_results  # noqa: E402


def run_config(model, n: int, paced: bool, warmup_s: float, measure_s: float) -> list[float]:
    from edge_saliency.serve.config import load_config
    from edge_saliency.serve.daemon import Daemon
    from edge_saliency.serve.cameras import parse_cameras_table
    from edge_saliency.pipeline.sources import SyntheticSource

    class Quiet:
        enabled = False
        watchdog_interval = None

        def __getattr__(self, name):
            return lambda *a, **k: None

    cfg = load_config(None, cli={"listen": "127.0.0.1:0", "realtime": "true" if paced else "false"}, env={})
    names = [f"cam{k}" for k in range(n)]
    cfg._values["cameras"] = parse_cameras_table({c: {"source": "synthetic"} for c in names}, "[cameras]")
    sources = {}
    for c in names:
        s = SyntheticSource("synthetic", fps=30.0, size=(640, 480))
        s.open()
        sources[c] = s
    d = Daemon(cfg, model=model, sources=sources, notifier=Quiet()).start()
    try:
        time.sleep(warmup_s)
        seq0 = {c: (d.cameras[c].loop.latest.seq if d.cameras[c].loop.latest else 0) for c in names}
        t0 = time.perf_counter()
        time.sleep(measure_s)
        t1 = time.perf_counter()
        seq1 = {c: (d.cameras[c].loop.latest.seq if d.cameras[c].loop.latest else 0) for c in names}
    finally:
        d.stop()
    return [(seq1[c] - seq0[c]) / (t1 - t0) for c in names]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="edge-saliency ONNX file (default: the pretrained EfficientNet-Lite0)")
    ap.add_argument("--cameras", default="1,2,4")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup-s", type=float, default=3.0)
    ap.add_argument("--measure-s", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=None, help="ORT intra-op threads (default: ORT's choice)")
    a = ap.parse_args()
    from edge_saliency.runtime.model import SaliencyModel, ensure_default_model

    path = Path(a.model) if a.model else ensure_default_model(log_fn=lambda m: print(m, file=sys.stderr))
    model = SaliencyModel(path, provider="cpu", threads=a.threads)
    counts = [int(x) for x in a.cameras.split(",")]
    configs = [(n, paced) for paced in (True, False) for n in counts]
    fps: dict[tuple, list[list[float]]] = {c: [] for c in configs}
    for r in range(a.rounds):
        k = r % len(configs)
        for cfg in configs[k:] + configs[:k]:
            per_cam = run_config(model, cfg[0], cfg[1], a.warmup_s, a.measure_s)
            fps[cfg].append(per_cam)
            print(f"round {r + 1}: {cfg[0]} cameras {'paced 30 FPS' if cfg[1] else 'unpaced'}: "
                  + ", ".join(f"{x:.1f}" for x in per_cam), file=sys.stderr, flush=True)
    rows = []
    for (n, paced), runs in fps.items():
        mean_cam = statistics.median(statistics.fmean(r) for r in runs)
        slowest = statistics.median(min(r) for r in runs)
        total = statistics.median(sum(r) for r in runs)
        rows.append({"cameras": n, "mode": "paced 30 FPS" if paced else "unpaced", "fps_per_camera_mean": mean_cam,
                     "fps_slowest_camera": slowest, "fps_total": total, "rounds": runs})
    lines = ["| cameras | sources | FPS per camera (mean) | slowest camera | total FPS |", "|---:|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['cameras']} | {r['mode']} | {r['fps_per_camera_mean']:.1f} | {r['fps_slowest_camera']:.1f} "
                     f"| {r['fps_total']:.1f} |")
    body = ("\n".join(lines) + "\n\n"
            f"Model: {path.name} ({model.info.arch}), ONNX Runtime CPU, intra-op threads: {a.threads or 'ORT default'}; "
            f"synthetic 640x480 sources; {a.rounds} rounds interleaved, {a.warmup_s:g} s warm-up + {a.measure_s:g} s "
            "counted per configuration; medians over rounds. One model session is shared by every camera: its runs "
            "from several camera threads overlap (session.run is thread-safe), so the total can rise with the number "
            "of cameras until the cores are saturated; then the cameras share it. "
            "The machine is shared with other jobs (noisy): compare rows with each other, not with other runs.")
    print(body)
    md, js = write_results("serve_cameras_fps", "edge-saliency serve: FPS per camera with 1, 2 and 4 cameras", body,
                           {"rows": rows, "model": str(path), "threads": a.threads})
    print(f"wrote {md} and {js.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
