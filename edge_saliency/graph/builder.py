"""The graph builder: one implementation of the ONNX contract, for any ONNX classifier.

    classifier.onnx (float image input, class scores out)
        -> + preprocessing: input ``image`` uint8 [N, H, W, 3] BGR -> cast, colour order, mean/std, layout
        -> + every requested saliency head (edge_saliency.methods: SMOE Scale, Recipro-CAM, gradient CAMs)
        -> + outputs logits, target_class, the maps, and the model's own outputs unchanged
        -> + edge_saliency.* metadata
        -> checks -> written atomically (nothing is written unless every check passes)

``edge-saliency export --onnx`` calls it on a user's file; the torch export (export/) exports a
network plainly to ONNX and calls it the same way. Checks: onnx.checker (full), strict shape
inference, the original outputs bit-for-bit equal to the original model's on real photographs,
target_class the top-1 of logits, maps finite and in [0, 1], and every map equal to its method's
float64 numpy reference (computed from the same run's activations) within a bound that float32
rounding meets: TOLERANCE, widened where the method's own conditioning (how much its
normalisation amplifies rounding) says float32 cannot do better.

numpy, onnx and onnxruntime only: never torch. The design is in docs/design.md.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper

import edge_saliency
from edge_saliency.contract import PRECISIONS
from edge_saliency import contract, methods
from edge_saliency.errors import UserError
from edge_saliency.graph import passes
from edge_saliency.graph.discovery import Analysis, Head, analyse
from edge_saliency.graph.model_file import check_writable, write_atomic
from edge_saliency.graph.writer import GraphWriter, default_opset
from edge_saliency.labels import imagenet_labels, read_labels
from edge_saliency.methods import recipro, smoe

MIN_OPSET = 13  # older models are converted to this first (axes as inputs, optional Resize inputs)
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
MODEL_INPUT = "edge_saliency/model_input"  # the original input's new name where it was called "image"
TOLERANCE = 1e-4  # maps vs the float64 reference, for a well-conditioned map
FLOAT32_NOISE = 64 * float(np.finfo(np.float32).eps)  # relative rounding of the heads' float32 arithmetic
ILL_CONDITIONED = 1e-2  # a bound above this is reported: the map is mostly float noise


class BuildCheckError(UserError):
    """The built graph failed a check; nothing was written."""


@dataclass
class BuildSpec:
    """What to build: the one set of export options, shared by the torch export and ``--onnx``."""
    methods: tuple[str, ...] = methods.DEFAULT
    labels: str | None = None  # file with one class name per line (default: ImageNet for 1000 classes)
    mean: tuple[float, float, float] | None = None  # on 0-255, in the model's colour order
    std: tuple[float, float, float] | None = None
    color: str = "rgb"  # the channel order the model expects
    layout: str | None = None  # of the model's input; None: from its shape
    input_size: tuple[int, int] | None = None  # for models with a dynamic spatial size
    target_node: str | None = None  # the last feature map (node, tensor or torch module name)
    scale_nodes: list[str] | None = None  # scale ends (nodes, tensors or torch module names)
    smoe_weights: list[float] | None = None
    normaliser: str = "gaussian"
    smoe_eps: float = smoe.DEFAULT_EPS
    recipro_score: str = "logit"
    recipro_variant: str = "onehot"
    map_fraction: int = 4
    class_input: bool = False
    precision: str = "fp32"  # fp32 | fp16 | int8 (after the fp32 checks)
    calibration: str | None = None  # folder of images for int8 calibration

    def validate(self) -> None:
        bad = [m for m in self.methods if m not in methods.BY_NAME]
        if bad:
            raise UserError(f"unknown method {bad[0]!r}; choose from: {', '.join(methods.NAMES)}")
        if self.color not in ("rgb", "bgr"):
            raise UserError(f"--color wants rgb or bgr (the order the model expects), got {self.color!r}")
        if self.layout is not None and self.layout not in ("nchw", "nhwc"):
            raise UserError(f"--layout wants nchw or nhwc, got {self.layout!r}")
        if self.normaliser not in smoe.NORMALISERS:
            raise UserError(f"unknown normaliser {self.normaliser!r}; choose from: {', '.join(smoe.NORMALISERS)}")
        if self.recipro_score not in recipro.SCORES:
            raise UserError(f"unknown Recipro-CAM score {self.recipro_score!r}; choose from: {', '.join(recipro.SCORES)}")
        if self.recipro_variant not in recipro.VARIANTS:
            raise UserError(f"unknown Recipro-CAM variant {self.recipro_variant!r}; choose from: "
                            f"{', '.join(recipro.VARIANTS)}")
        if self.map_fraction < 1:
            raise UserError("--map-fraction must be at least 1")
        if not self.smoe_eps > 0:
            raise UserError("--smoe-eps must be positive")
        if self.std and min(self.std) <= 0:
            raise UserError("--std values must be positive")
        if self.smoe_weights is not None and (min(self.smoe_weights) < 0 or sum(self.smoe_weights) <= 0):
            raise UserError("--smoe-weights must be non-negative with a positive sum")
        if self.precision not in PRECISIONS:
            raise UserError(f"unknown precision {self.precision!r}; choose from: {', '.join(PRECISIONS)}")
        if self.calibration and self.precision != "int8":
            raise UserError("--calibration is for --precision int8")
        if self.calibration and not Path(self.calibration).is_dir():
            raise UserError(f"--calibration {self.calibration}: not a directory")

    def spec_fields(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(BuildSpec)}


@dataclass
class BuildContext:
    """What a method's build() and reference() see."""
    gw: GraphWriter | None
    spec: BuildSpec
    analysis: Analysis
    graph: onnx.GraphProto
    target: str  # the target_class tensor [N] int64
    map_size: tuple[int, int]
    batch: int | str
    smoe_weights: list[float]
    method: methods.Method | None = None
    head_fn: Callable | None = None  # reference only: masked copies [P, C, h, w] -> logits [P, K]
    prepared: onnx.ModelProto | None = None  # the input model at the builder's opset, after the passes

    @property
    def scale_ends(self):
        return self.analysis.scale_ends

    @property
    def head(self) -> Head:
        return self.analysis.head

    @property
    def num_classes(self) -> int:
        return self.analysis.num_classes

    @property
    def values(self) -> dict:
        return self.analysis.values

    def constant(self, name: str) -> np.ndarray:
        return self.analysis.constant(self.graph, name)


