"""ONNX Runtime's intra-op spinning, on and off, for the commands that run at camera rate.

    python benchmarks/ort_spinning.py [--threads 2] [--seconds 10] [--rounds 3]

The default model (SMOE + Recipro-CAM, EfficientNet-Lite0 224) in two SaliencyModels, spinning on
and off, measured two ways, interleaved round by round:
- unpaced: latency of back-to-back runs (what `bench` and a saturated loop see), median;
- paced at 30 frames/s (a camera): the process's CPU time per frame over ``--seconds``, with the
  latency of each run, i.e. what a spinning session costs the other work on the machine (capture,
  JPEG encoders, a second camera) and a Pi's power budget.
Writes benchmarks/results/ort_spinning.md and .json.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks import harness  # noqa: E402


def paced(model, frame, seconds: float, fps: float = 30.0) -> dict:
    lat, n = [], 0
    c0, t0 = time.process_time(), time.perf_counter()
    nxt = t0
    while time.perf_counter() - t0 < seconds:
        s = time.perf_counter()
        model.run(frame)
        lat.append(time.perf_counter() - s)
        n += 1
        nxt += 1.0 / fps
        time.sleep(max(0.0, nxt - time.perf_counter()))
    cpu = time.process_time() - c0
    return {"frames": n, "cpu_ms_per_frame": cpu / n * 1e3, "latency_ms_median": float(np.median(lat)) * 1e3,
            "cpu_cores_busy": cpu / (time.perf_counter() - t0)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--model")
    args = ap.parse_args(argv)
    from edge_saliency import samples
    from edge_saliency.cli.default_model import ensure_default_model
    from edge_saliency.runtime.model import SaliencyModel

    path = args.model or str(ensure_default_model(log_fn=lambda m: print(m, file=sys.stderr)))
    models = {name: SaliencyModel(path, provider="cpu", threads=args.threads, spinning=spin)
              for name, spin in (("spinning on", True), ("spinning off", False))}
    frame = cv2.resize(samples.photo("chelsea"), (224, 224), interpolation=cv2.INTER_AREA)[None]
    times = harness.interleaved({n: (lambda m=m: m.run(frame)) for n, m in models.items()}, args.runs)
    rows = harness.summary(times, baseline="spinning off")
    paced_rows = {n: [] for n in models}
    for _ in range(args.rounds):
        for name, m in models.items():
            paced_rows[name].append(paced(m, frame, args.seconds))
    med = {n: {k: float(np.median([r[k] for r in rs])) for k in rs[0]} for n, rs in paced_rows.items()}
    body = [harness.table(rows, "vs off"), "",
            f"Paced at 30 frames/s for {args.seconds:.0f} s, {args.rounds} alternated rounds (medians):", "",
            "| session | CPU ms per frame | CPU cores busy | latency ms |", "|---|---:|---:|---:|"]
    body += [f"| {n} | {v['cpu_ms_per_frame']:.1f} | {v['cpu_cores_busy']:.2f} | {v['latency_ms_median']:.2f} |"
             for n, v in med.items()]
    body += ["", f"{args.threads} intra-op threads, batch 1, {args.runs} interleaved unpaced rounds."]
    text = "\n".join(body)
    print(text)
    harness.write_results("ort_spinning", "ONNX Runtime intra-op spinning", text, {"unpaced": rows, "paced": paced_rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
