"""Time per explained frame: this project's single-pass ONNX export vs the tools people use today,
on the same pretrained EfficientNet-Lite0 (224x224), same machine, one run.

    python benchmarks/compare_explainers.py                      # 30 frames each, Score-CAM 3
    python benchmarks/compare_explainers.py --frames 100 --scorecam-frames 5 --threads 2

Contenders (torch eager, CPU, ``torch.set_num_threads(--threads)``):
- torchcam 0.5 GradCAM, GradCAMpp, ScoreCAM on ``_act_head`` (the last feature map, the one
  Recipro-CAM uses); Captum's LayerGradCam on the same layer;
- floors: plain torch inference (no_grad) and plain ONNX Runtime inference of the same model
  without saliency outputs (pruned);
- this project: one ``session.run`` that returns logits + SMOE (5 scales) + Recipro-CAM, fp32
  and int8 (ORT, ``--threads`` intra-op threads, spinning off).

Every explained frame starts from the image tensor (a gradient method's time includes its forward
and backward pass). Fast contenders run round robin, one frame each per round, so machine noise
hits all alike; Score-CAM (one forward pass per channel: 1280 here) runs ``--scorecam-frames``
frames after them. Writes ``benchmarks/results/compare_explainers.md``, ``.json`` and ``.png``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LAYER = "_act_head"
RESULTS = ROOT / "benchmarks" / "results"


def build_torch(threads: int):
    import torch

    from export import zoo

    torch.set_num_threads(threads)
    entry = zoo.get("efficientnet_lite0")
    model = entry.build(True, (224, 224)).eval()
    return model, entry


def image_tensor(entry):
    import cv2
    import torch

    from edge_saliency import samples

    bgr = cv2.resize(samples.photo("chelsea"), (224, 224), interpolation=cv2.INTER_AREA)
    rgb = bgr[:, :, ::-1].astype(np.float32)
    x = (rgb - np.array(entry.mean, np.float32)) / np.array(entry.std, np.float32)
    return bgr, torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


def make_onnx(folder: Path) -> dict[str, Path]:
    from edge_saliency.bench.runner import prune_to_plain
    from export.build import ExportOptions, export_from_options
    from edge_saliency.graph.quantize import convert

    full = folder / "lite0.onnx"
    export_from_options(ExportOptions(out=str(full)), log=lambda m: None)
    plain = folder / "lite0_plain.onnx"
    prune_to_plain(full, plain)
    int8 = folder / "lite0_int8.onnx"
    convert(full, int8, "int8", log=lambda m: None)
    return {"full": full, "plain": plain, "int8": int8}


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def contenders(model, x, bgr, paths, threads):
    """name -> (callable explaining one frame, what it returns)."""
    import torch
    from captum.attr import LayerGradCam
    from torchcam.methods import GradCAM, GradCAMpp

    layer = dict(model.named_modules())[LAYER]
    batch = bgr[None]
    sessions = {k: ort_session(p, threads) for k, p in paths.items()}

    def torch_plain():
        with torch.no_grad():
            return model(x).argmax(1)

    def ort_plain():
        return sessions["plain"].run(None, {"image": batch})

    def single(kind):
        return lambda: sessions[kind].run(None, {"image": batch})

    def torchcam(cls):
        def run():
            cam = cls(model, target_layer=LAYER)
            try:
                out = model(x)
                return cam(int(out.argmax(1)), out)[0]
            finally:
                cam.remove_hooks()
        return run

    captum = LayerGradCam(model, layer)

    def captum_gradcam():
        with torch.no_grad():
            cls = int(model(x).argmax(1))
        return captum.attribute(x, target=cls)

    return {
        "plain torch inference (floor)": torch_plain,
        "plain ORT inference (floor)": ort_plain,
        "edge-saliency single pass fp32 (SMOE+Recipro-CAM)": single("full"),
        "edge-saliency single pass int8 (SMOE+Recipro-CAM)": single("int8"),
        "torchcam GradCAM": torchcam(GradCAM),
        "torchcam GradCAMpp": torchcam(GradCAMpp),
        "captum LayerGradCam": captum_gradcam,
    }


def scorecam_runner(model, x):
    import torch
    from torchcam.methods import ScoreCAM

    def run():
        cam = ScoreCAM(model, target_layer=LAYER, batch_size=32)
        try:
            with torch.no_grad():
                out = model(x)
                return cam(int(out.argmax(1)), out)[0]
        finally:
            cam.remove_hooks()
    return run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=30, help="measured frames per fast contender (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--scorecam-frames", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(RESULTS / "compare_explainers"), help="results path without suffix")
    args = p.parse_args(argv)

    from edge_saliency.runtime import device_info

    model, entry = build_torch(args.threads)
    bgr, x = image_tensor(entry)
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_onnx(Path(tmp))
        runs = contenders(model, x, bgr, paths, args.threads)
        for _ in range(args.warmup):
            for fn in runs.values():
                fn()
        times = {k: [] for k in runs}
        for i in range(args.frames):
            for k, fn in runs.items():
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
            print(f"\rround {i + 1}/{args.frames}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        score = scorecam_runner(model, x)
        name = "torchcam ScoreCAM"
        times[name] = []
        for i in range(args.scorecam_frames):
            t0 = time.perf_counter()
            score()
            times[name].append(time.perf_counter() - t0)
            print(f"\rScore-CAM frame {i + 1}/{args.scorecam_frames}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)

    med = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
    ours = med["edge-saliency single pass fp32 (SMOE+Recipro-CAM)"]
    ours8 = med["edge-saliency single pass int8 (SMOE+Recipro-CAM)"]
    device = device_info.collect()
    cmd = "python benchmarks/compare_explainers.py " + " ".join(argv if argv is not None else sys.argv[1:])
    rows = [{"method": k, "frames": len(v), "median_ms": med[k], "p90_ms": float(np.percentile(v, 90)) * 1e3,
             "vs_single_pass_fp32": med[k] / ours} for k, v in times.items()]
    targets = {
        "gradcam_over_single_pass": med["torchcam GradCAM"] / ours, "gradcam_target": 5.0,
        "scorecam_over_single_pass": med["torchcam ScoreCAM"] / ours, "scorecam_target": 1000.0,
        "int8_speedup_over_fp32": ours / ours8, "int8_flags": device["int8_flags"],
    }
    lines = [
        "# Time per explained frame: single-pass export vs torchcam / Captum",
        "",
        f"Command: `{cmd.strip()}`  ",
        f"Date: {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}  ",
        f"Machine: {device_info.summary(device)}; Python {platform.python_version()}; "
        f"torch {__import__('torch').__version__}, torchcam {__import__('torchcam').__version__}, "
        f"captum {__import__('captum').__version__}  ",
        f"Setup: pretrained EfficientNet-Lite0 224x224, chelsea photo, CPU, {args.threads} threads "
        f"(torch.set_num_threads, ORT intra-op, spinning off); {args.frames} frames each round robin after "
        f"{args.warmup} warm-up rounds; Score-CAM {args.scorecam_frames} frames after them. "
        "Taken on a shared 2-core machine with other jobs running: compare ratios, not absolute times; "
        "re-run the command on a quiet machine for clean numbers.",
        "",
        "| method | frames | median ms | p90 ms | × single pass fp32 |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['method']} | {r['frames']} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | {r['vs_single_pass_fp32']:.2f} |")
    lines += [
        "",
        f"- torchcam Grad-CAM / single pass: **{targets['gradcam_over_single_pass']:.1f}×** (target ≥ 5×)",
        f"- torchcam Score-CAM / single pass: **{targets['scorecam_over_single_pass']:.0f}×** (target ≥ 1000×)",
        f"- int8 single pass speed-up over fp32: **{targets['int8_speedup_over_fp32']:.2f}×** "
        f"(CPU int8 dot-product flags: {', '.join(device['int8_flags']) or 'none'})",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({
        "command": cmd.strip(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device, "threads": args.threads, "rows": rows, "targets": targets,
        "raw_ms": {k: [round(t * 1e3, 3) for t in v] for k, v in times.items()},
    }, indent=1))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(9, 4))
        names = [r["method"] for r in rows]
        ax.barh(names, [r["median_ms"] for r in rows], color=["#4a4" if "edge-saliency" in n else "#888" for n in names])
        ax.set_xscale("log")
        ax.set_xlabel(f"median ms per explained frame (log scale), CPU {args.threads} threads")
        ax.invert_yaxis()
        for i, r in enumerate(rows):
            ax.text(r["median_ms"], i, f" {r['median_ms']:.1f}", va="center", fontsize=8)
        fig.tight_layout()
        fig.savefig(out.with_suffix(".png"), dpi=110)
        plt.close(fig)
    except ImportError:
        print("matplotlib missing: no plot", file=sys.stderr)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
