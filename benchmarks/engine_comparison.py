"""ONNX Runtime vs OpenVINO on the same .onnx files: the default single-pass export (SMOE +
Recipro-CAM) and the plain export (--methods none), side by side, interleaved, one process.

    python benchmarks/engine_comparison.py                 # 300 rounds, 2 threads
    python benchmarks/engine_comparison.py --runs 500 --threads 1

ONNX Runtime sessions run with intra-op spinning off (interleaved sessions that spin steal each
other's cores); OpenVINO with the LATENCY hint and f32 inference precision, as
``edge-saliency run --engine openvino`` does. Writes benchmarks/results/engine_comparison.md/json.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import harness  # noqa: E402

NO_SPINNING = {"session.intra_op.allow_spinning": "0"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from edge_saliency.runtime import engines
    from edge_saliency import samples
    from export.build import ExportOptions, export_from_options

    if "openvino" not in engines.available_engines():
        print("OpenVINO is not installed: pip install 'edge-saliency[openvino]'", file=sys.stderr)
        return 2
    frame = cv2.resize(samples.photo("chelsea"), (224, 224), interpolation=cv2.INTER_AREA)[None]
    runners = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for kind, methods in (("saliency", ("smoe", "recipro")), ("plain", ())):
            paths[kind] = str(Path(tmp) / f"{kind}.onnx")
            export_from_options(ExportOptions(out=paths[kind], methods=methods), log=lambda m: None)
        for engine_name in ("onnxruntime", "openvino"):
            for kind, path in paths.items():
                if engine_name == "onnxruntime":
                    eng = engines.OnnxRuntimeEngine(path, "cpu", args.threads, NO_SPINNING)
                else:
                    eng = engines.OpenVINOEngine(path, None, args.threads)
                runners[f"{engine_name} {kind}"] = (lambda e=eng: e.run(e.outputs, {"image": frame}))
        times = harness.interleaved(runners, args.runs)

    rows = harness.summary(times, baseline="onnxruntime plain")
    med = {r["variant"]: r["median_ms"] for r in rows}
    ratios = {
        "saliency overhead, onnxruntime": med["onnxruntime saliency"] / med["onnxruntime plain"],
        "saliency overhead, openvino": med["openvino saliency"] / med["openvino plain"],
        "openvino / onnxruntime, single pass": med["openvino saliency"] / med["onnxruntime saliency"],
        "openvino / onnxruntime, plain": med["openvino plain"] / med["onnxruntime plain"],
    }
    body = (harness.table(rows, "vs ORT plain") + "\n\n" + "\n".join(f"- {k}: **{v:.3f}x**" for k, v in ratios.items())
            + f"\n\nEfficientNet-Lite0 224x224, batch 1, {args.threads} threads, {args.runs} interleaved rounds "
              "after 20 warm-up runs each; ONNX Runtime CPU provider with spinning off, OpenVINO CPU (LATENCY, f32).")
    print(body)
    md, _ = harness.write_results("engine_comparison", "ONNX Runtime vs OpenVINO, same ONNX files", body,
                                  {"rows": rows, "ratios": ratios, "threads": args.threads})
    print(f"\nwrote {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
