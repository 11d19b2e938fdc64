"""Precision variants of an edge-saliency ONNX file: fp16 (for GPU providers) and int8 (static QDQ).

    edge-saliency export --precision int8 --calibration images/   # fp32 export + checks, then int8
    convert("fp32.onnx", "int8.onnx", "int8")                     # an existing edge-saliency file

The calibration photographs are in photos.py; what a variant costs against fp32 in precision_report.py.

Both keep the contract: input ``image`` uint8 [N, H, W, 3] BGR, outputs with the same names,
dtypes (float32 maps and logits, int64 target_class) and shapes, and every ``edge_saliency.*``
metadata entry; ``edge_saliency.precision`` records what was done.

Which nodes change precision: only the **classifier path**, the nodes that ``logits`` depends on
(preprocessing, backbone, head). The saliency subgraphs (SMOE's Log/ReduceMean/Erf/Resize,
Recipro-CAM's masked head) are found as "everything else" and stay float32: they read the
backbone's (dequantised) activations, so the maps follow the quantised model's features without
their own arithmetic being quantised. Nothing here depends on node names, so any exported
architecture works.

- int8: ``onnxruntime.quantization.quantize_static``, QDQ format, per-channel symmetric int8
  weights, uint8 activations (QUInt8/QInt8 is ORT's recommended CPU pair), percentile (99.999)
  calibration with asymmetric ranges (ORT's percentile default is symmetric, which spends half of
  uint8 on negative values a ReLU6 never gives), and **bias correction**: the mean error that int8
  rounding of each Conv's weights adds to its output (``(W_q - W) · E[x]``) is subtracted from its
  bias before quantising (logit SNR 15 -> 21 dB on the report images). Calibration runs in chunks of at most
  CALIBRATION_CHUNK images (ORT's histogram calibrators otherwise hold every image's activations:
  7.8 GB for Lite0's 110 images; chunked 1.1 GB, logit SNR 23.39 -> 23.38 dB, map correlations equal
  to 3 decimals, top-1 agreement on the 20 sample views 16 -> 15). Calibration images are a
  folder, or by default scikit-image/matplotlib photographs that are *not* among the report's
  (``CALIBRATION_PHOTOS``), each with flips and crops at two scales (``calibration_views``). Recipes compared:
  ``benchmarks/int8_recipes.py`` -> ``benchmarks/results/int8_recipes.md``. It is fast on CPUs with
  VNNI (AVX512-VNNI / AVX-VNNI on x86, dot-product on ARMv8.2+); on older x86 CPUs the int8
  kernels may be no faster than fp32 (see ORT's quantisation docs).
- fp16: ``onnxconverter_common.float16`` with ``keep_io_types`` and the saliency nodes in the
  block list: the backbone in half precision, maps and logits still float32. Meant for CUDA /
  TensorRT; ONNX Runtime's CPU provider lacks fp16 kernels for several ops and may refuse it.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

from edge_saliency.contract import PRECISIONS
from edge_saliency.runtime.engines import quiet_cpu_session
from edge_saliency import contract
from edge_saliency.errors import UserError
from edge_saliency.graph.model_file import write_atomic
from edge_saliency.graph.photos import CALIBRATION_PHOTOS, calibration_images, folder_images, resize

# ops quantised on the classifier path (ReLU6 = Clip and residual Adds keep activations in int8
# between convolutions; GlobalAveragePool feeds the classifier)
INT8_OP_TYPES = ("Conv", "Gemm", "MatMul", "Clip", "Relu", "Add", "GlobalAveragePool", "AveragePool", "MaxPool")


# ------------------------------------------------------------------ graph analysis
def classifier_nodes(model: onnx.ModelProto) -> set[str]:
    """Names of the nodes ``logits`` depends on (the classifier path); the rest is saliency."""
    producer = {}
    for node in model.graph.node:
        for out in node.output:
            producer[out] = node
    keep, stack = set(), [contract.LOGITS]
    seen = set()
    while stack:
        t = stack.pop()
        if t in seen or t not in producer:
            continue
        seen.add(t)
        node = producer[t]
        keep.add(node.name)
        stack.extend(i for i in node.input if i)
    return keep


def _ensure_node_names(model: onnx.ModelProto) -> None:
    used = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)


def _meta(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def _set_meta(model: onnx.ModelProto, props: dict[str, str]) -> None:
    del model.metadata_props[:]
    for k, v in props.items():
        e = model.metadata_props.add()
        e.key, e.value = k, v


def _input_size(model: onnx.ModelProto) -> tuple[int, int]:
    meta = contract.decode_metadata(_meta(model))
    if "input" not in meta or "labels" not in meta:
        raise UserError("not an edge-saliency model (no edge_saliency.input metadata); make one with `edge-saliency export`")
    size = meta["input"]["size"]
    return int(size[0]), int(size[1])


def _load(path: str | os.PathLike) -> onnx.ModelProto:
    if not Path(path).is_file():
        raise UserError(f"model file not found: {path}")
    try:
        return onnx.load(str(path))
    except Exception as exc:
        raise UserError(f"cannot read {path} as ONNX: {type(exc).__name__}") from exc


def _check_contract(model: onnx.ModelProto, reference: onnx.ModelProto) -> None:
    """Same inputs/outputs (names and element types) as the fp32 file."""
    def sig(values):
        return [(v.name, v.type.tensor_type.elem_type) for v in values]
    if sig(model.graph.input) != sig(reference.graph.input) or sig(model.graph.output) != sig(reference.graph.output):
        raise UserError(f"precision conversion changed the model's inputs/outputs: {sig(model.graph.input)} -> "
                        f"{sig(model.graph.output)}; expected {sig(reference.graph.input)} -> {sig(reference.graph.output)}")


# ------------------------------------------------------------------ int8
class _ImageReader:
    """onnxruntime.quantization CalibrationDataReader over resized BGR uint8 images, batch 1;
    `set_range` lets ORT calibrate in chunks (CalibStridedMinMax) so that it never holds every
    image's activations at once."""

    def __init__(self, images: list[np.ndarray], size: tuple[int, int], class_input: bool, progress=None):
        self.batches = [resize(img, size)[None] for img in images]
        self.class_input = class_input
        self.i = 0
        self.end = len(self.batches)
        self.progress = progress

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.i, self.end = start_index, min(end_index, len(self.batches))

    def get_next(self):
        if self.i >= self.end:
            return None
        feed = {contract.INPUT: self.batches[self.i]}
        if self.class_input:
            feed[contract.CLASS_INPUT] = np.full((1,), -1, dtype=np.int64)
        self.i += 1
        if self.progress:
            self.progress(self.i, len(self.batches))
        return feed

    def rewind(self):
        self.i, self.end = 0, len(self.batches)


