"""What the saliency outputs cost when added by ONNX surgery, next to the torch export's cost.

    python benchmarks/export_surgery_overhead.py               # 300 runs each, 2 threads
    python benchmarks/export_surgery_overhead.py --runs 500

EfficientNet-Lite0 (pretrained) is exported four ways into a temporary folder:
- ``torch_none`` / ``torch_saliency``: ``edge-saliency export`` (torch path) with ``--methods none``
  and with the default methods (SMOE over the zoo's 5 scale ends + Recipro-CAM);
- ``surgery_none`` / ``surgery_saliency``: the bare model exported plainly to ONNX (float NCHW
  input, opset 17), then ``edge-saliency export --onnx`` with ``--mean 127 --std 128 --color rgb``
  and ``--methods none`` / the same 5 scale ends (``--scale-nodes``) and Recipro-CAM.
All four sessions (ORT CPU, 2 intra-op threads, spinning disabled with
``session.intra_op.allow_spinning = 0``, since two interleaved sessions with spinning threads
steal each other's cores) run the same photograph (``chelsea`` at 224x224, BGR uint8)
interleaved round robin, one run of each per round, after 20 warm-up rounds. Reported: median,
p10, p90 (ms) and the ratio of medians with saliency / without, per path. Writes
``benchmarks/results/export_surgery_overhead.md`` and ``.json``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LITE0_SCALES = ("_blocks.0._act1", "_blocks.2._act1", "_blocks.4._act1", "_blocks.10._act1", "_act_head")
VARIANTS = ("torch_none", "torch_saliency", "surgery_none", "surgery_saliency")


def build(folder: Path) -> dict[str, Path]:
    import torch

    from export import zoo
    from export.build import ExportOptions, export_from_options
    from export.onnx_surgery import SurgeryOptions, surgery

    quiet = lambda m: None  # noqa: E731
    paths = {v: folder / f"{v}.onnx" for v in VARIANTS}
    export_from_options(ExportOptions(out=str(paths["torch_none"]), methods=()), log=quiet)
    export_from_options(ExportOptions(out=str(paths["torch_saliency"])), log=quiet)
    plain = folder / "lite0_plain.onnx"
    model = zoo.get("efficientnet_lite0").build(True, (224, 224)).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, 3, 224, 224), str(plain), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    common = dict(onnx=str(plain), mean=(127.0,) * 3, std=(128.0,) * 3, color="rgb", layout="nchw")
    nodes = ["/" + name.replace("._", "/_") + "/Clip" for name in LITE0_SCALES]
    surgery(SurgeryOptions(out=str(paths["surgery_none"]), methods=(), **common), log=quiet)
    surgery(SurgeryOptions(out=str(paths["surgery_saliency"]), scale_nodes=nodes, **common), log=quiet)
    return paths


def measure(paths: dict[str, Path], runs: int, threads: int, warmup: int = 20) -> dict[str, list[float]]:
    import cv2
    import onnxruntime as ort

    from edge_saliency import samples

    image = cv2.resize(samples.photo("chelsea"), (224, 224), interpolation=cv2.INTER_AREA)[None]
    sessions = {}
    for name, path in paths.items():
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sessions[name] = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    times = {name: [] for name in paths}
    for i in range(warmup + runs):
        for name, sess in sessions.items():
            t0 = time.perf_counter()
            sess.run(None, {"image": image})
            if i >= warmup:
                times[name].append((time.perf_counter() - t0) * 1e3)
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        paths = build(Path(tmp))
        times = measure(paths, args.runs, args.threads)
    stats = {name: {"median_ms": float(np.median(t)), "p10_ms": float(np.percentile(t, 10)),
                    "p90_ms": float(np.percentile(t, 90)), "runs": len(t)} for name, t in times.items()}
    ratios = {
        "torch": stats["torch_saliency"]["median_ms"] / stats["torch_none"]["median_ms"],
        "surgery": stats["surgery_saliency"]["median_ms"] / stats["surgery_none"]["median_ms"],
    }
    import onnxruntime as ort

    command = "python benchmarks/export_surgery_overhead.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = {
        "command": command.strip(), "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "onnxruntime": ort.__version__},
        "settings": {"threads": args.threads, "allow_spinning": 0, "schedule": "round robin, 1 run each", "warmup": 20},
        "stats": stats, "ratio_with_saliency_over_without": ratios,
    }
    lines = [
        "# Saliency overhead: ONNX surgery vs torch export (EfficientNet-Lite0, ORT CPU)", "",
        f"`{result['command']}` on {result['date']}, {platform.platform()}, {os.cpu_count()} CPUs, "
        f"onnxruntime {ort.__version__}; {args.threads} intra-op threads, spinning off, interleaved round robin, "
        f"{args.runs} runs each.", "",
        "| variant | median ms | p10 ms | p90 ms |", "|---|---|---|---|",
        *[f"| {n} | {s['median_ms']:.2f} | {s['p10_ms']:.2f} | {s['p90_ms']:.2f} |" for n, s in stats.items()], "",
        "| path | with saliency / without (medians) |", "|---|---|",
        f"| torch export | {ratios['torch']:.3f} |", f"| ONNX surgery | {ratios['surgery']:.3f} |", "",
        "Same 5 scale ends (the zoo's) and Recipro-CAM (GAP + linear shortcut, logit score) on both paths; "
        "'without' is the same path with `--methods none` (preprocessing only). Both paths fold the Pads "
        "into the Convs (export/graph_passes.py). Differences: the surgery wraps the plain model's float "
        "input with its own preprocessing ops, and its SMOE takes one log per channel value where the "
        "torch side's SMOE multiplies channel groups first (export/methods/smoe.py).",
    ]
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "export_surgery_overhead.md").write_text("\n".join(lines) + "\n")
    (out / "export_surgery_overhead.json").write_text(json.dumps(result, indent=1) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
