"""Live overlay speed: end-to-end FPS of `edge-saliency run` and the loop's own share, plus lag.

    .venv/bin/python benchmarks/live_fps.py [--model m.onnx] [--frames 300] [--threads N]

1. Throughput: the default model, a 640x480 video made on the fly (the demo's real photographs),
   --fast --headless, fastcam view with the HUD. Side by side in the same run: bare
   `session.run` on the same frames (the ceiling). Reports end-to-end FPS and the share of each
   frame's time spent outside session.run (targets: >= 60 FPS, loop's own work <= 25%).
2. Lag: a synthetic 30 FPS live source that stamps frame numbers: how many frames the processed
   frame is behind the newest captured one when the loop takes it and when it is shown, and the
   capture -> shown latency.

Writes benchmarks/results/live_fps.md and .json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_saliency.pipeline.capture import Capture  # noqa: E402
from edge_saliency.runtime.device_info import cpu_model  # noqa: E402
from edge_saliency.pipeline.live import live_loop  # noqa: E402
from edge_saliency.cli.default_model import ensure_default_model  # noqa: E402
from edge_saliency.runtime.model import SaliencyModel  # noqa: E402
from edge_saliency.pipeline.render import Renderer  # noqa: E402
from edge_saliency.pipeline.sources import DemoSource, SyntheticSource, VideoFileSource  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    import onnxruntime as ort

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "onnxruntime": ort.__version__, "opencv": cv2.__version__,
            "loadavg": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None}


def pct(values, q):
    return float(np.percentile(values, q)) if len(values) else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--lag-frames", type=int, default=150)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--rounds", type=int, default=2, help="alternations of bare session.run and end to end")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    if a.frames < 10 or a.lag_frames < 10 or a.rounds < 1:
        ap.error("--frames and --lag-frames must be at least 10, --rounds at least 1")

    model_path = a.model or str(ensure_default_model())
    model = SaliencyModel(model_path, provider="auto", threads=a.threads)
    renderer = Renderer(view="fastcam", hud=True, topk=3, scale_names=model.info.scale_names,
                        provider=model.provider, outputs=model.outputs)
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "bench_640x480.mp4"
        demo = DemoSource("demo")
        demo.open()
        demo.write_video(video, a.frames)
        # warm up ORT (first runs allocate)
        probe = DemoSource("demo")
        probe.open()
        for i in range(5):
            model.predict(probe.make(i))

        reader = cv2.VideoCapture(str(video))
        batches = []
        while True:
            ok, f = reader.read()
            if not ok:
                break
            batches.append(model.preprocess(f)[None])
        reader.release()
        # 1. end to end (--fast --headless, fastcam + HUD) and, side by side, bare session.run on the
        # same frames preprocessed beforehand; alternated in rounds so machine load hits both alike
        runs, bare_s = [], 0.0
        for _ in range(a.rounds):
            t0 = time.perf_counter()
            for b in batches:
                model.run(b)
            bare_s += time.perf_counter() - t0
            src = VideoFileSource(str(video))
            src.open()
            cap = Capture(src, realtime=False).start()
            try:
                runs.append(live_loop(model, cap, renderer, topk=3)[0].run())
            finally:
                cap.stop()
        e2e = runs[0]
        for r in runs[1:]:
            e2e.frames += r.frames
            e2e.seconds += r.seconds
            for k, v in r.stage_seconds.items():
                e2e.stage_seconds[k] += v
    bare_fps = len(batches) * a.rounds / bare_s

    # 2. lag with a live stamped 30 FPS source
    syn = SyntheticSource("synthetic", fps=30.0, size=(640, 480))
    syn.open()
    cap = Capture(syn, realtime=True).start()
    try:
        lag = live_loop(model, cap, renderer, topk=3, max_frames=a.lag_frames)[0].run()
    finally:
        cap.stop()
    lag_stats = cap.stats

    st = e2e.stage_seconds
    per_frame_ms = {k: 1e3 * v / max(1, e2e.frames) for k, v in st.items()}
    res = {
        "command": "python benchmarks/live_fps.py" + "".join(f" {x}" for x in sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
        "model": {"path": Path(model_path).name, "arch": model.info.arch, "provider": model.provider,
                  "threads": a.threads or "ORT default"},
        "throughput": {
            "frames": e2e.frames, "seconds": round(e2e.seconds, 3), "fps_end_to_end": round(e2e.fps, 2),
            "fps_bare_session_run": round(bare_fps, 2), "ratio_end_to_end_vs_bare": round(e2e.fps / bare_fps, 3),
            "share_outside_session_run": round(e2e.outside_inference, 4),
            "share_loop_own_work": round(e2e.own_work, 4),
            "per_frame_ms": {k: round(v, 3) for k, v in per_frame_ms.items()},
            "targets": {"fps": 60, "loop_own_work_max": 0.25},
        },
        "lag_30fps_live": {
            "frames": lag.frames, "fps_end_to_end": round(lag.fps, 2),
            "behind_at_pickup_max": int(max(lag.behind_at_pickup)),
            "behind_at_pickup_hist": {str(k): int(v) for k, v in zip(*np.unique(lag.behind_at_pickup, return_counts=True))},
            "behind_at_display_hist": {str(k): int(v) for k, v in zip(*np.unique(lag.behind_at_display, return_counts=True))},
            "latency_ms_p50": round(1e3 * pct(lag.latency, 50), 2), "latency_ms_p95": round(1e3 * pct(lag.latency, 95), 2),
            "latency_ms_max": round(1e3 * max(lag.latency), 2),
            "captured": lag_stats["captured"], "dropped_stale": lag_stats["dropped"],
        },
    }
    t = res["throughput"]
    lg = res["lag_30fps_live"]
    md = f"""# Live overlay speed (`edge-saliency run`)

