"""What the in-graph maps cost, per network and engine: the default export (SMOE on every scale end
+ Recipro-CAM) against the same network exported with ``--methods none``, side by side.

    python benchmarks/saliency_overhead.py                    # 300 interleaved rounds, 2 threads
    python benchmarks/saliency_overhead.py --runs 800 --nets efficientnet_lite0

Networks: the pretrained EfficientNet-Lite0 (the default model), torchvision's ResNet-50 and timm's
MobileNetV3-Large (random weights: speed does not depend on them), all at 224x224. Engines: ONNX
Runtime CPU (intra-op spinning off, as `bench` measures) and OpenVINO CPU (LATENCY hint). For each
network the four sessions run round robin in one process on the same photograph, so machine noise
hits them alike; the figures are medians, the ratios ratios of medians.

Then the kernel-level breakdown of the default export under ONNX Runtime (its profiler, per node,
grouped by what the node belongs to: the network, preprocessing, the SMOE statistic, its
normaliser, the resize and combination, Recipro-CAM) and the layout conversions (NCHWc reorders)
in the graph ONNX Runtime actually runs (``optimized_model_filepath``), for the maps model and the
plain one. Writes benchmarks/results/saliency_overhead.md and .json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks import harness  # noqa: E402

NETS = {"efficientnet_lite0": "zoo", "resnet50": "torchvision:resnet50", "mobilenetv3": "timm:mobilenetv3_large_100"}
TARGETS = {"onnxruntime": 1.05, "openvino": 1.10}
NO_SPIN = {"session.intra_op.allow_spinning": "0"}
GROUPS = (  # node-name hints of the builder -> what they are
    ("pre_", "preprocessing"), ("bgr_to_rgb", "preprocessing"),
    ("smoe_", "SMOE statistic"), ("cdf_", "SMOE normaliser"), ("gam_", "SMOE normaliser"),
    ("resize", "SMOE resize + combination"), ("smoe", "SMOE resize + combination"),
    ("recipro", "Recipro-CAM"), ("head", "Recipro-CAM"), ("target", "Recipro-CAM"), ("bias", "Recipro-CAM"),
    ("top1", "logits / target"), ("argmax", "logits / target"),
)


KINDS = (("plain", ()), ("maps", ("smoe", "recipro")))


def export_pair(net: str, folder: Path, kinds=KINDS) -> dict[str, Path]:
    """``net`` exported once per (name, methods) of ``kinds`` (default: plain and the default maps)."""
    import torch

    from edge_saliency.graph.builder import BuildSpec
    from export import zoo
    from export.build import export_module
    from export.thirdparty import create

    if NETS[net] == "zoo":
        entry = zoo.get(net)
        model, mean, std = entry.build(True, (224, 224)), entry.mean, entry.std
    else:
        torch.manual_seed(0)
        model, mean, std = create(NETS[net]), None, None
    paths = {}
    for kind, methods in kinds:
        paths[kind] = folder / f"{net}_{kind}.onnx"
        export_module(model, BuildSpec(methods=methods, input_size=(224, 224), mean=mean, std=std), paths[kind],
                      net, log=lambda m: None)
    return paths


def group_of(node_name: str) -> str:
    if not node_name.startswith("edge_saliency/"):
        return "network"
    hint = node_name[len("edge_saliency/"):]
    for prefix, group in GROUPS:
        if hint.startswith(prefix):
            return group
    return "other added nodes"


def profile(path: Path, frame: np.ndarray, threads: int, runs: int, folder: Path) -> dict:
    """ms per frame per group of nodes, from ONNX Runtime's profiler; and the reorders it inserts."""
    import onnx
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.enable_profiling = True
    so.profile_file_prefix = str(folder / f"prof_{path.stem}")
    so.optimized_model_filepath = str(folder / f"opt_{path.stem}.onnx")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    for _ in range(10):
        sess.run(None, {"image": frame})
    prof_start = len(list(folder.glob(f"prof_{path.stem}*")))
    for _ in range(runs):
        sess.run(None, {"image": frame})
    trace = json.loads(Path(sess.end_profiling()).read_text())
    per_group, per_op = defaultdict(float), defaultdict(float)
    for ev in trace:
        if ev.get("cat") != "Node" or not ev.get("name", "").endswith("_kernel_time"):
            continue
        node = ev["name"][: -len("_kernel_time")]
        per_group[group_of(node)] += ev["dur"]
        per_op[ev.get("args", {}).get("op_name", "?")] += ev["dur"]
    total_runs = runs + 10  # the profiler records the warm-up runs too
    opt = onnx.load(so.optimized_model_filepath)
    ops = Counter(n.op_type for n in opt.graph.node)
    reorders = {k: v for k, v in ops.items() if k.startswith("Reorder")}
    added_reorders = sum(1 for n in opt.graph.node if n.op_type.startswith("Reorder") and
                         any("edge_saliency/" in t for t in list(n.input) + list(n.output)))
    del prof_start
    return {"ms_per_frame": {g: v / 1e3 / total_runs for g, v in sorted(per_group.items(), key=lambda kv: -kv[1])},
            "top_ops_ms": {k: v / 1e3 / total_runs for k, v in sorted(per_op.items(), key=lambda kv: -kv[1])[:12]},
            "reorders": reorders, "reorders_touching_added_nodes": added_reorders}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--nets", default=",".join(NETS))
    ap.add_argument("--profile-runs", type=int, default=100)
    args = ap.parse_args(argv)
    from edge_saliency.runtime import engines
    from edge_saliency import samples

    frame = cv2.resize(samples.photo("chelsea"), (224, 224), interpolation=cv2.INTER_AREA)[None]
    results, lines = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for net in args.nets.split(","):
            print(f"exporting {net}", flush=True)
            paths = export_pair(net, folder)
            runners = {}
            for kind, path in paths.items():
                ort_engine = engines.OnnxRuntimeEngine(str(path), "cpu", args.threads, NO_SPIN)
                runners[f"onnxruntime {kind}"] = lambda e=ort_engine: e.run(e.outputs, {"image": frame})
                try:
                    ov_engine = engines.OpenVINOEngine(str(path), "CPU", args.threads)
                    runners[f"openvino {kind}"] = lambda e=ov_engine: e.run(e.outputs, {"image": frame})
                except Exception as exc:  # openvino is an optional extra
                    print(f"  openvino unavailable: {exc}", flush=True)
            times = harness.interleaved(runners, args.runs)
            rows = harness.summary(times)
            med = {r["variant"]: r["median_ms"] for r in rows}
            ratios = {eng: med[f"{eng} maps"] / med[f"{eng} plain"] for eng in ("onnxruntime", "openvino")
                      if f"{eng} maps" in med}
            spread = {r["variant"]: (r["p90_ms"] - r["p10_ms"]) / r["median_ms"] for r in rows}
            prof = {kind: profile(path, frame, args.threads, args.profile_runs, folder) for kind, path in paths.items()}
            results[net] = {"rows": rows, "ratios": ratios, "spread_p10_p90": spread, "profile": prof}
            best = min(med[f"{e} maps"] for e in ("onnxruntime", "openvino") if f"{e} maps" in med)
            lines += [f"## {net}", "", harness.table(rows, "ratio"), ""]
            lines += ["- maps / plain: " + ", ".join(f"**{eng} {r:.3f}x** (target {TARGETS[eng]:.2f}x)"
                                                       for eng, r in ratios.items()),
                      f"- best engine with maps: {best:.2f} ms; p10-p90 spread {min(spread.values()):.0%}-"
                      f"{max(spread.values()):.0%} of the median", ""]
            p = prof["maps"]
            lines += ["ONNX Runtime kernel time per frame (default export, profiler):", "",
                      "| part | ms/frame |", "|---|---:|"]
            lines += [f"| {g} | {v:.3f} |" for g, v in p["ms_per_frame"].items()]
            lines += ["", f"Reorders (NCHWc layout conversions) in the graph ORT runs: maps {p['reorders']}, "
                          f"plain {prof['plain']['reorders']}; touching added nodes: "
                          f"{p['reorders_touching_added_nodes']}", ""]
            print("\n".join(lines[-20:]), flush=True)
    body = "\n".join(lines) + (f"\n{args.runs} interleaved rounds per variant, batch 1, {args.threads} threads, "
                               "ORT intra-op spinning off, OpenVINO LATENCY hint.")
    harness.write_results("saliency_overhead", "In-graph maps: cost per network and engine", body, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
