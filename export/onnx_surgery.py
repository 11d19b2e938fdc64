"""Add single-pass saliency to a finished ONNX classifier, without torch (graph surgery).

    edge-saliency export --onnx their_classifier.onnx --out with_saliency.onnx [--labels labels.txt]
        [--mean 123.7,116.3,103.5 --std 58.4,57.1,57.4 --color rgb --layout nchw]
        [--target-node NAME] [--scale-nodes N1,N2,...]

The result follows the contract of a torch export (DESIGN.md): input ``image`` uint8 [N, H, W, 3]
BGR wrapped around the model's own float input (cast, colour order, mean/std, layout), outputs
logits, target_class, smoe, smoe_scales, recipro_cam and the model's own outputs unchanged, and the
same metadata. Stages: surgery_discovery (find input, scale ends, head), surgery_smoe and
surgery_recipro (the methods as ONNX nodes), then the checks: onnx.checker, strict shape
inference, the original outputs bit-for-bit equal to the original model's on real photographs,
and finite saliency maps in [0, 1]. Nothing is written unless every check passes.

Uses numpy, onnx and onnxruntime only: it never imports torch.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

import edge_saliency
from edge_saliency import contract
from edge_saliency.errors import UserError
from edge_saliency.labels import imagenet_labels, read_labels
from export import graph_passes, surgery_recipro, surgery_smoe
from export.model_file import check_writable, write_atomic
from export.surgery_discovery import Analysis, analyse
from export.surgery_graph import GraphWriter, default_opset

SURGERY_METHODS = ("smoe", "recipro")  # the gradient CAMs are torch-export only for now

MIN_OPSET = 13  # older models are converted to this first (axes as inputs, optional Resize inputs)
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
MODEL_INPUT = "edge_saliency/model_input"  # the original input's new name where it was called "image"


class SurgeryCheckError(UserError):
    """The modified graph failed a check; nothing was written."""


@dataclass
class SurgeryOptions:
    onnx: str
    out: str | None = None
    labels: str | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    color: str = "rgb"  # the channel order the model expects
    layout: str | None = None  # of the model's input; None: from its shape
    input_size: tuple[int, int] | None = None  # only for models with a dynamic spatial size
    target_node: str | None = None
    scale_nodes: list[str] | None = None
    methods: tuple[str, ...] = ("smoe", "recipro")
    smoe_weights: list[float] | None = None
    normaliser: str = "gaussian"
    smoe_eps: float = 1e-3  # as SaliencyConfig.smoe_eps (the paper's 1e-7 is ill-conditioned near 0)
    recipro_score: str = "logit"
    recipro_variant: str = "onehot"
    map_fraction: int = 4
    class_input: bool = False


def load_model(path: str) -> onnx.ModelProto:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"ONNX file not found: {path}")
    try:
        return onnx.load(str(p))
    except Exception as exc:
        raise UserError(f"cannot read {path} as an ONNX model: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}") from exc


def _at_min_opset(model: onnx.ModelProto, log) -> onnx.ModelProto:
    opset = default_opset(model)
    if opset >= MIN_OPSET:
        return model
    log(f"note: converting the model from opset {opset} to {MIN_OPSET}")
    try:
        from onnx import version_converter

        return version_converter.convert_version(model, MIN_OPSET)
    except Exception as exc:
        raise UserError(f"the model uses opset {opset} and cannot be converted to {MIN_OPSET}: "
                        f"{str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}; re-export it "
                        f"with opset >= {MIN_OPSET}") from exc


def _preprocessing_from_metadata(model: onnx.ModelProto) -> dict:
    """mean / std / color from metadata the model already carries (ours, or plain keys)."""
    props = {p.key: p.value for p in model.metadata_props}
    found = {}
    ours = contract.decode_metadata(props).get("input")
    if isinstance(ours, dict):
        found.update({k: ours[k] for k in ("mean", "std") if k in ours})
    for key in ("mean", "std"):
        if key in props and key not in found:
            text = props[key].strip().strip("[]")
            try:
                vals = [float(v) for v in text.replace(",", " ").split()]
            except ValueError:
                continue
            if len(vals) == 3:
                found[key] = vals
    return found


def _rename_tensor(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                _rename_tensor(a.g, old, new)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for g in a.graphs:
                    _rename_tensor(g, old, new)


def _labels(opts: SurgeryOptions, k: int) -> list[str]:
    if opts.labels:
        labels = read_labels(opts.labels)
    elif k == 1000:
        labels = imagenet_labels()
    else:
        labels = [f"class_{i}" for i in range(k)]
    if len(labels) != k:
        raise UserError(f"{len(labels)} labels for a model with {k} classes")
    return labels


def _check_options(opts: SurgeryOptions) -> None:
    if opts.color not in ("rgb", "bgr"):
        raise UserError(f"--color wants rgb or bgr (the order the model expects), got {opts.color!r}")
    if opts.normaliser not in surgery_smoe.NORMALISERS:
        raise UserError(f"normaliser {opts.normaliser!r} is not available with --onnx; choose from: "
                        f"{', '.join(surgery_smoe.NORMALISERS)}")
    if opts.recipro_score not in surgery_recipro.SCORES:
        raise UserError(f"unknown Recipro-CAM score {opts.recipro_score!r}; choose from: {', '.join(surgery_recipro.SCORES)}")
    if opts.recipro_variant not in surgery_recipro.VARIANTS:
        raise UserError(f"unknown Recipro-CAM variant {opts.recipro_variant!r}; choose from: {', '.join(surgery_recipro.VARIANTS)}")
    if opts.map_fraction < 1:
        raise UserError("--map-fraction must be at least 1")
    if opts.smoe_eps <= 0:
        raise UserError("--smoe-eps must be positive")
    if opts.std and min(opts.std) <= 0:
        raise UserError("--std values must be positive")
    bad = [m for m in opts.methods if m not in SURGERY_METHODS]
    if bad:
        why = " with --onnx (the torch export has it)" if bad[0] in contract.METHODS else ""
        raise UserError(f"method {bad[0]!r} is not available{why}; choose from: {', '.join(SURGERY_METHODS)}"
                        if why else f"unknown method {bad[0]!r}; choose from: {', '.join(SURGERY_METHODS)}")


def output_names(opts: SurgeryOptions) -> list[str]:
    names = [contract.LOGITS, contract.TARGET]
    for m in contract.METHODS:
        if m in opts.methods:
            names += contract.METHOD_OUTPUTS[m]
    return names


def add_saliency(model: onnx.ModelProto, opts: SurgeryOptions, log=print) -> tuple[onnx.ModelProto, Analysis, dict]:
    """The surgery itself: returns (new model, what was found, metadata without 'export')."""
    _check_options(opts)
    model = _at_min_opset(model, log)
    an = analyse(model, opts.layout, opts.input_size, opts.scale_nodes, opts.target_node,
                 need_head="recipro" in opts.methods)
    ours = output_names(opts)
    tensors = set(an.outputs) | {o for n in model.graph.node for o in n.output}
    clash = [o for o in ours if o in tensors and not (o == contract.LOGITS and an.head.logits == o)]
    if clash:
        raise UserError(f"the model already has a tensor named {clash[0]!r}, which edge-saliency adds; rename it first")
    labels = _labels(opts, an.num_classes)
    meta_pre = _preprocessing_from_metadata(model)
    mean = tuple(opts.mean or meta_pre.get("mean") or IMAGENET_MEAN)
    std = tuple(opts.std or meta_pre.get("std") or IMAGENET_STD)
    if not opts.mean and "mean" not in meta_pre:
        log(f"note: no --mean/--std given and none in the model's metadata: assuming ImageNet's {IMAGENET_MEAN} / {IMAGENET_STD}")
    n_ends = len(an.scale_ends)
    weights = list(opts.smoe_weights or [1.0] * n_ends)
    if len(weights) != n_ends:
        raise UserError(f"--smoe-weights has {len(weights)} values for {n_ends} scale ends")
    if min(weights) < 0 or sum(weights) <= 0:
        raise UserError("--smoe-weights must be non-negative with a positive sum")

    new = onnx.ModelProto()
    new.CopyFrom(model)
    g = new.graph
    opset = default_opset(new)
    img = an.input
    model_input = img.name
    if img.name == contract.INPUT or img.name == contract.CLASS_INPUT:
        model_input = MODEL_INPUT
        _rename_tensor(g, img.name, model_input)
        for o in g.output:
            if o.name == img.name:
                raise UserError(f"the model passes its input {img.name!r} straight to an output; nothing to explain")
    gw = GraphWriter(g, opset)
    gw.taken.update(ours + [contract.INPUT, contract.CLASS_INPUT])
    n_before = len(g.node)

    # preprocessing: uint8 BGR NHWC -> the model's float input (as SaliencyExport.preprocess)
    h, w = img.size
    std32 = np.asarray(std, dtype=np.float32)
    scale = (np.float32(1.0) / std32).reshape(1, 1, 1, 3)
    shift = (-np.asarray(mean, dtype=np.float32) / std32).reshape(1, 1, 1, 3)
    x = gw.op("Cast", [contract.INPUT], "pre_float", to=TensorProto.FLOAT)
    if opts.color == "rgb":
        x = gw.op("Gather", [x, gw.ints([2, 1, 0], "bgr_to_rgb")], "pre_rgb", axis=3)
    x = gw.op("Add", [gw.op("Mul", [x, gw.const(scale, "pre_scale")], "pre_scaled"), gw.const(shift, "pre_shift")],
              "pre_norm", outputs=None if img.layout == "nchw" else [model_input])
    if img.layout == "nchw":
        gw.op("Transpose", [x], outputs=[model_input], perm=[0, 3, 1, 2])
    pre_nodes = list(g.node[n_before:])
    del g.node[n_before:]
    rest = list(g.node)
    del g.node[:]
    g.node.extend(pre_nodes + rest)

    inputs = [helper.make_tensor_value_info(contract.INPUT, TensorProto.UINT8, [img.batch, h, w, 3])]
    keep_inputs = [i for i in g.input if i.name != img.name]
    del g.input[:]
    g.input.extend(inputs + keep_inputs)

    # outputs
    logits = an.head.logits
    if logits != contract.LOGITS:
        gw.op("Identity", [logits], outputs=[contract.LOGITS])
    target = gw.op("ArgMax", [contract.LOGITS], outputs=[contract.TARGET if not opts.class_input else gw.fresh("top1")],
                   axis=1, keepdims=0)
    if opts.class_input:
        g.input.append(helper.make_tensor_value_info(contract.CLASS_INPUT, TensorProto.INT64, [img.batch]))
        chosen = gw.op("GreaterOrEqual", [contract.CLASS_INPUT, gw.ints(0, "zero")], "class_given")
        gw.op("Where", [chosen, contract.CLASS_INPUT, target], outputs=[contract.TARGET])
    map_size = (max(1, h // opts.map_fraction), max(1, w // opts.map_fraction))
    k = an.num_classes
    out_info = {
        contract.LOGITS: (TensorProto.FLOAT, [img.batch, k]),
        contract.TARGET: (TensorProto.INT64, [img.batch]),
        contract.SMOE: (TensorProto.FLOAT, [img.batch, 1, *map_size]),
        contract.SMOE_SCALES: (TensorProto.FLOAT, [img.batch, n_ends, *map_size]),
        contract.RECIPRO: (TensorProto.FLOAT, [img.batch, 1, *an.head.feature.size]),
    }
    if "smoe" in opts.methods:
        ends = [(e.tensor, e.size, not e.nonnegative) for e in an.scale_ends]
        surgery_smoe.smoe_maps(gw, ends, map_size, weights, opts.smoe_eps, (contract.SMOE, contract.SMOE_SCALES))
    if "recipro" in opts.methods:
        surgery_recipro.recipro_cam(gw, an.head, contract.TARGET, k, an.values, opts.recipro_score,
                                    opts.recipro_variant, contract.RECIPRO)
    original_outputs = [o for o in g.output if o.name not in ours]
    del g.output[:]
    g.output.extend([helper.make_tensor_value_info(n, *out_info[n]) for n in ours] + original_outputs)

    meta = {
        "version": contract.CONTRACT_VERSION,
        "arch": Path(opts.onnx).stem,
        "labels": labels,
        "input": {
            "name": contract.INPUT, "size": [h, w], "layout": "NHWC", "dtype": "uint8", "color": "BGR",
            "mean": list(mean), "std": list(std), "range": [0, 255], "class_index_input": opts.class_input,
            "model_input": {"name": img.name, "layout": img.layout.upper(), "color": opts.color.upper()},
        },
        "scales": [{"layer": e.node, "tensor": e.tensor, "call": 0, "channels": e.channels, "resolution": list(e.size)}
                   for e in an.scale_ends],
        "methods": [m for m in contract.METHODS if m in opts.methods],
    }
    if "smoe" in opts.methods:
        meta["smoe"] = {"statistic": "smoe_scale", "normaliser": f"{opts.normaliser}_cdf", "weights": weights,
                        "map_size": list(map_size), "eps": opts.smoe_eps}
    if "recipro" in opts.methods:
        meta["recipro"] = {"score": opts.recipro_score, "variant": opts.recipro_variant, "path": an.head.kind,
                           "feature_layer": an.head.feature.node, "map_size": list(an.head.feature.size)}
    keep_props = [(p.key, p.value) for p in new.metadata_props if not p.key.startswith(contract.PREFIX)]
    del new.metadata_props[:]
    for key, value in keep_props:
        new.metadata_props.add(key=key, value=value)
    return new, an, meta


# ---------------------------------------------------------------- checks
def _session(model: onnx.ModelProto):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SurgeryCheckError(f"surgery check failed: ONNX Runtime cannot load the result: {first[:300]}") from exc


def preprocess(batch: np.ndarray, mean, std, color: str, layout: str) -> np.ndarray:
    """What the added preprocessing computes, in numpy: uint8 BGR NHWC -> the model's float input."""
    std32 = np.asarray(std, dtype=np.float32)
    x = batch.astype(np.float32)
    if color == "rgb":
        x = x[..., ::-1]
    x = x * (np.float32(1.0) / std32) + (-np.asarray(mean, dtype=np.float32) / std32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if layout == "nchw" else x)


