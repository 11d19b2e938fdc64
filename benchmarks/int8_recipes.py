"""Compare int8 quantisation recipes for an edge-saliency export (issue 5: top-1 agreement with fp32
>= 95%, map correlation >= 0.9, and int8 should stay faster than fp32 on this CPU).

    python benchmarks/int8_recipes.py [--model fp32.onnx] [--recipes a,b,...] [--runs 40]

Calibration and evaluation images are disjoint: recipes calibrate on edge_saliency.graph.photos.CALIBRATION_PHOTOS
(scikit-image / matplotlib photographs that are not in the report), 22 views each (calibration_views);
they are evaluated on the 5 sample photos x 4 views (20, the tests' set) and on REPORT_PHOTOS x 4
views (56). The row "calib=eval (old)" calibrates on the sample photos themselves, as the first
version did, for reference only (it has seen the 20 evaluation views).
Latency: plain ONNX Runtime sessions, CPU, 2 intra-op threads, spinning off, batch 1, fp32 and
int8 runs interleaved; ratio = median int8 / median fp32 (< 1: int8 faster).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from edge_saliency.graph import photos, precision_report, quantize as Q  # noqa: E402

R = Q.Int8Recipe
OLD = R(range_symmetric=True, bias_correction=False)  # the first version: ORT's percentile default (symmetric ranges)
NOBC = R(bias_correction=False)
RECIPES = {
    "default: bias correction + pct 99.999 asym": R(),
    "old recipe + new calibration set": OLD,
    "old (percentile sym ranges)": OLD,
    "calib=eval (old)": OLD,
    "percentile 99.999 asym ranges": NOBC,
    "percentile 99.99 asym": dataclasses.replace(NOBC, percentile=99.99),
    "percentile 99.9 asym": dataclasses.replace(NOBC, percentile=99.9),
    "minmax": dataclasses.replace(NOBC, calibrate_method="minmax"),
    "minmax moving-average": dataclasses.replace(NOBC, calibrate_method="minmax", moving_average=True),
    "entropy": dataclasses.replace(NOBC, calibrate_method="entropy"),
    "old + depthwise float": dataclasses.replace(OLD, exclude=("depthwise",)),
    "asym + depthwise float": dataclasses.replace(NOBC, exclude=("depthwise",)),
    "asym + reduce_range": dataclasses.replace(NOBC, reduce_range=True),
    "asym + no bias quant": dataclasses.replace(NOBC, quantize_bias=False),
    "asym + QInt8 acts sym": dataclasses.replace(NOBC, activation_type="QInt8", activation_symmetric=True),
    "asym + stem+classifier float": dataclasses.replace(NOBC, exclude=("stem", "classifier")),
    "asym + no pre-process optimisation": dataclasses.replace(NOBC, optimize=False),
    "bias correction + minmax": R(calibrate_method="minmax"),
    "bias correction + sym ranges": R(range_symmetric=True),
    "bias correction + reduce_range": R(reduce_range=True),
    "bias correction + depthwise float": R(exclude=("depthwise",)),
    "bias correction + stem+classifier float": R(exclude=("stem", "classifier")),
    "bias correction + QInt16 weights (accuracy probe)": R(weight_type="QInt16"),
    "dynamic (Gemm only)": None,
}


def _session(path, threads=2):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def latency_ratio(fp32, int8, runs: int) -> dict:
    img = photos.resize(photos.sample_images(("chelsea",), with_views=False)[0], (224, 224))[None]
    a, b = _session(fp32), _session(int8)
    feed = {a.get_inputs()[0].name: img}
    for _ in range(5):
        a.run(None, feed), b.run(None, feed)
    ta, tb = [], []
    for i in range(runs):
        for s, t in ((a, ta), (b, tb)) if i % 2 == 0 else ((b, tb), (a, ta)):
            t0 = time.perf_counter()
            s.run(None, feed)
            t.append(time.perf_counter() - t0)
    ma, mb = float(np.median(ta)), float(np.median(tb))
    return {"fp32_ms": ma * 1e3, "int8_ms": mb * 1e3, "ratio": mb / ma}


def dynamic_gemm(fp32: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    m = onnx.load(str(fp32))
    Q._ensure_node_names(m)
    path = Q.classifier_nodes(m)
    # ORT's dynamic (IntegerOps) quantiser handles MatMul, not Gemm: the classifier Gemm becomes MatMul + Add
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in m.graph.initializer}
    nodes = []
    for n in m.graph.node:
        if n.name in path and n.op_type == "Gemm" and n.input[1] in inits:
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            w = numpy_helper.to_array(inits[n.input[1]]) * attrs.get("alpha", 1.0)
            w = w.T if attrs.get("transB", 0) else w
            m.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w), n.input[1] + "_kn"))
            mid = n.output[0] + "_matmul"
            nodes.append(helper.make_node("MatMul", [n.input[0], n.input[1] + "_kn"], [mid], name=n.name + "_MatMul"))
            nodes.append(helper.make_node("Add", [mid, n.input[2]], list(n.output), name=n.name + "_Add"))
        else:
            nodes.append(n)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    path = Q.classifier_nodes(m)
    gemms = [n.name for n in m.graph.node if n.name in path and n.op_type == "MatMul"]
    # Recipro-CAM's float head reads the classifier's weights: give it its own copy
    Q._unshare_initializers(m, {n.name for n in m.graph.node if n.name not in gemms})
    with tempfile.TemporaryDirectory() as tmp:
        named = Path(tmp) / "named.onnx"
        onnx.save(m, str(named))
        quantize_dynamic(str(named), str(out), weight_type=QuantType.QInt8, per_channel=True, nodes_to_quantize=gemms,
                         op_types_to_quantize=["MatMul"])


def _logits(path, images):
    s = _session(path)
    return [s.run(["logits"], {s.get_inputs()[0].name: photos.resize(i, (224, 224))[None]})[0][0] for i in images]


def logit_stats(ref: list, other: list) -> dict:
    """top-1 agreement and logit SQNR (dB) of ``other`` against ``ref``."""
    agree = float(np.mean([a.argmax() == b.argmax() for a, b in zip(ref, other)]))
    sig = sum(float((a.astype(np.float64) ** 2).sum()) for a in ref)
    err = sum(float(((a.astype(np.float64) - b) ** 2).sum()) for a, b in zip(ref, other))
    return {"agreement": agree, "sqnr_db": 10 * np.log10(sig / max(err, 1e-30))}


def noise_floor(fp32, images) -> dict:
    """How far fp32 itself moves under changes a camera makes all the time: +-1 grey level of
    uniform noise, and JPEG re-encoding at quality 95 (the scale for the int8 rows)."""
    import cv2

    rng = np.random.default_rng(0)
    ref = _logits(fp32, images)
    out = {}
    for name, f in (("fp32 vs fp32 with +-1 grey-level noise",
                     lambda x: np.clip(x.astype(np.int16) + rng.integers(-1, 2, x.shape), 0, 255).astype(np.uint8)),
                    ("fp32 vs fp32 after JPEG q95", lambda x: cv2.imdecode(cv2.imencode(".jpg", x, [cv2.IMWRITE_JPEG_QUALITY, 95])[1], 1))):
        # perturb the model-sized image, as the int8 rows compare on model-sized images
        s = _session(fp32)
        other = [s.run(["logits"], {s.get_inputs()[0].name: f(photos.resize(i, (224, 224)))[None]})[0][0] for i in images]
        out[name] = {"eval20": logit_stats(ref[:20], other[:20]), "eval56": logit_stats(ref, other)}
    return out


def summarise(rep: dict) -> dict:
    c = rep["map_correlation"]
    return {"agreement": rep["top1_agreement"], "n": rep["images"],
            "smoe": c.get("smoe", {}).get("mean"), "recipro": c.get("recipro_cam", {}).get("mean"),
            "scales_min": min(v["mean"] for k, v in c.items() if k.startswith("smoe_scales"))}


CAL_SHORT = {"default disjoint set": "110 (5 photos x 22)",
             "earlier 44-image set (11 images incl. cell/page/text/logo/colorwheel/microaneurysms x 4 views)": "44 (11 images x 4)", "eval photos (leaky)": "the 20 eval views (leaky)",
             "none": "none"}


def write_md(path: Path, meta: dict, floor: dict, rows: list) -> None:
    L = ["# int8 recipes for EfficientNet-Lite0 224 (edge-saliency default export)", "",
         f"- command: `{meta['command']}`", f"- date: {meta['date']}", f"- machine: {meta['machine']}",
         f"- calibration images (never evaluated): {meta['calibration_images']}",
         f"- evaluation, 20: {meta['eval20']}", f"- evaluation, 56: {meta['eval56']}",
         "- agreement = top-1 of int8 == top-1 of fp32; SQNR = logit signal-to-quantisation-noise (56 images); "
         "map correlations = mean Pearson r on the 20 views (smoe_scales: the worst scale); "
         "latency ratio = median int8 / median fp32, plain ORT, 2 threads, spinning off, batch 1, interleaved "
         "(< 1: int8 faster; the machine is shared, so +-10% is noise)", "",
         "| recipe | calibration | agree 20 | agree 56 | logit SQNR dB | smoe r | recipro r | smoe_scales min r | latency ratio | int8 / fp32 ms |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    for k, v in floor.items():
        L.append(f"| *reference: {k}* | | {v['eval20']['agreement']:.0%} | {v['eval56']['agreement']:.1%} | "
                 f"{v['eval56']['sqnr_db']:.1f} | | | | | |")
    for r in rows:
        a, b, t = r["eval20"], r["eval56"], r["latency"]
        L.append(f"| {r['recipe']} | {CAL_SHORT.get(r['calibration'], r['calibration'])} | {a['agreement']:.0%} | {b['agreement']:.1%} | {b.get('sqnr_db', float('nan')):.1f} | "
                 f"{a['smoe']:.3f} | {a['recipro']:.3f} | {a['scales_min']:.3f} | {t['ratio']:.2f} | "
                 f"{t['int8_ms']:.1f} / {t['fp32_ms']:.1f} |")
    L += ["", "Settings of each row: see the JSON next to this file (`settings`)."]
    path.write_text("\n".join(L) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", help="fp32 edge-saliency export (default: export the default model to a temp dir)")
    p.add_argument("--recipes", help="comma-separated names (default: all)", default=None)
    p.add_argument("--runs", type=int, default=40, help="interleaved latency runs per model")
    p.add_argument("--json", default="benchmarks/results/int8_recipes.json")
    p.add_argument("--md", default="benchmarks/results/int8_recipes.md")
    args = p.parse_args(argv)
    import onnxruntime

    tmp = Path(tempfile.mkdtemp(prefix="int8_recipes_"))
    fp32 = Path(args.model) if args.model else tmp / "fp32.onnx"
    if not args.model:
        from export.build import ExportOptions, export_from_options
        export_from_options(ExportOptions(out=str(fp32)), log=lambda m: None)
    calib = photos.calibration_images()
    calib_eval = photos.sample_images(photos.EVAL_PHOTOS)
    eval20, eval56 = photos.sample_images(photos.EVAL_PHOTOS), photos.sample_images(photos.REPORT_PHOTOS)
    names = args.recipes.split(",") if args.recipes else list(RECIPES)
    ref56 = _logits(fp32, eval56)
    floor = noise_floor(fp32, eval56)
    for k, v in floor.items():
        print(f"{k:36s} agree20 {v['eval20']['agreement']:.0%} agree56 {v['eval56']['agreement']:.1%} "
              f"logit SQNR {v['eval56']['sqnr_db']:.1f} dB", flush=True)
    prev = {}
    if Path(args.json).is_file():
        prev = {r["recipe"]: r for r in json.loads(Path(args.json).read_text()).get("rows", [])}
    rows = []
    for name in names:
        recipe = RECIPES[name]
        out = tmp / f"int8_{len(rows)}.onnx"
        t0 = time.perf_counter()
        if recipe is None:
            dynamic_gemm(fp32, out)
        else:
            images = calib_eval if name.startswith("calib=eval") else calib
            Q.convert(fp32, out, "int8", log=lambda m: None, recipe=recipe) if images is calib else None
            if images is calib_eval:
                src = onnx.load(str(fp32))
                model, _ = Q.quantize_int8(src, images, progress=None, recipe=recipe)
                onnx.save(model, str(out))
        secs = time.perf_counter() - t0
        r20 = summarise(precision_report.accuracy_report(fp32, out, eval20, threads=2))
        r56 = summarise(precision_report.accuracy_report(fp32, out, eval56, threads=2))
        r56["sqnr_db"] = logit_stats(ref56, _logits(out, eval56))["sqnr_db"]
        lat = latency_ratio(fp32, out, args.runs)
        row = {"recipe": name, "settings": recipe.describe() if recipe else {"quantize_dynamic": "Gemm/MatMul only"},
               "calibration": "eval photos (leaky)" if name.startswith("calib=eval") else ("none" if recipe is None else
                                                                                           "default disjoint set"),
               "eval20": r20, "eval56": r56, "latency": lat, "quantize_s": secs}
        rows.append(row)
        prev[name] = row
        save(args, meta(calib), floor, [prev[n] for n in RECIPES if n in prev])
        print(f"{name:36s} agree20 {r20['agreement']:.0%} agree56 {r56['agreement']:.1%} smoe {r20['smoe']:.3f} "
              f"recipro {r20['recipro']:.3f} SQNR {r56['sqnr_db']:.1f} dB scales_min {r20['scales_min']:.3f} ratio {lat['ratio']:.2f} "
              f"({lat['int8_ms']:.1f}/{lat['fp32_ms']:.1f} ms)", flush=True)
    return 0


def meta(calib) -> dict:
    import onnxruntime

    return {"date": datetime.datetime.now().isoformat(timespec="seconds"), "command": " ".join(["python"] + sys.argv),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared), "
                       f"onnxruntime {onnxruntime.__version__}",
            "calibration_images": f"{len(calib)} = {', '.join(photos.CALIBRATION_PHOTOS)} x 22 views (photo, flip, 2 crops, 3x3 half-size crops and their flips)",
            "eval20": f"{', '.join(photos.EVAL_PHOTOS)} x 4 views", "eval56": f"{', '.join(photos.REPORT_PHOTOS)} x 4 views"}


def save(args, meta: dict, floor: dict, rows: list) -> None:
    Path(args.json).write_text(json.dumps({"meta": meta, "noise_floor": floor, "rows": rows}, indent=1))
    write_md(Path(args.md), meta, floor, rows)


if __name__ == "__main__":
    sys.exit(main())
