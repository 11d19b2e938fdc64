"""Variants of the SMOE head side by side (one process, round robin), per network and engine.

    python benchmarks/smoe_normaliser_ab.py --runs 200 --variants a,b,c
    python benchmarks/smoe_normaliser_ab.py --nets efficientnet_lite0 --perf   # + OpenVINO per-node profile

Each variant is the default export (SMOE on every scale end + Recipro-CAM) with a different
formulation of the SMOE normaliser / statistic, built by the graph builder (so each passes the
export check against the float64 reference); all run round robin with the plain model
(``--methods none``) under ONNX Runtime and OpenVINO. ``--perf`` prints, per variant, OpenVINO's
runtime model: layers by type and exec type, and the per-layer times of the added nodes.
The variants (see VARIANTS):
  a  erf per scale, resize, concat, then 0.5 + 0.5 erf once on the concat (the default before this A/B)
  b  0.5 + 0.5 erf per scale before the resize (mean division and Pow kept)
  c  0.5 + 0.5 erf per scale after the resize, before the concat (kept: smoe.build does this now)
  d  c + the statistic with products of up to 8 ratios (each scaled by an exact 2**e to stay in
     float32's range) instead of 4: half the elements through Log, which OpenVINO runs as a
     reference kernel (not kept: no consistent gain, see the report of issue 13)
  cur  whatever edge_saliency/methods/smoe.py does now
Wall-clock figures on a shared machine move by several per cent between runs: compare variants
within one run only, and trust a difference only where repeated runs agree.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks import harness  # noqa: E402
from benchmarks.saliency_overhead import NETS, NO_SPIN  # noqa: E402
from edge_saliency.methods import smoe  # noqa: E402

_ORIG = {"build": smoe.build, "smoe_scale_flat": smoe.smoe_scale_flat, "smoe_scale": smoe.smoe_scale}


def _build_with(place: str):
    """smoe.build with the 0.5 + 0.5 erf at ``place``: 'concat' | 'pre_resize' | 'post_resize'."""
    def build(ctx):
        gw, spec = ctx.gw, ctx.spec
        eps = spec.smoe_eps
        stats = [smoe.smoe_scale(gw, e.tensor, e.channels, e.size, not e.nonnegative, eps,
                                 smoe.smallest_ratio(ctx.values.get(e.tensor), eps)) for e in ctx.scale_ends]
        normed = [smoe.gaussian_erf(gw, st, e.size[0] * e.size[1]) for st, e in zip(stats, ctx.scale_ends)]
        if place == "pre_resize":
            normed = [smoe.half_plus_half(gw, n) for n in normed]
        maps = [smoe.resize_bilinear(gw, m, e.size, ctx.map_size) for m, e in zip(normed, ctx.scale_ends)]
        if place == "post_resize":
            maps = [smoe.half_plus_half(gw, m) for m in maps]
        if place == "concat":
            smoe.half_plus_half(gw, gw.op("Concat", maps, "smoe_stacked", axis=1), "smoe_scales")
        else:
            gw.op("Concat", maps, outputs=["smoe_scales"], axis=1)
        w = (np.asarray(ctx.smoe_weights, dtype=np.float64) / sum(ctx.smoe_weights)).astype(np.float32).reshape(1, -1, 1, 1)
        gw.op("Conv", ["smoe_scales", gw.const(w, "smoe_weights")], outputs=["smoe"], kernel_shape=[1, 1])
        return {"statistic": "smoe_scale", "normaliser": "gaussian_cdf", "weights": list(ctx.smoe_weights),
                "map_size": list(ctx.map_size), "eps": spec.smoe_eps}
    return build


PRODUCT_MAX = 1e38


def _scaled_group(channels: int, ratio_min: float, largest: int = 8) -> tuple[int, int]:
    """(g, e): products of g ratios scaled by k = 2**e each (exact), the smallest k that keeps a
    product of g ratio_min's above PRODUCT_MIN while one of g C's stays below PRODUCT_MAX."""
    best = (1, 0)
    g = 1
    while g * 2 <= largest and channels % (g * 2) == 0:
        g *= 2
        e = max(0, math.ceil(math.log2(smoe.PRODUCT_MIN ** (1 / g) / ratio_min)))
        if (2.0 ** e * channels) ** g <= PRODUCT_MAX:
            best = (g, e)
        else:
            break
    return best


def _flat_scaled(gw, a, channels, clamp, eps, ratio_min=1.0, largest=8):
    """smoe_scale_flat with products of up to 8 ratios, each ratio scaled by 2**e (exact)."""
    g, e = _scaled_group(channels, ratio_min, largest)
    if clamp:
        a = gw.op("Relu", [a], "smoe_clamp")
    x = gw.reshape(gw.op("Add", [a, gw.const(np.float32(eps), "smoe_eps")], "smoe_x"), [0, channels, -1], "smoe_flat")
    k = 2.0 ** e
    mean_w = np.full((1, channels), 1.0 / (channels * k), dtype=np.float32)
    m = gw.op("MatMul", [gw.const(mean_w, "smoe_mean_w"), x], "smoe_mean")  # [N, 1, P]: m / k
    r = gw.op("Mul", [x, gw.op("Reciprocal", [m], "smoe_inv_mean")], "smoe_ratio")  # k r
    log_p, c = smoe.log_of_products(gw, r, channels, g)
    # stat = m (-mean log2 r) = (m/k) (k e - k mean log2 (k r))
    sum_w = np.full((1, c), -k / (channels * math.log(2.0)), dtype=np.float32)
    t = gw.op("MatMul", [gw.const(sum_w, "smoe_logmean_w"), log_p], "smoe_neg_mean_log2")
    if e:
        t = gw.op("Add", [t, gw.const(np.float32(k * e), "smoe_k_e")], "smoe_neg_mean_log2_k")
    return gw.op("Mul", [m, t], "smoe_flat_stat")


def _scale_4d(gw, a, channels, size, clamp, eps, ratio_min=1.0):
    """smoe_scale on [N, C, H, W] throughout (ReduceMean/ReduceSum over the channels, no Reshape to
    [N, C, H*W]): OpenVINO can keep its blocked layout instead of reordering to planar."""
    if clamp:
        a = gw.op("Relu", [a], "smoe_clamp")
    x = gw.op("Add", [a, gw.const(np.float32(eps), "smoe_eps")], "smoe_x")
    m = gw.reduce("ReduceMean", x, [1], hint="smoe_mean")
    r = gw.op("Mul", [x, gw.op("Reciprocal", [m], "smoe_inv_mean")], "smoe_ratio")
    log_p, c = smoe.log_of_products(gw, r, channels, smoe.group_size(channels, ratio_min))
    s = gw.reduce("ReduceSum", log_p, [1], hint="smoe_sum_log")
    t = gw.op("Mul", [s, gw.const(np.float32(-1.0 / (channels * math.log(2.0))), "smoe_logmean_w")], "smoe_neg_mean_log2")
    return gw.op("Mul", [m, t], "smoe_stat")


VARIANTS = {
    "a": {"build": _build_with("concat")},
    "b": {"build": _build_with("pre_resize")},
    "c": {"build": _build_with("post_resize")},
    "d": {"build": _build_with("post_resize"), "smoe_scale_flat": _flat_scaled},
    "e": {"build": _build_with("post_resize"), "smoe_scale": _scale_4d},
    "cur": {},  # whatever edge_saliency/methods/smoe.py does now
}


def plain_onnx(net: str, cache: Path):
    """The torch export of ``net`` (cached), mean, std."""
    import onnx

    path = cache / f"{net}_torch.onnx"
    if NETS[net] == "zoo":
        from export import zoo

        entry = zoo.get(net)
        mean, std = entry.mean, entry.std
    else:
        mean, std = None, None
    if not path.exists():
        import torch

        from export.build import export_plain
        from export.thirdparty import create

        if NETS[net] == "zoo":
            model = entry.build(True, (224, 224))
        else:
            torch.manual_seed(0)
            model = create(NETS[net])
        model.eval()
        onnx.save(export_plain(model, (224, 224)), path)
    return onnx.load(path), mean, std


def build_variant(plain, mean, std, methods, out: Path, net: str, variant: str | None) -> dict:
    from edge_saliency.graph import builder
    from edge_saliency.graph.builder import BuildSpec

    for k, v in _ORIG.items():
        setattr(smoe, k, v)
    for k, v in (VARIANTS[variant] if variant else {}).items():
        setattr(smoe, k, v)
    try:
        spec = BuildSpec(methods=methods, mean=tuple(mean) if mean else None, std=tuple(std) if std else None,
                         layout="nchw")
        return builder.build_file(plain, spec, out, net, source="torch", log=lambda m: None)
    finally:
        for k, v in _ORIG.items():
            setattr(smoe, k, v)


def ov_perf(path: Path, frame, threads: int, runs: int = 50) -> dict:
    """OpenVINO's runtime model of ``path``: layers by type/exec type; per-layer time of added nodes."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU",
                                  {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
                                   "INFERENCE_NUM_THREADS": threads, "PERF_COUNT": True})
    rt = compiled.get_runtime_model()
    kinds = Counter()
    for op in rt.get_ops():
        info = op.get_rt_info()
        kinds[(str(info["layerType"].astype(str)), str(info["runtimePrecision"].astype(str)))] += 1
    req = compiled.create_infer_request()
    acc = defaultdict(float)
    types = {}
    for i in range(runs + 10):
        req.infer({"image": frame})
        if i >= 10:
            for p in req.profiling_info:
                acc[p.node_name] += p.real_time.total_seconds() * 1e6 / runs
                types[p.node_name] = (p.node_type, p.exec_type)
    return {"layers": len(rt.get_ops()), "kinds": kinds, "us": acc, "types": types}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--nets", default=",".join(NETS))
    ap.add_argument("--variants", default="a,b,c")
    ap.add_argument("--engines", default="onnxruntime,openvino")
    ap.add_argument("--perf", action="store_true")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "edge-saliency-ab-cache"))
    args = ap.parse_args(argv)
    from edge_saliency import samples
    from edge_saliency.runtime import engines

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    frame = cv2.resize(samples.photo("chelsea"), (224, 224), interpolation=cv2.INTER_AREA)[None]
    variants = args.variants.split(",")
    engs = args.engines.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for net in args.nets.split(","):
            plain, mean, std = plain_onnx(net, cache)
            paths = {"plain": folder / f"{net}_plain.onnx"}
            build_variant(plain, mean, std, (), paths["plain"], net, None)
            for v in variants:
                paths[v] = folder / f"{net}_{v}.onnx"
                rep = build_variant(plain, mean, std, ("smoe", "recipro"), paths[v], net, v)
                diffs = rep["checks"]["max_abs_diff_vs_reference"]
                print(f"{net} {v}: max |diff| vs reference " + ", ".join(f"{k} {d:.1e}" for k, d in diffs.items()),
                      flush=True)
            runners = {}
            for kind, path in paths.items():
                if "onnxruntime" in engs:
                    e = engines.OnnxRuntimeEngine(str(path), "cpu", args.threads, NO_SPIN)
                    runners[f"onnxruntime {kind}"] = lambda e=e: e.run(e.outputs, {"image": frame})
                if "openvino" in engs:
                    e = engines.OpenVINOEngine(str(path), "CPU", args.threads)
                    runners[f"openvino {kind}"] = lambda e=e: e.run(e.outputs, {"image": frame})
            rows = harness.summary(harness.interleaved(runners, args.runs))
            med = {r["variant"]: r["median_ms"] for r in rows}
            print(f"## {net}  ({args.runs} rounds)\n" + harness.table(rows))
            for eng in engs:
                print(f"  {eng}: " + ", ".join(f"{v} {med[f'{eng} {v}'] / med[f'{eng} plain']:.3f}x" for v in variants))
            if args.perf:
                for kind, path in paths.items():
                    p = ov_perf(path, frame, args.threads)
                    added = {n: t for n, t in p["us"].items() if "edge_saliency" in n or n in ("smoe", "smoe_scales")}
                    total = sum(p["us"].values())
                    print(f"  OV {kind}: {p['layers']} layers, total {total:.0f} us, added nodes {sum(added.values()):.0f} us")
                    if kind != "plain":
                        by_type = defaultdict(float)
                        for n, t in added.items():
                            by_type[p["types"][n]] += t
                        for (nt, et), t in sorted(by_type.items(), key=lambda kv: -kv[1])[:14]:
                            print(f"      {nt:<16} {et:<28} {t:7.1f} us")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