def check_images(size: tuple[int, int]) -> np.ndarray:
    """Real photographs at the model's input size: [3, H, W, 3] uint8 BGR."""
    import cv2

    from edge_saliency import samples

    h, w = size
    return np.stack([cv2.resize(samples.photo(n), (w, h), interpolation=cv2.INTER_AREA)
                     for n in ("chelsea", "coffee", "astronaut")])


def check_surgery(original: onnx.ModelProto, new: onnx.ModelProto, an: Analysis, meta: dict,
                  opts: SurgeryOptions) -> dict:
    """checker, strict shape inference, original outputs bit-for-bit, maps finite and in [0, 1]."""
    try:
        onnx.checker.check_model(new, full_check=True)
        onnx.shape_inference.infer_shapes(new, strict_mode=True)
    except Exception as exc:
        raise SurgeryCheckError(f"surgery check failed: onnx.checker: {str(exc).splitlines()[0][:300]}") from exc
    ours = output_names(opts)
    names = [o.name for o in new.graph.output]
    if names[:len(ours)] != ours:
        raise SurgeryCheckError(f"surgery check failed: outputs are {names}, expected {ours} first")
    sess_new, sess_old = _session(new), _session(original)
    images = check_images(an.input.size)
    batches = [images[:1]] + ([images] if not isinstance(an.input.batch, int) else [])
    report = {"bit_exact_outputs": an.outputs, "batches": [len(b) for b in batches], "map_ranges": {}}
    for batch in batches:
        feeds = {contract.INPUT: batch}
        if opts.class_input:
            feeds[contract.CLASS_INPUT] = np.full((len(batch),), -1, dtype=np.int64)
        got = dict(zip(names, sess_new.run(names, feeds)))
        x = preprocess(batch, meta["input"]["mean"], meta["input"]["std"], opts.color, an.input.layout)
        want = dict(zip(an.outputs, sess_old.run(an.outputs, {an.input.name: x})))
        for name in an.outputs:
            if got[name].shape != want[name].shape or not np.array_equal(got[name], want[name]):
                diff = np.abs(got[name].astype(np.float64) - want[name]).max() if got[name].shape == want[name].shape else "shape"
                raise SurgeryCheckError(f"surgery check failed: original output {name!r} changed (max |diff| {diff})")
        if not np.array_equal(got[contract.TARGET], np.argmax(got[contract.LOGITS], axis=1)):
            raise SurgeryCheckError("surgery check failed: target_class is not the top-1 class of logits")
        for name in ours[2:]:
            v = got[name]
            if not np.all(np.isfinite(v)) or v.min() < -1e-6 or v.max() > 1 + 1e-6:
                raise SurgeryCheckError(f"surgery check failed: {name} has values outside [0, 1] or NaN")
            lo, hi = report["map_ranges"].get(name, (1.0, 0.0))
            report["map_ranges"][name] = (min(lo, float(v.min())), max(hi, float(v.max())))
    return report


