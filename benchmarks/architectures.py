"""Real third-party CNNs through both ways in: the torch export and ``export --onnx`` on a plain
torch export with a dynamic batch axis (random weights: structure, not accuracy).

    python benchmarks/architectures.py                  # every architecture below, 224 px
    python benchmarks/architectures.py --size 128 resnet18 timm:convnext_nano

For each: the torch path (export.build.export_module) and the surgery path (the builder on the plain
ONNX file) must both write a checked file; their outputs must be the same; every contract output
present, finite, in [0, 1] and not constant; every map within the builder's bound of its numpy
reference (1e-4, widened only where the map's own conditioning says float32 cannot do better:
random weights can leave activations far below SMOE's eps, which the table marks as
ill-conditioned). Writes benchmarks/results/architectures.md and .json.
tests/integration/test_architectures.py runs a few of these families in CI.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ARCHS = (
    "torchvision:resnet18", "torchvision:resnet50", "torchvision:resnext50_32x4d", "torchvision:regnet_x_400mf",
    "torchvision:densenet121", "torchvision:vgg11", "torchvision:mobilenet_v2", "torchvision:mobilenet_v3_large",
    "torchvision:efficientnet_b0", "torchvision:mnasnet0_5", "torchvision:shufflenet_v2_x0_5",
    "torchvision:squeezenet1_1", "torchvision:googlenet",
    "timm:efficientnet_b0", "timm:efficientnet_lite0", "timm:mobilenetv3_large_100", "timm:ghostnet_100",
    "timm:rexnet_100", "timm:convnext_nano", "timm:repvgg_a0", "timm:mobileone_s0", "timm:dla34",
    "timm:cspresnet50", "timm:hrnet_w18_small", "timm:regnetx_002", "timm:resnet50",
)
KWARGS = {"torchvision:googlenet": dict(aux_logits=False, init_weights=True)}
MAPS = ("smoe", "smoe_scales", "recipro_cam")


def build_model(name: str):
    import torch

    from export.thirdparty import create

    torch.manual_seed(0)
    return create(name, **KWARGS.get(name, {})).eval()


def check_architecture(name: str, size: int, folder: Path, methods=("smoe", "recipro")) -> dict:
    """Both paths for one architecture; returns a row (raises AssertionError on a broken claim)."""
    from edge_saliency import contract
    from edge_saliency.graph import builder
    from export.build import export_module, export_plain

    row = {"arch": name, "size": size}
    model = build_model(name)
    spec = builder.BuildSpec(methods=tuple(methods), input_size=(size, size))
    t0 = time.perf_counter()
    torch_out = folder / "torch.onnx"
    rep = export_module(model, spec, torch_out, name, log=lambda m: None)
    row["torch_s"] = round(time.perf_counter() - t0, 1)
    plain = folder / "plain.onnx"
    onnx.save(export_plain(model, (size, size)), str(plain))
    t0 = time.perf_counter()
    surgery_out = folder / "surgery.onnx"
    srep = builder.surgery(builder.SurgeryOptions(onnx=str(plain), out=str(surgery_out), methods=tuple(methods)),
                           log=lambda m: None)
    row["surgery_s"] = round(time.perf_counter() - t0, 1)
    meta = srep["metadata"]
    row["scales"] = ", ".join(f"{s['channels']}@{s['resolution'][0]}{'*' if s['clamped'] else ''}" for s in meta["scales"])
    row["head"] = srep["head"]
    assert meta["export"]["dynamic_batch"], "the plain export has a dynamic batch axis"
    images = builder.check_images((size, size))
    import onnxruntime as ort

    def run(path):
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        return dict(zip(names, sess.run(names, {contract.INPUT: images})))

    a, b = run(torch_out), run(surgery_out)
    for key in (contract.LOGITS, contract.TARGET, *MAPS):
        assert key in a and key in b, f"{key} missing"
        assert np.array_equal(a[key], b[key]), f"{key} differs between the torch path and the surgery"
    for key in MAPS:
        v = a[key]
        assert np.isfinite(v).all() and v.min() >= 0 and v.max() <= 1, f"{key} outside [0, 1]"
        assert v.std() > 0, f"{key} is constant"
    checks = srep["checks"]
    for key in MAPS:
        assert checks["max_abs_diff_vs_reference"][key] <= checks["tolerance"][key]
    row["max_diff"] = {k: checks["max_abs_diff_vs_reference"][k] for k in MAPS}
    row["tolerance"] = {k: checks["tolerance"][k] for k in MAPS}
    row["ill_conditioned"] = checks["ill_conditioned"]
    row["torch_report_equal"] = rep["checks"]["max_abs_diff_vs_reference"] == checks["max_abs_diff_vs_reference"]
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("archs", nargs="*", help="torchvision:NAME / timm:NAME (default: all)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    names = [a if ":" in a else next(x for x in ARCHS if x.endswith(":" + a)) for a in args.archs] or list(ARCHS)
    rows = []
    for name in names:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                row = check_architecture(name, args.size, Path(tmp))
                row["result"] = "ok"
            except Exception as exc:  # a row per architecture, whatever breaks
                row = {"arch": name, "size": args.size, "result": f"FAIL {type(exc).__name__}: {str(exc)[:200]}",
                       "trace": traceback.format_exc(limit=3)}
        rows.append(row)
        print(f"{name:34} {row['result'][:60]:8} {row.get('head', ''):12} {row.get('scales', '')}", flush=True)
    import onnxruntime
    import torch

    from edge_saliency.runtime import device_info

    lines = ["# Real architectures through the graph builder", "",
             f"Command: `python benchmarks/architectures.py {' '.join(argv if argv is not None else sys.argv[1:])}`"
             .rstrip() + "  ", f"Machine: {device_info.cpu_model()}; torch {torch.__version__}, onnxruntime "
             f"{onnxruntime.__version__}; random weights, {args.size}x{args.size} input.", "",
             "Scales: channels@resolution, `*` = clamped at 0 in the SMOE head (can be negative). Torch and surgery: "
             "both files written, every output identical between them. Max |diff|: maps vs their numpy reference "
             "(bound in brackets where the map's conditioning widened it).", "",
             "| arch | result | head | scales | smoe | smoe_scales | recipro_cam | ill-conditioned | torch s | surgery s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["result"] != "ok":
            lines.append(f"| {r['arch']} | {r['result']} | | | | | | | | |")
            continue

        def fmt(k):
            d, t = r["max_diff"][k], r["tolerance"][k]
            return f"{d:.1e}" + (f" ({t:.0e})" if t > 1e-4 else "")
        lines.append(f"| {r['arch']} | ok | {r['head']} | {r['scales']} | {fmt('smoe')} | {fmt('smoe_scales')} | "
                     f"{fmt('recipro_cam')} | {', '.join(r['ill_conditioned']) or '-'} | {r['torch_s']} | {r['surgery_s']} |")
    ok = sum(r["result"] == "ok" for r in rows)
    lines += ["", f"{ok} of {len(rows)} architectures pass both paths."]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.size == 224 and not args.archs else f"_{args.size}"
    (out / f"architectures{suffix}.md").write_text("\n".join(lines) + "\n")
    (out / f"architectures{suffix}.json").write_text(json.dumps(rows, indent=1) + "\n")
    print("\n".join(lines[-1:]))
    return 0 if ok == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