Command: `{res['command']}`  ({res['date']})
Machine: {res['machine']['cpu']}, {res['machine']['cores']} cores, load average {res['machine']['loadavg']};
onnxruntime {res['machine']['onnxruntime']}, OpenCV {res['machine']['opencv']}, Python {res['machine']['python']}.
Model: {res['model']['arch']} ({res['model']['path']}) on {res['model']['provider']}, threads: {res['model']['threads']}.

## 1. Throughput: 640x480 video, --fast --headless, fastcam view with HUD

| | value | target |
|---|---|---|
| end-to-end FPS | **{t['fps_end_to_end']:.1f}** | >= 60 |
| bare session.run FPS (same frames, same run) | {t['fps_bare_session_run']:.1f} | |
| end-to-end / bare | {t['ratio_end_to_end_vs_bare']:.2f} | |
| share of frame time outside session.run | {100 * t['share_outside_session_run']:.1f}% | |
| loop's own work (outside session.run, not waiting for frames) | **{100 * t['share_loop_own_work']:.1f}%** | <= 25% |

Per frame (ms): """ + ", ".join(f"{k} {v:.2f}" for k, v in t["per_frame_ms"].items()) + f"""

## 2. Lag: live synthetic source at 30 FPS, frame numbers stamped in the pixels

| | value |
|---|---|
| frames processed | {lg['frames']} ({lg['fps_end_to_end']:.1f} FPS) |
| frames behind the newest captured, when the loop takes it | max {lg['behind_at_pickup_max']}; histogram {lg['behind_at_pickup_hist']} |
| frames behind the newest captured, when it is shown | histogram {lg['behind_at_display_hist']} |
| capture -> shown latency | p50 {lg['latency_ms_p50']:.1f} ms, p95 {lg['latency_ms_p95']:.1f} ms, max {lg['latency_ms_max']:.1f} ms |
| captured / dropped as stale | {lg['captured']} / {lg['dropped_stale']} |

Frames taken are always the newest (behind at pickup <= 1; 1 only when a frame lands between
the hand-over and the check). When a frame is shown, the frames captured during its own
inference are newer: that count is inference time / 33 ms, not a queue.
"""
    print(md)
    if not a.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "live_fps.json").write_text(json.dumps(res, indent=2) + "\n")
        (RESULTS / "live_fps.md").write_text(md)
        print(f"wrote {RESULTS / 'live_fps.md'} and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