CALIBRATION_CHUNK = 16  # images whose activations the calibrator holds at once (all 110: ~8 GB for Lite0)


def _chunk(n: int, most: int = CALIBRATION_CHUNK) -> int:
    """The largest chunk size <= most that divides n (ORT wants equal strides)."""
    return next(k for k in range(min(most, n), 0, -1) if n % k == 0)


def _progress_line(i: int, n: int) -> None:
    sys.stderr.write(f"\rcalibrating {i}/{n}")
    if i == n:
        sys.stderr.write("\n")
    sys.stderr.flush()


@dataclass(frozen=True)
class Int8Recipe:
    """How ``quantize_int8`` calls ``onnxruntime.quantization.quantize_static`` (the knobs compared in
    benchmarks/int8_recipes.py; the defaults are the recipe that measured best there)."""
    calibrate_method: str = "percentile"      # percentile | minmax | entropy
    percentile: float = 99.999                 # for percentile
    range_symmetric: bool = False              # CalibTensorRangeSymmetric (ORT's percentile default is True)
    moving_average: bool = False               # CalibMovingAverage (minmax)
    activation_type: str = "QUInt8"
    weight_type: str = "QInt8"
    per_channel: bool = True
    reduce_range: bool = False
    weight_symmetric: bool = True
    activation_symmetric: bool = False
    quantize_bias: bool = True
    exclude: tuple[str, ...] = ()              # "depthwise", "stem" (first conv), "classifier" (Gemm/MatMul)
    optimize: bool = True                      # quant_pre_process graph optimisation
    bias_correction: bool = True               # fold the mean error of int8 weights into the Conv biases

    def describe(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


DEFAULT_RECIPE = Int8Recipe()


def _excluded_nodes(model: onnx.ModelProto, path_nodes: set[str], rules: tuple[str, ...]) -> set[str]:
    """Names of classifier-path nodes that ``rules`` keep in float32."""
    unknown = set(rules) - {"depthwise", "stem", "classifier"}
    if unknown:
        raise UserError(f"unknown int8 exclusion rule(s): {sorted(unknown)}")
    inits = {t.name: t for t in model.graph.initializer}
    out = set()
    convs = [n for n in model.graph.node if n.name in path_nodes and n.op_type == "Conv"]
    for n in convs:
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        w = inits.get(n.input[1]) if len(n.input) > 1 else None
        if "depthwise" in rules and group > 1 and w is not None and w.dims[1] == 1:
            out.add(n.name)
    if "stem" in rules and convs:
        out.add(convs[0].name)
    if "classifier" in rules:
        out.update(n.name for n in model.graph.node if n.name in path_nodes and n.op_type in ("Gemm", "MatMul"))
    # the ReLU6/ReLU right after an excluded Conv stays float too: quantised alone, it would put a
    # QDQ pair on the Conv's raw output with that tensor's wide calibrated range
    excluded_outputs = {o for n in model.graph.node if n.name in out for o in n.output}
    out.update(n.name for n in model.graph.node
               if n.name in path_nodes and n.op_type in ("Clip", "Relu") and n.input[0] in excluded_outputs)
    return out


def _bias_correct(model: onnx.ModelProto, nodes: set[str], reader: "_ImageReader", recipe: Int8Recipe) -> int:
    """Bias correction (Nagel et al., "Data-Free Quantization", 2019, empirical form): int8 weights
    shift each output channel's mean by ``(W_q - W) · E[x]``; subtract that from the Conv's bias, with
    ``E[x]`` the per-channel mean of the Conv's input over the calibration images (fp32 model) and
    ``W_q`` the weights as quantize_static will round them (symmetric, per channel or per tensor).
    Returns the number of corrected Convs."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    # a bias also read outside the quantised nodes (a float saliency subgraph) is left alone
    shared = {i for n in model.graph.node if n.name not in nodes for i in n.input}
    convs = [n for n in model.graph.node if n.name in nodes and n.op_type == "Conv" and len(n.input) > 2
             and n.input[1] in inits and n.input[2] in inits and n.input[2] not in shared]
    if not convs or not recipe.weight_symmetric:
        return 0
    inputs = sorted({n.input[0] for n in convs})
    aug = onnx.ModelProto()
    aug.CopyFrom(model)
    have = {o.name for o in aug.graph.output}
    aug.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in inputs if t not in have)
    sess = quiet_cpu_session(aug)
    sums, count = {t: 0.0 for t in inputs}, 0
    reader.rewind()
    while (feed := reader.get_next()) is not None:
        for t, v in zip(inputs, sess.run(inputs, feed)):
            sums[t] = sums[t] + v.astype(np.float64).mean(axis=(0, 2, 3))
        count += 1
    reader.rewind()
    qmax = 32767 if recipe.weight_type.endswith("16") else (63 if recipe.reduce_range else 127)
    for n in convs:
        w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float64)
        b = numpy_helper.to_array(inits[n.input[2]]).astype(np.float64)
        flat = np.abs(w).reshape(w.shape[0], -1)
        scale = flat.max(axis=1) if recipe.per_channel else np.full(w.shape[0], flat.max())
        scale = np.where(scale > 0, scale / qmax, 1.0)[:, None, None, None]
        dw = np.clip(np.round(w / scale), -qmax, qmax) * scale - w
        mean = sums[n.input[0]] / max(count, 1)
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        cin = w.shape[1]
        # output channel o reads input channels (o // (C_out/group)) * cin ... + cin
        per_group_out = w.shape[0] // group
        idx = (np.arange(w.shape[0]) // per_group_out)[:, None] * cin + np.arange(cin)[None, :]
        shift = (dw.sum(axis=(2, 3)) * mean[idx]).sum(axis=1)
        inits[n.input[2]].CopyFrom(numpy_helper.from_array((b - shift).astype(np.float32), n.input[2]))
    return len(convs)


def quantize_int8(src: onnx.ModelProto, images: list[np.ndarray], progress=_progress_line,
                  recipe: Int8Recipe = DEFAULT_RECIPE, cache: str | os.PathLike | None = None) -> tuple[onnx.ModelProto, dict]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"percentile": CalibrationMethod.Percentile, "minmax": CalibrationMethod.MinMax,
               "entropy": CalibrationMethod.Entropy}
    size = _input_size(src)
    class_input = any(i.name == contract.CLASS_INPUT for i in src.graph.input)
    with tempfile.TemporaryDirectory(prefix="edge_saliency_q_") as tmp:
        raw, pre, out = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        onnx.save(src, str(raw))
        # ORT's recommended pre-processing: shape inference + graph optimisation (fuses, folds)
        quant_pre_process(str(raw), str(pre), skip_symbolic_shape=True, skip_optimization=not recipe.optimize)
        model = onnx.load(str(pre))
        _ensure_node_names(model)
        path_nodes = classifier_nodes(model)
        excluded = _excluded_nodes(model, path_nodes, recipe.exclude)
        to_quantize = sorted(n.name for n in model.graph.node
                             if n.name in path_nodes and n.op_type in INT8_OP_TYPES and n.name not in excluded)
        kept_float = sorted({n.op_type for n in model.graph.node if n.name not in path_nodes})
        corrected = 0
        if recipe.bias_correction:
            corrected = _bias_correct(model, set(to_quantize), _ImageReader(images, size, class_input), recipe)
        onnx.save(model, str(pre))
        reader = _ImageReader(images, size, class_input, progress)
        extra = {"ActivationSymmetric": recipe.activation_symmetric, "WeightSymmetric": recipe.weight_symmetric,
                 "CalibTensorRangeSymmetric": recipe.range_symmetric, "QuantizeBias": recipe.quantize_bias}
        if recipe.calibrate_method == "percentile":
            extra["CalibPercentile"] = recipe.percentile
        if recipe.moving_average:
            extra["CalibMovingAverage"] = True
        extra["CalibStridedMinMax"] = _chunk(len(reader))  # despite its name: chunks any calibrator
        quantize_static(
            str(pre), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=recipe.per_channel,
            reduce_range=recipe.reduce_range,
            activation_type=getattr(QuantType, recipe.activation_type), weight_type=getattr(QuantType, recipe.weight_type),
            op_types_to_quantize=list(INT8_OP_TYPES), nodes_to_quantize=to_quantize,
            calibrate_method=methods[recipe.calibrate_method], extra_options=extra,
            calibration_cache_path=cache,
        )
        q = onnx.load(str(out))
    method = recipe.calibrate_method + (f" {recipe.percentile}" if recipe.calibrate_method == "percentile" else "")
    info = {
        "dtype": "int8", "format": "QDQ", "tool": "onnxruntime.quantization.quantize_static",
        "weights": f"{recipe.weight_type} {'per-channel' if recipe.per_channel else 'per-tensor'} "
                   f"{'symmetric' if recipe.weight_symmetric else 'asymmetric'}",
        "activations": f"{recipe.activation_type} per-tensor {'symmetric' if recipe.activation_symmetric else 'asymmetric'}",
        "calibration": {"method": method, "images": len(images)},
        "recipe": recipe.describe(),
        "bias_corrected_convs": corrected,
        "quantized_nodes": len(to_quantize), "float_classifier_nodes": len(excluded), "float_saliency_ops": kept_float,
    }
    return q, info


# ------------------------------------------------------------------ fp16
def _unshare_initializers(model: onnx.ModelProto, float_nodes: set[str]) -> None:
    """Weights read by both a converted and a float32 node (Recipro-CAM reads the classifier's
    weights and bias) get a float32 copy for the float32 readers, so each copy has one type."""
    readers: dict[str, set[bool]] = {}
    for node in model.graph.node:
        for i in node.input:
            readers.setdefault(i, set()).add(node.name in float_nodes)
    inits = {t.name: t for t in model.graph.initializer}
    for name, kinds in readers.items():
        if name in inits and kinds == {True, False}:
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[name])
            copy.name = name + "_float32"
            model.graph.initializer.append(copy)
            for node in model.graph.node:
                if node.name in float_nodes:
                    node.input[:] = [copy.name if i == name else i for i in node.input]


def _restore_output_types(model: onnx.ModelProto, reference: onnx.ModelProto) -> None:
    """The converter marks outputs of blocked (float32) nodes as float16 too: put a Cast to the
    contract's type before every output whose type changed (a no-op where it was already right)."""
    want = {o.name: o.type.tensor_type.elem_type for o in reference.graph.output}
    for out in model.graph.output:
        elem = want.get(out.name)
        if elem is None or out.type.tensor_type.elem_type == elem:
            continue
        inner = out.name + "_before_cast"
        nodes = list(model.graph.node)
        at = next(i for i, n in enumerate(nodes) if out.name in n.output)
        nodes[at].output[:] = [inner if o == out.name else o for o in nodes[at].output]
        nodes.insert(at + 1, onnx.helper.make_node("Cast", [inner], [out.name], to=elem,
                                                   name=f"cast_{out.name}_to_contract"))
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        out.type.tensor_type.elem_type = elem


def convert_fp16(src: onnx.ModelProto) -> tuple[onnx.ModelProto, dict]:
    try:
        from onnxconverter_common import float16
    except ImportError as exc:
        raise UserError("--precision fp16 needs onnxconverter-common: pip install 'edge-saliency[export]'") from exc
    model = onnx.ModelProto()
    model.CopyFrom(src)
    _ensure_node_names(model)
    path_nodes = classifier_nodes(model)
    # saliency heads stay float32, and so do the Casts and the integer ops before them (the
    # uint8 image's layout/colour ops): the converter would mislabel their outputs as float16
    integer = {i.name for i in model.graph.input}
    block = []
    for n in model.graph.node:
        on_integers = n.op_type != "Cast" and bool(integer & set(n.input))
        if on_integers:
            integer.update(n.output)
        if n.name not in path_nodes or on_integers or n.op_type == "Cast":
            block.append(n.name)
    _unshare_initializers(model, set(block))
    with warnings.catch_warnings():  # "float32 number ... truncated": tiny weights, expected
        warnings.simplefilter("ignore")
        half = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=block,
                                                disable_shape_infer=False)
    _restore_output_types(half, src)
    info = {"dtype": "fp16", "tool": "onnxconverter_common.float16", "float32_nodes": len(block),
            "note": "backbone and classifier in fp16; saliency heads, inputs and outputs float32"}
    return half, info