def surgery(opts: SurgeryOptions, log=print) -> dict:
    """Load, add saliency, check, write. Returns a report (path, what was found, checks)."""
    t0 = time.perf_counter()
    out = Path(opts.out or f"{Path(opts.onnx).stem}_saliency.onnx")
    check_writable(out)
    original = load_model(opts.onnx)
    log(f"reading {opts.onnx}")
    new, an, meta = add_saliency(original, opts, log)
    for note in an.notes:
        log(f"note: {note}")
    for e in an.scale_ends:
        log(f"  scale end {e.node:<40} {e.channels:>5} ch  {e.size[0]}x{e.size[1]}")
    log(f"  head: {an.head.kind} after {an.head.feature.node}")
    passes = graph_passes.optimise(new)  # the same passes as the torch export; the checks cover them
    log("checking: onnx.checker, shape inference, original outputs bit-for-bit, maps in [0, 1]")
    checks = check_surgery(original, new, an, meta, opts)
    meta["export"] = {
        "opset": default_opset(new), "dynamic_batch": not isinstance(an.input.batch, int), "surgery": True,
        "source": Path(opts.onnx).name, "edge_saliency": edge_saliency.__version__, "onnx": onnx.__version__,
        "config": asdict(opts) | {"onnx": Path(opts.onnx).name, "out": out.name}, "checks": checks,
        "graph_passes": passes,
    }
    for key, value in contract.encode_metadata(meta).items():
        new.metadata_props.add(key=key, value=value)
    new.producer_name = "edge-saliency"
    write_atomic(new, out)
    return {"path": str(out), "size_mb": out.stat().st_size / 1e6, "seconds": time.perf_counter() - t0,
            "outputs": [o.name for o in new.graph.output], "metadata": meta, "checks": checks,
            "head": an.head.kind, "scale_ends": [e.node for e in an.scale_ends]}