def load_model(path: str) -> onnx.ModelProto:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"ONNX file not found: {path}")
    try:
        return onnx.load(str(p))
    except Exception as exc:
        raise UserError(f"cannot read {path} as an ONNX model: {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:200] if str(exc) else ''}") from exc


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
    """mean / std from metadata the model already carries (ours, or plain keys)."""
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


def _labels(spec: BuildSpec, k: int) -> list[str]:
    if spec.labels:
        labels = read_labels(spec.labels)
    elif k == 1000:
        labels = imagenet_labels()
    else:
        labels = [f"class_{i}" for i in range(k)]
    if len(labels) != k:
        raise UserError(f"{len(labels)} labels for a model with {k} classes")
    return labels


def output_names(spec: BuildSpec) -> list[str]:
    return [contract.LOGITS, contract.TARGET] + [o for m in methods.TABLE if m.name in spec.methods for o in m.outputs]


def _preprocess_nodes(gw: GraphWriter, spec: BuildSpec, layout: str, mean, std, model_input: str) -> None:
    """uint8 BGR NHWC ``image`` -> the model's float input. For an NCHW model the uint8 transpose
    comes first (a quarter of the bytes) and the colour flip is a Gather of whole planes."""
    std32 = np.asarray(std, dtype=np.float32)
    axis, shape = (1, (1, 3, 1, 1)) if layout == "nchw" else (3, (1, 1, 1, 3))
    scale = (np.float32(1.0) / std32).reshape(shape)
    shift = (-np.asarray(mean, dtype=np.float32) / std32).reshape(shape)
    x = contract.INPUT
    if layout == "nchw":
        x = gw.op("Transpose", [x], "pre_nchw", perm=[0, 3, 1, 2])
    x = gw.op("Cast", [x], "pre_float", to=TensorProto.FLOAT)
    if spec.color == "rgb":
        x = gw.op("Gather", [x, gw.ints([2, 1, 0], "bgr_to_rgb")], "pre_rgb", axis=axis)
    gw.op("Add", [gw.op("Mul", [x, gw.const(scale, "pre_scale")], "pre_scaled"), gw.const(shift, "pre_shift")],
          outputs=[model_input])


