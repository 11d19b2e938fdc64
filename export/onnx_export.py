"""Export a CNN with its saliency heads to one checked ONNX file (the contract in DESIGN.md).

Checks before anything is written: onnx.checker (full), strict shape inference, and ONNX Runtime
against torch on real photographs (logits and every map within ``tolerance``, same target
class) at batch 1 and batch 3. A file that fails any check is not written; the error says why.
"""
from __future__ import annotations

import io
import os
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import onnx
import torch
from torch import nn

import edge_saliency
from edge_saliency import contract
from edge_saliency.errors import UserError
from export import graph_passes
from export.discovery import Structure
from export.model_file import check_writable, write_atomic
from export.saliency_module import SaliencyConfig, SaliencyExport

OPSET = 17
TOLERANCE = 1e-4
# SMOE's log2(a + 1e-7) turns the ~1e-5 differences between ONNX Runtime's and torch's conv
# kernels at activations near zero into map differences of up to a few 1e-3 at a handful of
# pixels (measured: 11 of 47,040 values on the parity photos, max 2.4e-3, for EfficientNet-Lite0
# with the paper's eps). So for the SMOE outputs the 1e-4 bound must hold for 99.9% of values
# and SMOE_MAX_TOLERANCE everywhere; with --smoe-eps 1e-3 they meet 1e-4 everywhere.
SMOE_OUTPUTS = (contract.SMOE, contract.SMOE_SCALES)
SMOE_INLIER_FRACTION = 0.999
SMOE_MAX_TOLERANCE = 1e-2


class ExportCheckError(UserError):
    """The exported graph failed a check; nothing was written."""


def build_metadata(
    wrapper: SaliencyExport, arch: str, labels: list[str], input_size: tuple[int, int],
    mean, std,
) -> dict:
    cfg: SaliencyConfig = wrapper.config
    s: Structure = wrapper.structure
    meta = {
        "version": contract.CONTRACT_VERSION,
        "arch": arch,
        "labels": labels,
        "input": {
            "name": contract.INPUT, "size": list(input_size), "layout": "NHWC", "dtype": "uint8",
            "color": "BGR", "mean": list(mean), "std": list(std), "range": [0, 255],
            "class_index_input": cfg.class_input,
        },
        "scales": [
            {"layer": e.name, "call": e.call, "channels": e.channels, "resolution": list(e.size)}
            for e in s.scale_ends
        ],
        "methods": [m for m in contract.METHODS if m in cfg.methods],
    }
    if wrapper.want_smoe:
        meta["smoe"] = {
            "statistic": "smoe_scale", "normaliser": f"{cfg.normaliser}_cdf",
            "weights": wrapper.smoe_weights, "map_size": list(cfg.map_size), "eps": cfg.smoe_eps,
        }
    if wrapper.gradient_methods:
        meta["gradient_cams"] = {
            "methods": wrapper.gradient_methods, "gradient": "analytic (GAP + linear head)",
            "score": "logit", "feature_layer": s.head.feature.name, "map_size": list(s.head.feature.size),
        }
    if wrapper.want_recipro:
        meta["recipro"] = {
            "score": cfg.recipro_score, "variant": cfg.recipro_variant, "path": s.head.kind,
            "feature_layer": s.head.feature.name, "map_size": list(s.head.feature.size),
        }
    return meta


def _to_onnx(wrapper: SaliencyExport, input_size: tuple[int, int]) -> onnx.ModelProto:
    h, w = input_size
    image = torch.zeros(1, h, w, 3, dtype=torch.uint8)
    args: tuple = (image,)
    inputs = [contract.INPUT]
    if wrapper.config.class_input:
        args = (image, torch.full((1,), -1, dtype=torch.int64))
        inputs.append(contract.CLASS_INPUT)
    outputs = wrapper.output_names()
    dynamic = {name: {0: "batch"} for name in inputs + outputs}
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # shape-dependent Python in user models is expected: the export is for one input size
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            wrapper, args, buf, dynamo=False, opset_version=OPSET, input_names=inputs,
            output_names=outputs, dynamic_axes=dynamic, do_constant_folding=True,
        )
    return onnx.load_from_string(buf.getvalue())


def _check_graph(model: onnx.ModelProto, outputs: list[str]) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as exc:
        raise ExportCheckError(f"export check failed: onnx.checker: {str(exc).splitlines()[0]}") from exc
    names = [o.name for o in inferred.graph.output]
    if names != outputs:
        raise ExportCheckError(f"export check failed: outputs are {names}, expected {outputs}")


def parity_images(input_size: tuple[int, int]) -> np.ndarray:
    """Real photographs, resized as the runtime does: [3, H, W, 3] uint8 BGR."""
    from edge_saliency import samples

    h, w = input_size
    names = ["chelsea", "coffee", "astronaut"]
    return np.stack([cv2.resize(samples.photo(n), (w, h), interpolation=cv2.INTER_AREA) for n in names])