def options_from_args(args) -> SurgeryOptions:
    """CLI arguments of `edge-saliency export --onnx ...` -> SurgeryOptions."""
    from edge_saliency.cli import _floats, _size, channel_values

    torch_only = [flag for flag, given in (("--module", args.module), ("--weights", args.weights),
                                           ("--random-weights", args.random_weights), ("--scale-layers", args.scale_layers),
                                           ("--feature-layer", args.feature_layer)) if given]
    if torch_only:
        hint = {"--scale-layers": " (use --scale-nodes)", "--feature-layer": " (use --target-node)"}.get(torch_only[0], "")
        raise UserError(f"{torch_only[0]} does not apply to --onnx{hint}")
    methods = [m.strip().lower() for m in args.methods.split(",") if m.strip()]
    methods = [] if methods in (["none"], []) else list(SURGERY_METHODS) if methods == ["all"] else methods
    return SurgeryOptions(
        onnx=args.onnx, out=args.out, labels=args.labels, mean=channel_values(args.mean, "--mean"),
        std=channel_values(args.std, "--std", positive=True), color=(args.color or "rgb").lower(),
        layout=args.layout.lower() if args.layout else None,
        input_size=_size(args.input_size) if args.input_size else None, target_node=args.target_node,
        scale_nodes=[s.strip() for s in args.scale_nodes.split(",") if s.strip()] if args.scale_nodes else None,
        methods=tuple(methods),
        smoe_weights=_floats(args.smoe_weights, None, "--smoe-weights") if args.smoe_weights else None,
        normaliser=args.normaliser, smoe_eps=args.smoe_eps, recipro_score=args.recipro_score,
        recipro_variant=args.recipro_variant, map_fraction=args.map_fraction, class_input=args.class_input,
    )


def cmd_export_onnx(args) -> int:
    report = surgery(options_from_args(args), log=lambda m: print(m, flush=True))
    print(f"wrote {report['path']} ({report['size_mb']:.1f} MB, outputs: {', '.join(report['outputs'])}) in "
          f"{report['seconds']:.1f}s; original outputs bit-for-bit equal: {', '.join(report['checks']['bit_exact_outputs'])}")
    return 0