def preprocess(batch: np.ndarray, mean, std, color: str, layout: str) -> np.ndarray:
    """What the added preprocessing computes, in numpy: uint8 BGR NHWC -> the model's float input."""
    std32 = np.asarray(std, dtype=np.float32)
    x = batch.astype(np.float32)
    if color == "rgb":
        x = x[..., ::-1]
    x = x * (np.float32(1.0) / std32) + (-np.asarray(mean, dtype=np.float32) / std32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if layout == "nchw" else x)


def build(model: onnx.ModelProto, spec: BuildSpec, arch: str, log=print) -> tuple[onnx.ModelProto, BuildContext, dict]:
    """Add preprocessing, the saliency heads, outputs and metadata (without 'export') to ``model``."""
    spec.validate()
    model = _at_min_opset(model, log)
    model = _copy(model)
    graph_passes = passes.optimise(model)  # exact rewrites (zero Pads into Convs): the checks cover them
    chosen = [m for m in methods.TABLE if m.name in spec.methods]
    an = analyse(model, spec.layout, spec.input_size, spec.scale_nodes, spec.target_node,
                 need_head=any(m.needs_head for m in chosen))
    needs_linear = [m.name for m in chosen if m.gap_linear_only]
    if needs_linear and an.head.kind != "gap_linear":
        raise UserError(f"{', '.join(needs_linear)} in the graph need a head that is global average pooling + linear "
                        f"(the gradient is then analytic); this model's head after {an.head.feature.node!r} is "
                        f"{an.head.kind}")
    ours = output_names(spec)
    tensors = set(an.outputs) | {o for n in model.graph.node for o in n.output}
    clash = [o for o in ours if o in tensors and not (o == contract.LOGITS and an.head.logits == o)]
    if clash:
        raise UserError(f"the model already has a tensor named {clash[0]!r}, which edge-saliency adds; rename it first")
    labels = _labels(spec, an.num_classes)
    meta_pre = _preprocessing_from_metadata(model)
    mean = tuple(spec.mean or meta_pre.get("mean") or IMAGENET_MEAN)
    std = tuple(spec.std or meta_pre.get("std") or IMAGENET_STD)
    if not spec.mean and "mean" not in meta_pre:
        log(f"note: no --mean/--std given and none in the model's metadata: assuming ImageNet's {IMAGENET_MEAN} / {IMAGENET_STD}")
    n_ends = len(an.scale_ends)
    weights = list(spec.smoe_weights or [1.0] * n_ends)
    if len(weights) != n_ends:
        raise UserError(f"--smoe-weights has {len(weights)} values for {n_ends} scale ends")

    new = _copy(model)
    g = new.graph
    img = an.input
    model_input = img.name
    if img.name in (contract.INPUT, contract.CLASS_INPUT):
        model_input = MODEL_INPUT
        _rename_tensor(g, img.name, model_input)
        for o in g.output:
            if o.name == img.name:
                raise UserError(f"the model passes its input {img.name!r} straight to an output; nothing to explain")
    gw = GraphWriter(g, default_opset(new))
    gw.taken.update(ours + [contract.INPUT, contract.CLASS_INPUT])

    n_before = len(g.node)
    _preprocess_nodes(gw, spec, img.layout, mean, std, model_input)
    pre_nodes = list(g.node[n_before:])
    del g.node[n_before:]
    rest = list(g.node)
    del g.node[:]
    g.node.extend(pre_nodes + rest)
    h, w = img.size
    keep_inputs = [i for i in g.input if i.name != img.name]
    del g.input[:]
    g.input.extend([helper.make_tensor_value_info(contract.INPUT, TensorProto.UINT8, [img.batch, h, w, 3])] + keep_inputs)

    if an.head.logits != contract.LOGITS:
        gw.op("Identity", [an.head.logits], outputs=[contract.LOGITS])
    top1 = gw.op("ArgMax", [contract.LOGITS], outputs=[contract.TARGET if not spec.class_input else gw.fresh("top1")],
                 axis=1, keepdims=0)
    if spec.class_input:
        g.input.append(helper.make_tensor_value_info(contract.CLASS_INPUT, TensorProto.INT64, [img.batch]))
        given = gw.op("GreaterOrEqual", [contract.CLASS_INPUT, gw.ints(0, "zero")], "class_given")
        gw.op("Where", [given, contract.CLASS_INPUT, top1], outputs=[contract.TARGET])
    map_size = (max(1, h // spec.map_fraction), max(1, w // spec.map_fraction))
    ctx = BuildContext(gw, spec, an, g, contract.TARGET, map_size, img.batch, weights, prepared=model)
    out_info = {contract.LOGITS: (TensorProto.FLOAT, [img.batch, an.num_classes]),
                contract.TARGET: (TensorProto.INT64, [img.batch])}
    method_meta = {}
    for m in chosen:
        ctx.method = m
        impl = m.impl()
        entry = impl.build(ctx)
        out_info.update({name: (TensorProto.FLOAT, shape) for name, shape in impl.output_shapes(ctx).items()})
        if entry is not None:
            method_meta[m.name] = entry
    ctx.method = None
    original_outputs = [o for o in g.output if o.name not in ours]
    del g.output[:]
    g.output.extend([helper.make_tensor_value_info(n, *out_info[n]) for n in ours] + original_outputs)

    meta = {
        "version": contract.CONTRACT_VERSION,
        "arch": arch,
        "labels": labels,
        "input": {
            "name": contract.INPUT, "size": [h, w], "layout": "NHWC", "dtype": "uint8", "color": "BGR",
            "mean": list(mean), "std": list(std), "range": [0, 255], "class_index_input": spec.class_input,
            "model_input": {"name": img.name, "layout": img.layout.upper(), "color": spec.color.upper()},
        },
        "scales": [{"layer": e.node, "tensor": e.tensor, "channels": e.channels, "resolution": list(e.size),
                    "clamped": not e.nonnegative} for e in an.scale_ends],
        "methods": [m.name for m in chosen],
        "head": {"kind": an.head.kind, "feature_layer": an.head.feature.node},
        "graph_passes": graph_passes,
    }
    if "smoe" in method_meta:
        meta["smoe"] = method_meta.pop("smoe")
    if "recipro" in method_meta:
        meta["recipro"] = method_meta.pop("recipro")
    grads = [name for name in method_meta]
    if grads:
        meta["gradient_cams"] = dict(method_meta[grads[0]], methods=grads)
    keep_props = [(p.key, p.value) for p in new.metadata_props if not p.key.startswith(contract.PREFIX)]
    del new.metadata_props[:]
    for key, value in keep_props:
        new.metadata_props.add(key=key, value=value)
    return new, ctx, meta


# ---------------------------------------------------------------- checks
def session(model: onnx.ModelProto, optimise: bool = True):
    """A quiet CPU ONNX Runtime session of an in-memory model; a model ORT refuses is a failed check."""
    from edge_saliency.runtime.engines import quiet_cpu_session

    try:
        return quiet_cpu_session(model, optimise)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BuildCheckError(f"build check failed: ONNX Runtime cannot load the result: {first[:300]}") from exc


def check_images(size: tuple[int, int]) -> np.ndarray:
    """Real photographs at the model's input size: [3, H, W, 3] uint8 BGR."""
    import cv2

    from edge_saliency import samples

    h, w = size
    return np.stack([cv2.resize(samples.photo(n), (w, h), interpolation=cv2.INTER_AREA)
                     for n in ("chelsea", "coffee", "astronaut")])


def _head_function(original: onnx.ModelProto, ctx: BuildContext) -> Callable:
    """Reference head for Recipro-CAM: GAP + linear in numpy; any other head as the model's own
    head nodes in ONNX Runtime (no graph optimisation) on the masked copies."""
    head = ctx.head
    if head.kind == "gap_linear":
        return recipro.gap_linear_head(ctx.constant(head.weight), ctx.constant(head.bias) if head.bias else None,
                                       head.weight_is_kc, head.alpha, head.beta)
    f = head.feature
    g = helper.make_graph([], "head", [helper.make_tensor_value_info("features", TensorProto.FLOAT,
                                                                     ["n", f.channels, *f.size])], [])
    g.initializer.extend(original.graph.initializer)
    g.node.extend(n for n in original.graph.node if n.output and all(o in ctx.analysis.static for o in n.output))
    gw = GraphWriter(g, default_opset(original))
    full = Head("masked_batch", f, head.logits, nodes=head.all_nodes, clone_input=f.tensor)
    logits = recipro.clone_head(gw, full, "features", ctx.values)
    g.output.append(helper.make_tensor_value_info(logits, TensorProto.FLOAT, None))
    m = helper.make_model(g, opset_imports=list(original.opset_import))
    m.ir_version = original.ir_version
    sess = session(m, optimise=False)

    def run(maps: np.ndarray) -> np.ndarray:
        return np.concatenate([sess.run(None, {"features": maps[i:i + 64].astype(np.float32)})[0]
                               for i in range(0, len(maps), 64)])
    return run


def check(original: onnx.ModelProto, new: onnx.ModelProto, ctx: BuildContext, meta: dict, log=print) -> dict:
    """Everything a built model must pass before it is written; returns the report."""
    spec, an = ctx.spec, ctx.analysis
    try:
        onnx.checker.check_model(new, full_check=True)
        onnx.shape_inference.infer_shapes(new, strict_mode=True)
    except Exception as exc:
        raise BuildCheckError(f"build check failed: onnx.checker: {str(exc).splitlines()[0][:300]}") from exc
    ours = output_names(spec)
    names = [o.name for o in new.graph.output]
    if names[:len(ours)] != ours:
        raise BuildCheckError(f"build check failed: outputs are {names}, expected {ours} first")
    # the maps against their references, from the activations of the same run
    chosen = [m for m in methods.TABLE if m.name in spec.methods]
    inner = sorted({e.tensor for e in an.scale_ends} | ({an.head.feature.tensor} if an.head.kind != "none" else set()))
    probe = onnx.ModelProto()
    probe.CopyFrom(new)
    probe.graph.output.extend([onnx.ValueInfoProto(name=t) for t in inner if t not in names])
    probe_names = names + [t for t in inner if t not in names]
    sess_new, sess_probe, sess_old = session(new), session(probe), session(original)
    ref_ctx = BuildContext(None, spec, an, ctx.prepared.graph, contract.TARGET, ctx.map_size, ctx.batch,
                           ctx.smoe_weights)
    if any(m.name == "recipro" for m in chosen):
        ref_ctx.head_fn = _head_function(ctx.prepared, ref_ctx)
    images = check_images(an.input.size)
    batches = [images[:1]] + ([images] if not isinstance(an.input.batch, int) else [])
    report = {"bit_exact_outputs": an.outputs, "batches": [len(b) for b in batches], "map_ranges": {},
              "max_abs_diff_vs_reference": {}, "tolerance": {}, "ill_conditioned": []}
    for batch in batches:
        feeds = {contract.INPUT: batch}
        if spec.class_input:
            feeds[contract.CLASS_INPUT] = np.full((len(batch),), -1, dtype=np.int64)
        got = dict(zip(names, sess_new.run(names, feeds)))
        x = preprocess(batch, meta["input"]["mean"], meta["input"]["std"], spec.color, an.input.layout)
        want = dict(zip(an.outputs, sess_old.run(an.outputs, {an.input.name: x})))
        for name in an.outputs:
            if got[name].shape != want[name].shape or not np.array_equal(got[name], want[name]):
                diff = np.abs(got[name].astype(np.float64) - want[name]).max() if got[name].shape == want[name].shape else "shape"
                raise BuildCheckError(f"build check failed: original output {name!r} changed (max |diff| {diff})")
        if not np.array_equal(got[contract.TARGET], np.argmax(got[contract.LOGITS], axis=1)):
            raise BuildCheckError("build check failed: target_class is not the top-1 class of logits")
        for name in ours[2:]:
            v = got[name]
            if not np.all(np.isfinite(v)):
                raise BuildCheckError(f"build check failed: {name} has NaN or inf")
            if v.min() < -1e-6 or v.max() > 1 + 1e-6:
                raise BuildCheckError(f"build check failed: {name} has values outside [0, 1] "
                                      f"({float(v.min()):.3g} .. {float(v.max()):.3g})")
            lo, hi = report["map_ranges"].get(name, (1.0, 0.0))
            report["map_ranges"][name] = (min(lo, float(v.min())), max(hi, float(v.max())))
        probed = dict(zip(probe_names, sess_probe.run(probe_names, feeds)))
        for m in chosen:
            ref_ctx.method = m
            impl = m.impl()
            refs = impl.reference(ref_ctx, probed)
            tol = max(TOLERANCE, FLOAT32_NOISE * impl.reference_conditioning(ref_ctx, probed))
            if tol > ILL_CONDITIONED and m.name not in report["ill_conditioned"]:
                report["ill_conditioned"].append(m.name)
                log(f"note: {m.name} is ill-conditioned on the check photos (float32 cannot compute it better than "
                    f"+-{min(tol, 1.0):.0e}: activations far below --smoe-eps, or class scores that hardly vary; "
                    f"untrained weights?); its maps are mostly rounding noise")
            for name, ref in refs.items():
                for label, value in (("graph", probed[name]), ("optimised graph", got[name])):
                    diff = float(np.abs(value.astype(np.float64) - ref).max())
                    if not diff <= tol:
                        raise BuildCheckError(
                            f"build check failed: {name} ({label}) differs from the numpy reference by {diff:.2e} "
                            f"(bound {tol:.1e})")
                    report["max_abs_diff_vs_reference"][name] = max(report["max_abs_diff_vs_reference"].get(name, 0.0), diff)
                report["tolerance"][name] = max(report["tolerance"].get(name, 0.0), tol)
    return report


def build_file(model: onnx.ModelProto, spec: BuildSpec, out: Path, arch: str, source: str, log=print,
               extra_export: dict | None = None) -> dict:
    """Build, check, write ``out`` (then the precision variant in place). Returns a report."""
    t0 = time.perf_counter()
    new, ctx, meta = build(model, spec, arch, log)
    an = ctx.analysis
    for note in an.notes:
        log(f"note: {note}")
    for e in an.scale_ends:
        log(f"  scale end {e.node:<48} {e.channels:>5} ch  {e.size[0]}x{e.size[1]}{'' if e.nonnegative else '  (clamped at 0)'}")
    log(f"  head: {an.head.kind} after {an.head.feature.node}")
    log("checking: onnx.checker, shape inference, original outputs bit-for-bit, maps vs their numpy references")
    checks = check(model, new, ctx, meta, log)
    meta["export"] = {
        "opset": default_opset(new), "dynamic_batch": not isinstance(an.input.batch, int), "source": source,
        "edge_saliency": edge_saliency.__version__, "onnx": onnx.__version__,
        "config": _jsonable(spec.spec_fields()), "checks": checks, "graph_passes": meta.pop("graph_passes"),
        **(extra_export or {}),
    }
    for key, value in contract.encode_metadata(meta).items():
        new.metadata_props.add(key=key, value=value)
    new.producer_name = "edge-saliency"
    write_atomic(new, out)
    report = {"path": str(out), "size_mb": out.stat().st_size / 1e6, "outputs": [o.name for o in new.graph.output],
              "metadata": meta, "checks": checks, "head": an.head.kind, "scale_ends": [e.node for e in an.scale_ends]}
    if spec.precision != "fp32":
        from edge_saliency.graph.quantize import convert

        q = convert(out, out, spec.precision, spec.calibration, log=log)
        report.update(size_mb=q["size_mb"], precision=q["info"])
    report["seconds"] = time.perf_counter() - t0
    return report


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    new = onnx.ModelProto()
    new.CopyFrom(model)
    return new


def _jsonable(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


# ---------------------------------------------------------------- `export --onnx`
@dataclass
class SurgeryOptions(BuildSpec):
    """``edge-saliency export --onnx FILE``: the spec plus where the model comes from and goes."""
    onnx: str = ""
    out: str | None = None


def surgery(opts: SurgeryOptions, log=print) -> dict:
    out = Path(opts.out or f"{Path(opts.onnx).stem}_saliency.onnx")
    opts.validate()
    check_writable(out)
    original = load_model(opts.onnx)
    log(f"reading {opts.onnx}")
    return build_file(original, opts, out, Path(opts.onnx).stem, Path(opts.onnx).name, log)

