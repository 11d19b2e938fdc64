"""Precision variants of an edge-saliency ONNX file: fp16 (for GPU providers) and int8 (static QDQ).

    edge-saliency export --precision int8 --calibration images/   # fp32 export + checks, then int8
    python -m export.quantize fp32.onnx int8.onnx --precision int8 [--calibration DIR] [--report]

Both keep the contract: input ``image`` uint8 [N, H, W, 3] BGR, outputs with the same names,
dtypes (float32 maps and logits, int64 target_class) and shapes, and every ``edge_saliency.*``
metadata entry; ``edge_saliency.precision`` records what was done.

Which nodes change precision: only the **classifier path**, the nodes that ``logits`` depends on
(preprocessing, backbone, head). The saliency subgraphs (SMOE's Log/ReduceMean/Erf/Resize,
Recipro-CAM's masked head) are found as "everything else" and stay float32: they read the
backbone's (dequantised) activations, so the maps follow the quantised model's features without
their own arithmetic being quantised. Nothing here depends on node names, so any exported
architecture works.

- int8: ``onnxruntime.quantization.quantize_static``, QDQ format, per-channel int8 weights,
  uint8 activations (QUInt8/QInt8 is ORT's recommended CPU pair), percentile calibration on real
  photographs (a folder of images, or by default the scikit-image photographs from
  ``edge_saliency.samples`` with a few crops and flips of each). It is fast on CPUs with
  VNNI (AVX512-VNNI / AVX-VNNI on x86, dot-product on ARMv8.2+); on older x86 CPUs the int8
  kernels may be no faster than fp32 (see ORT's quantisation docs).
- fp16: ``onnxconverter_common.float16`` with ``keep_io_types`` and the saliency nodes in the
  block list: the backbone in half precision, maps and logits still float32. Meant for CUDA /
  TensorRT; ONNX Runtime's CPU provider lacks fp16 kernels for several ops and may refuse it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import onnx

from edge_saliency import contract
from edge_saliency.errors import UserError

PRECISIONS = ("fp32", "fp16", "int8")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# ops quantised on the classifier path (ReLU6 = Clip and residual Adds keep activations in int8
# between convolutions; GlobalAveragePool feeds the classifier)
INT8_OP_TYPES = ("Conv", "Gemm", "MatMul", "Clip", "Relu", "Add", "GlobalAveragePool", "AveragePool", "MaxPool")
# photographs for calibration and the accuracy report (all ship with scikit-image)
CALIBRATION_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "hubble_deep_field")
REPORT_PHOTOS = CALIBRATION_PHOTOS + ("immunohistochemistry", "retina", "camera", "brick", "grass",
                                      "gravel", "clock", "coins", "moon")


# ------------------------------------------------------------------ images
def views(img: np.ndarray) -> list[np.ndarray]:
    """A photo, its horizontal flip, and two crops (centre 70%, top-left 80%): more distinct inputs
    from few photographs, for calibration and for the agreement statistic."""
    h, w = img.shape[:2]
    ch, cw = int(h * 0.7), int(w * 0.7)
    y, x = (h - ch) // 2, (w - cw) // 2
    return [img, np.ascontiguousarray(img[:, ::-1]), np.ascontiguousarray(img[y:y + ch, x:x + cw]),
            np.ascontiguousarray(img[: int(h * 0.8), : int(w * 0.8)])]


def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """As the runtime does (SaliencyModel.preprocess): INTER_AREA when shrinking."""
    h, w = size
    interp = cv2.INTER_AREA if img.shape[0] > h or img.shape[1] > w else cv2.INTER_LINEAR
    return cv2.resize(img, (w, h), interpolation=interp)


def sample_images(names=CALIBRATION_PHOTOS, with_views: bool = True) -> list[np.ndarray]:
    from edge_saliency import samples

    out = []
    for n in names:
        img = samples.photo(n)
        out.extend(views(img) if with_views else [img])
    return out


def folder_images(folder: str | os.PathLike, limit: int = 500) -> list[np.ndarray]:
    """BGR images of a folder (recursively, sorted), at most ``limit``."""
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"--calibration {folder}: not a directory")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())[:limit]
    images = []
    for p in files:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is not None:
            images.append(img)
    if not images:
        raise UserError(f"--calibration {folder}: no readable images ({', '.join(IMAGE_SUFFIXES)})")
    return images


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


def _write(model: onnx.ModelProto, out: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.resolve().parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(model.SerializeToString())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_contract(model: onnx.ModelProto, reference: onnx.ModelProto) -> None:
    """Same inputs/outputs (names and element types) as the fp32 file."""
    def sig(values):
        return [(v.name, v.type.tensor_type.elem_type) for v in values]
    if sig(model.graph.input) != sig(reference.graph.input) or sig(model.graph.output) != sig(reference.graph.output):
        raise UserError(f"precision conversion changed the model's inputs/outputs: {sig(model.graph.input)} -> "
                        f"{sig(model.graph.output)}; expected {sig(reference.graph.input)} -> {sig(reference.graph.output)}")


# ------------------------------------------------------------------ int8
class _ImageReader:
    """onnxruntime.quantization CalibrationDataReader over resized BGR uint8 images, batch 1."""

    def __init__(self, images: list[np.ndarray], size: tuple[int, int], class_input: bool, progress=None):
        self.batches = [resize(img, size)[None] for img in images]
        self.class_input = class_input
        self.i = 0
        self.progress = progress

    def get_next(self):
        if self.i >= len(self.batches):
            return None
        feed = {contract.INPUT: self.batches[self.i]}
        if self.class_input:
            feed[contract.CLASS_INPUT] = np.full((1,), -1, dtype=np.int64)
        self.i += 1
        if self.progress:
            self.progress(self.i, len(self.batches))
        return feed

    def rewind(self):
        self.i = 0


def _progress_line(i: int, n: int) -> None:
    sys.stderr.write(f"\rcalibrating {i}/{n}")
    if i == n:
        sys.stderr.write("\n")
    sys.stderr.flush()


def quantize_int8(src: onnx.ModelProto, images: list[np.ndarray], progress=_progress_line) -> tuple[onnx.ModelProto, dict]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    size = _input_size(src)
    class_input = any(i.name == contract.CLASS_INPUT for i in src.graph.input)
    with tempfile.TemporaryDirectory(prefix="edge_saliency_q_") as tmp:
        raw, pre, out = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        onnx.save(src, str(raw))
        # ORT's recommended pre-processing: shape inference + graph optimisation (fuses, folds)
        quant_pre_process(str(raw), str(pre), skip_symbolic_shape=True)
        model = onnx.load(str(pre))
        _ensure_node_names(model)
        onnx.save(model, str(pre))
        path_nodes = classifier_nodes(model)
        to_quantize = sorted(n.name for n in model.graph.node if n.name in path_nodes and n.op_type in INT8_OP_TYPES)
        kept_float = sorted({n.op_type for n in model.graph.node if n.name not in path_nodes})
        reader = _ImageReader(images, size, class_input, progress)
        quantize_static(
            str(pre), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            op_types_to_quantize=list(INT8_OP_TYPES), nodes_to_quantize=to_quantize,
            calibrate_method=CalibrationMethod.Percentile,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
        q = onnx.load(str(out))
    info = {
        "dtype": "int8", "format": "QDQ", "tool": "onnxruntime.quantization.quantize_static",
        "weights": "int8 per-channel symmetric", "activations": "uint8 per-tensor asymmetric",
        "calibration": {"method": "Percentile 99.999", "images": len(images)},
        "quantized_nodes": len(to_quantize), "float_saliency_ops": kept_float,
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
            calibration: str | None = None, log=print) -> dict:
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
            _write(src, out)
        return {"path": str(out), "precision": "fp32", "seconds": 0.0, "size_mb": out.stat().st_size / 1e6}
    if precision == "int8":
        images = folder_images(calibration) if calibration else sample_images()
        log(f"int8: calibrating on {len(images)} images "
            f"({calibration or 'scikit-image photographs: ' + ', '.join(CALIBRATION_PHOTOS) + ', with flips and crops'})")
        model, info = quantize_int8(src, images)
        info["calibration"]["source"] = str(calibration) if calibration else "scikit-image photographs"
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
    _write(model, out)
    return {"path": str(out), "precision": precision, "seconds": time.perf_counter() - t0,
            "size_mb": out.stat().st_size / 1e6, "info": info}


# ------------------------------------------------------------------ accuracy cost
def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    na, nb = np.sqrt((a * a).sum()), np.sqrt((b * b).sum())
    if na < 1e-12 and nb < 1e-12:
        return 1.0  # both flat: the same map
    if na < 1e-12 or nb < 1e-12:
        return 0.0
    return float((a * b).sum() / (na * nb))


def accuracy_report(reference_path, variant_path, images: list[np.ndarray], provider: str = "cpu",
                    threads: int | None = None) -> dict:
    """Top-1 agreement of ``variant`` with ``reference`` and per-map Pearson correlations
    (smoe, each scale of smoe_scales, recipro_cam) on ``images`` (BGR, any size)."""
    from edge_saliency.model import SaliencyModel

    ref = SaliencyModel(reference_path, provider=provider, threads=threads)
    var = SaliencyModel(variant_path, provider=provider, threads=threads)
    agree, n = 0, 0
    confident = []  # agreement where the fp32 top-1 probability is >= 0.5
    corr: dict[str, list[float]] = {}
    for img in images:
        x = ref.preprocess(img)[None]
        a, b = ref.run(x), var.run(x)
        n += 1
        same = int(a[contract.TARGET][0] == b[contract.TARGET][0])
        agree += same
        logits = a[contract.LOGITS][0].astype(np.float64)
        p = np.exp(logits - logits.max())
        if p.max() / p.sum() >= 0.5:
            confident.append(same)
        for name in (contract.SMOE, contract.RECIPRO):
            if name in a:
                corr.setdefault(name, []).append(pearson(a[name][0], b[name][0]))
        if contract.SMOE_SCALES in a:
            for s in range(a[contract.SMOE_SCALES].shape[1]):
                corr.setdefault(f"{contract.SMOE_SCALES}[{s}]", []).append(
                    pearson(a[contract.SMOE_SCALES][0, s], b[contract.SMOE_SCALES][0, s]))
    return {
        "images": n, "top1_agreement": agree / max(n, 1),
        "confident_images": len(confident), "top1_agreement_confident": float(np.mean(confident)) if confident else None,
        "map_correlation": {k: {"mean": float(np.mean(v)), "min": float(np.min(v))} for k, v in corr.items()},
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.quantize", description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="fp32 edge-saliency ONNX file")
    p.add_argument("out", help="output file")
    p.add_argument("--precision", default="int8", choices=PRECISIONS)
    p.add_argument("--calibration", help="folder of images for int8 calibration (default: scikit-image photos)")
    p.add_argument("--report", action="store_true", help="print the accuracy cost against the fp32 file")
    args = p.parse_args(argv)
    try:
        r = convert(args.src, args.out, args.precision, args.calibration)
        print(f"wrote {r['path']} ({r['size_mb']:.1f} MB, {args.precision}) in {r['seconds']:.1f}s")
        if args.report:
            images = sample_images(REPORT_PHOTOS)
            print(json.dumps(accuracy_report(args.src, args.out, images), indent=1))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