# ------------------------------------------------------------------ entry point
def convert(src_path: str | os.PathLike, out_path: str | os.PathLike, precision: str,
            calibration: str | None = None, log=print, recipe: Int8Recipe | None = None) -> dict:
    """Write ``out_path``: ``src_path`` (an edge-saliency fp32 file) in ``precision``."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose from: {', '.join(PRECISIONS)}")
    src = _load(src_path)
    _input_size(src)  # is it ours?
    out = Path(out_path)
    t0 = time.perf_counter()
    props = _meta(src)
    if precision == "fp32":
        if Path(src_path).resolve() != out.resolve():
            write_atomic(src, out)
        return {"path": str(out), "precision": "fp32", "seconds": 0.0, "size_mb": out.stat().st_size / 1e6}
    if precision == "int8":
        images = folder_images(calibration) if calibration else calibration_images()
        log(f"int8: calibrating on {len(images)} images "
            f"({calibration or 'scikit-image/matplotlib photographs: ' + ', '.join(CALIBRATION_PHOTOS) + ', with flips and crops'})")
        model, info = quantize_int8(src, images, recipe=recipe or DEFAULT_RECIPE)
        info["calibration"]["source"] = str(calibration) if calibration else "default: " + ", ".join(CALIBRATION_PHOTOS)
    else:
        model, info = convert_fp16(src)
    _check_contract(model, src)
    props[contract.PREFIX + "precision"] = json.dumps(info)
    _set_meta(model, props)
    model.producer_name = "edge-saliency"
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise UserError(f"{precision} model failed onnx.checker: {str(exc).splitlines()[0]}") from exc
    write_atomic(model, out)
    return {"path": str(out), "precision": precision, "seconds": time.perf_counter() - t0,
            "size_mb": out.stat().st_size / 1e6, "info": info}
