"""What the choice of SMOE scale ends costs: EfficientNet-Lite0, ONNX Runtime CPU, side by side.

    python benchmarks/scale_end_choice.py [--runs 300] [--threads 2]

- none: --methods none (the baseline)
- block outputs (the default since 0.2): the blocks' own outputs (16@112, 24@56, 40@28, 112@14,
  and the head conv 1280@7), linear where no activation follows them, so SMOE clamps them at 0
- expansion activations (0.1's default): the last ReLU6 output at each resolution, which is the
  wide expansion of the next, downsampling block (96@112, 144@56, 240@28, 672@14, 1280@7: 3x the
  values per frame)
Interleaved round robin, intra-op spinning off. Writes benchmarks/results/scale_end_choice.md/json.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import harness  # noqa: E402

VARIANTS = {
    "none": {"methods": ()},
    "block outputs (default)": {},
    "expansion activations (0.1)": {"scale_nodes": ["_blocks.1._act0", "_blocks.3._act0", "_blocks.5._act0",
                                                    "_blocks.11._act0", "_act_head"]},
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from edge_saliency.runtime import engines
    from edge_saliency import samples
    from export.build import ExportOptions, export_from_options

    frame = cv2.resize(samples.photo("chelsea"), (224, 224), interpolation=cv2.INTER_AREA)[None]
    runners = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, opts) in enumerate(VARIANTS.items()):
            path = str(Path(tmp) / f"v{i}.onnx")
            export_from_options(ExportOptions(out=path, **opts), log=lambda m: None)
            eng = engines.OnnxRuntimeEngine(path, "cpu", args.threads, {"session.intra_op.allow_spinning": "0"})
            runners[name] = lambda e=eng: e.run(e.outputs, {"image": frame})
        times = harness.interleaved(runners, args.runs)
    rows = harness.summary(times, baseline="none")
    body = harness.table(rows, "vs none") + (
        f"\n\nEfficientNet-Lite0 224, batch 1, {args.threads} threads, spinning off, {args.runs} interleaved rounds.")
    print(body)
    harness.write_results("scale_end_choice", "SMOE scale ends: cost of the choice", body, {"rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