def check_parity(
    model: onnx.ModelProto, wrapper: SaliencyExport, images: np.ndarray, tolerance: float = TOLERANCE
) -> dict[str, float]:
    """ORT vs torch on ``images`` at batch 1 and at the full batch; returns max |diff| per output."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = wrapper.output_names()
    worst = {n: 0.0 for n in names}
    outliers = {n: 0 for n in names}
    counts = {n: 0 for n in names}
    for batch in (images[:1], images):
        feeds = {contract.INPUT: batch}
        targs: tuple = (torch.from_numpy(batch),)
        if wrapper.config.class_input:
            cls = np.full((len(batch),), -1, dtype=np.int64)
            feeds[contract.CLASS_INPUT] = cls
            targs = (torch.from_numpy(batch), torch.from_numpy(cls))
        got = sess.run(names, feeds)
        with torch.no_grad():
            want = [t.numpy() for t in wrapper(*targs)]
        for name, g, t in zip(names, got, want):
            if g.shape != t.shape:
                raise ExportCheckError(f"export check failed: {name} has shape {g.shape} in ONNX Runtime, {t.shape} in torch")
            if name == contract.TARGET:
                if not np.array_equal(g, t):
                    raise ExportCheckError(f"export check failed: target_class differs: ONNX {g.tolist()} vs torch {t.tolist()}")
                continue
            if not np.all(np.isfinite(g)):
                raise ExportCheckError(f"export check failed: {name} has NaN or inf in ONNX Runtime")
            diff = np.abs(g.astype(np.float64) - t)
            worst[name] = max(worst[name], float(diff.max()))
            outliers[name] += int((diff > tolerance).sum())
            counts[name] += diff.size
    for name, diff in worst.items():
        if name == contract.TARGET:
            continue
        if name in SMOE_OUTPUTS:
            share = 1.0 - outliers[name] / counts[name]
            if share < SMOE_INLIER_FRACTION or diff > SMOE_MAX_TOLERANCE:
                raise ExportCheckError(
                    f"export check failed: {name} differs between ONNX Runtime and torch by more than "
                    f"{tolerance:.0e} at {outliers[name]} of {counts[name]} values (max {diff:.2e}); "
                    f"activations near zero make log2(a + eps) ill-conditioned: try --smoe-eps 1e-3"
                )
        elif diff > tolerance:
            raise ExportCheckError(
                f"export check failed: {name} differs between ONNX Runtime and torch by {diff:.2e} "
                f"(max allowed {tolerance:.0e})"
            )
    return {"max_abs_diff": worst, "values_over_tolerance": outliers, "values": counts}


def export_onnx(
    model: nn.Module,
    structure: Structure,
    out: str | os.PathLike,
    *,
    arch: str,
    labels: list[str],
    input_size: tuple[int, int],
    mean, std,
    config: SaliencyConfig,
    tolerance: float = TOLERANCE,
    log=print,
) -> dict:
    """Export, check and write. Returns a report (paths, parity, timings)."""
    out = Path(out)
    check_writable(out)
    if len(labels) != structure.num_classes:
        raise UserError(f"{len(labels)} labels for a model with {structure.num_classes} classes")
    t0 = time.perf_counter()
    wrapper = SaliencyExport(model, structure, mean, std, config).eval()
    log(f"exporting {arch} at {input_size[0]}x{input_size[1]} with methods: {', '.join(config.methods) or 'none'}")
    onnx_model = _to_onnx(wrapper, input_size)
    passes = graph_passes.optimise(onnx_model)  # before the checks, so parity covers them
    meta = build_metadata(wrapper, arch, labels, input_size, mean, std)
    meta["export"] = {
        "opset": OPSET, "dynamic_batch": True, "torch": torch.__version__,
        "edge_saliency": edge_saliency.__version__, "onnx": onnx.__version__,
        "config": asdict(config), "graph_passes": passes,
    }
    log("checking: onnx.checker, shape inference, ONNX Runtime vs torch on real images")
    _check_graph(onnx_model, wrapper.output_names())
    parity = check_parity(onnx_model, wrapper, parity_images(input_size), tolerance)
    meta["export"]["parity"] = parity
    for k, v in contract.encode_metadata(meta).items():
        entry = onnx_model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx_model.producer_name = "edge-saliency"
    write_atomic(onnx_model, out)
    return {
        "path": str(out), "size_mb": out.stat().st_size / 1e6, "parity": parity,
        "seconds": time.perf_counter() - t0, "outputs": wrapper.output_names(), "metadata": meta,
    }
