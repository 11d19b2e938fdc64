"""`edge-saliency export` from torch: the front end of the graph builder.

    torch module (+ weights) -> plain ONNX export (dynamic batch, module names kept in node names)
        -> logits checked against torch on real photographs -> edge_saliency.graph.builder

Where the model comes from: a built-in arch (pretrained, offline) or ``--module pkg.mod:build``
(any callable returning an nn.Module) with ``--weights`` (a state dict). Everything after the
plain export (discovery, preprocessing, the saliency heads, metadata, checks, precision) is the
builder's, the same as for ``export --onnx``. Only what needs torch lives here.
"""
from __future__ import annotations

import importlib
import io
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from edge_saliency.errors import UserError
from edge_saliency.graph import builder
from edge_saliency.graph.builder import BuildSpec
from edge_saliency.graph.model_file import check_writable
from export import zoo

OPSET = 17
PLAIN_INPUT = "input"
LOGIT_TOLERANCE = 1e-4  # ORT vs torch, relative to the largest logit (at least 1)


@dataclass
class ExportOptions(BuildSpec):
    arch: str = "efficientnet_lite0"
    module: str | None = None
    weights: str | None = None
    pretrained: bool = True
    out: str | None = None


def _load_module(spec: str) -> nn.Module:
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise UserError(f"--module wants 'package.module:callable', got {spec!r}")
    sys.path.insert(0, str(Path.cwd()))
    if mod_name.split(".")[0] in ("torchvision", "timm"):
        from export.thirdparty import import_torchvision

        import_torchvision()  # their model code, without torchvision's compiled ops
    try:
        mod = importlib.import_module(mod_name)
    except Exception as exc:
        raise UserError(f"cannot import {mod_name!r} for --module: {type(exc).__name__}: {exc}") from exc
    make = getattr(mod, attr, None)
    if make is None:
        raise UserError(f"module {mod_name!r} has no attribute {attr!r}")
    try:
        model = make() if not isinstance(make, nn.Module) else make
    except Exception as exc:
        raise UserError(f"{spec}() failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise UserError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def load_weights(model: nn.Module, path: str) -> None:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"weights file not found: {path}")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"cannot read weights {path}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"{path} holds a {type(state).__name__}, expected a state dict")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = [line.strip() for line in str(exc).splitlines() if line.strip()][1:2] or [str(exc)]
        raise UserError(f"weights {path} do not fit the model: {first[0][:200]}") from exc


def _first_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    if isinstance(out, dict) and out:
        return _first_tensor(next(iter(out.values())))
    raise UserError(f"the model returns {type(out).__name__}, not a tensor of class scores")


class _Scores(nn.Module):
    """The user's model with its first output as the only one (aux outputs, dicts)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return _first_tensor(self.model(x))


def export_plain(model: nn.Module, input_size: tuple[int, int]) -> onnx.ModelProto:
    """The classifier as ONNX as torch exports it: float NCHW ``input`` -> ``logits``, batch dynamic."""
    h, w = input_size
    x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        raw = model(x)
    out = _first_tensor(raw)
    if out.ndim != 2 or out.shape[0] != 1 or out.shape[1] < 2:
        raise UserError(f"not a CNN classifier: the model outputs {list(out.shape)}, not class scores [N, K]")
    wrapped = model if isinstance(raw, torch.Tensor) else _Scores(model)
    buf = io.BytesIO()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # shape-dependent Python in user models is expected: the export is for one input size
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapped, (x,), buf, dynamo=False, opset_version=OPSET, input_names=[PLAIN_INPUT],
                              output_names=["logits"], dynamic_axes={PLAIN_INPUT: {0: "batch"}, "logits": {0: "batch"}},
                              do_constant_folding=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"torch cannot export the model to ONNX: {type(exc).__name__}: {first[:300]}") from exc
    return onnx.load_from_string(buf.getvalue())


def check_logits(plain: onnx.ModelProto, model: nn.Module, images: np.ndarray, mean, std) -> float:
    """ORT vs torch logits on ``images`` (uint8 BGR NHWC), at batch 1 and the full batch; returns
    the largest difference relative to the largest logit."""
    x = builder.preprocess(images, mean, std, "rgb", "nchw")
    sess = builder.session(plain)
    worst = 0.0
    for batch in (x[:1], x):
        got = sess.run(None, {PLAIN_INPUT: batch})[0]
        with torch.no_grad():
            want = _first_tensor(model(torch.from_numpy(batch))).numpy()
        scale = max(1.0, float(np.abs(want).max()))
        diff = float(np.abs(got.astype(np.float64) - want).max()) / scale
        if not diff <= LOGIT_TOLERANCE:
            raise builder.BuildCheckError(f"export check failed: ONNX Runtime's logits differ from torch's by "
                                          f"{diff:.1e} of their scale (bound {LOGIT_TOLERANCE:.0e})")
        worst = max(worst, diff)
    return worst


def export_from_options(opts: ExportOptions, log=print) -> dict:
    out = Path(opts.out or f"{opts.arch if not opts.module else opts.module.split(':')[-1]}.onnx")
    opts.validate()
    check_writable(out)  # fail before minutes of work
    if opts.module:
        model = _load_module(opts.module)
        arch = opts.module
        size = opts.input_size or (224, 224)
        mean, std = opts.mean or builder.IMAGENET_MEAN, opts.std or builder.IMAGENET_STD
    else:
        entry = zoo.get(opts.arch)
        size = opts.input_size or (entry.input_size, entry.input_size)
        model = entry.build(opts.pretrained and not opts.weights, size)
        arch = opts.arch
        mean, std = opts.mean or entry.mean, opts.std or entry.std
    if opts.weights:
        load_weights(model, opts.weights)
    spec = BuildSpec(**{**opts.spec_fields(), "mean": tuple(mean), "std": tuple(std), "input_size": tuple(size)})
    return export_module(model, spec, out, arch, log)


def export_module(model: nn.Module, spec: BuildSpec, out: Path, arch: str, log=print) -> dict:
    """Any torch classifier -> a checked edge-saliency ONNX file at ``out``. ``spec.input_size``
    (default 224) and ``spec.mean``/``spec.std`` (default ImageNet's) describe the model's input."""
    size = tuple(spec.input_size or (224, 224))
    mean, std = spec.mean or builder.IMAGENET_MEAN, spec.std or builder.IMAGENET_STD
    if spec.color != "rgb" or spec.layout not in (None, "nchw"):
        raise UserError("a torch export takes NCHW RGB input (--color and --layout are for --onnx)")
    model.eval()
    log(f"exporting {arch} at {size[0]}x{size[1]} to ONNX (torch {torch.__version__}, opset {OPSET})")
    plain = export_plain(model, size)
    parity = check_logits(plain, model, builder.check_images(size), mean, std)
    spec = BuildSpec(**{**spec.spec_fields(), "mean": tuple(mean), "std": tuple(std), "layout": "nchw",
                        "input_size": None})
    report = builder.build_file(plain, spec, Path(out), arch, source="torch", log=log,
                                extra_export={"torch": torch.__version__, "logits_vs_torch": parity})
    report["logits_vs_torch"] = parity
    return report
