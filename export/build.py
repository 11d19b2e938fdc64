"""`edge-saliency export`: from CLI options to a checked ONNX file.

Where the model comes from: a built-in arch (pretrained, offline) or ``--module pkg.mod:build``
(any callable returning an nn.Module) with ``--weights`` (a state dict).
"""
from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from edge_saliency import contract
from edge_saliency.errors import UserError
from edge_saliency.labels import imagenet_labels, read_labels
from export import zoo
from export.discovery import discover
from export.methods import recipro_cam, normalise
from export.model_file import check_writable
from export.onnx_export import export_onnx
from export.saliency_module import SaliencyConfig

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@dataclass
class ExportOptions:
    arch: str = "efficientnet_lite0"
    module: str | None = None
    weights: str | None = None
    pretrained: bool = True
    out: str | None = None
    input_size: tuple[int, int] | None = None
    methods: tuple[str, ...] = contract.DEFAULT_METHODS
    labels: str | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    scale_layers: list[str] | None = None
    feature_layer: str | None = None
    smoe_weights: list[float] | None = None
    normaliser: str = "gaussian"
    smoe_eps: float = 1e-3  # see SaliencyConfig.smoe_eps
    recipro_score: str = "logit"
    recipro_variant: str = "onehot"
    map_fraction: int = 4
    class_input: bool = False
    precision: str = "fp32"  # fp32 | fp16 | int8 (export.quantize, after the fp32 checks)
    calibration: str | None = None  # folder of images for int8 calibration
    extra: dict = field(default_factory=dict)


def parse_methods(text: str) -> tuple[str, ...]:
    items = [m.strip().lower() for m in text.split(",") if m.strip()]
    if items in (["none"], []):
        return ()
    if items == ["all"]:
        return contract.METHODS
    bad = [m for m in items if m not in contract.METHODS]
    if bad:
        raise UserError(f"unknown method {bad[0]!r} for --methods; choose from: {', '.join(contract.METHODS)}, all, none")
    return tuple(m for m in contract.METHODS if m in items)


def _load_module(spec: str) -> nn.Module:
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise UserError(f"--module wants 'package.module:callable', got {spec!r}")
    sys.path.insert(0, str(Path.cwd()))
    try:
        mod = importlib.import_module(mod_name)
    except Exception as exc:
        raise UserError(f"cannot import {mod_name!r} for --module: {type(exc).__name__}: {exc}") from exc
    builder = getattr(mod, attr, None)
    if builder is None:
        raise UserError(f"module {mod_name!r} has no attribute {attr!r}")
    try:
        model = builder() if not isinstance(builder, nn.Module) else builder
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


def export_from_options(opts: ExportOptions, log=print) -> dict:
    out = Path(opts.out or f"{opts.arch if not opts.module else opts.module.split(':')[-1]}.onnx")
    check_writable(out)  # fail before minutes of work
    if opts.precision not in ("fp32", "fp16", "int8"):
        raise UserError(f"unknown precision {opts.precision!r}; choose from: fp32, fp16, int8")
    if opts.calibration and opts.precision != "int8":
        raise UserError("--calibration is for --precision int8")
    if opts.calibration and not Path(opts.calibration).is_dir():
        raise UserError(f"--calibration {opts.calibration}: not a directory")
    if opts.normaliser not in normalise.NORMALISERS:
        raise UserError(f"unknown normaliser {opts.normaliser!r}; choose from: {', '.join(normalise.NORMALISERS)}")
    if opts.recipro_score not in recipro_cam.SCORES:
        raise UserError(f"unknown Recipro-CAM score {opts.recipro_score!r}; choose from: {', '.join(recipro_cam.SCORES)}")
    if opts.recipro_variant not in recipro_cam.VARIANTS:
        raise UserError(f"unknown Recipro-CAM variant {opts.recipro_variant!r}; choose from: {', '.join(recipro_cam.VARIANTS)}")
    scale_layers, feature_layer = opts.scale_layers, opts.feature_layer
    if opts.module:
        model = _load_module(opts.module)
        if opts.weights:
            load_weights(model, opts.weights)
        arch = opts.module
        size = opts.input_size or (224, 224)
        mean, std = opts.mean or IMAGENET_MEAN, opts.std or IMAGENET_STD
    else:
        entry = zoo.get(opts.arch)
        size = opts.input_size or (entry.input_size, entry.input_size)
        model = entry.build(opts.pretrained and not opts.weights, size)
        if opts.weights:
            load_weights(model, opts.weights)
        arch = opts.arch
        mean, std = opts.mean or entry.mean, opts.std or entry.std
        if scale_layers is None and entry.scale_layers:
            scale_layers = list(entry.scale_layers)
        feature_layer = feature_layer or entry.feature_layer
    model.eval()
    log(f"discovering scale ends of {arch} at {size[0]}x{size[1]}")
    structure = discover(model, size, scale_layers, feature_layer)
    for note in structure.notes:
        log(f"note: {note}")
    for e in structure.scale_ends:
        log(f"  scale end {e.name:<24} {e.channels:>5} ch  {e.size[0]}x{e.size[1]}")
    log(f"  head: {structure.head.kind} after {structure.head.feature.name}")
    if opts.labels:
        labels = read_labels(opts.labels)
    elif structure.num_classes == 1000:
        labels = imagenet_labels()
    else:
        labels = [f"class_{i}" for i in range(structure.num_classes)]
    if opts.smoe_weights is not None and len(opts.smoe_weights) != len(structure.scale_ends):
        raise UserError(f"--smoe-weights has {len(opts.smoe_weights)} values for {len(structure.scale_ends)} scale ends")
    if opts.smoe_weights is not None and (min(opts.smoe_weights) < 0 or sum(opts.smoe_weights) <= 0):
        raise UserError("--smoe-weights must be non-negative with a positive sum")
    if opts.map_fraction < 1:
        raise UserError("--map-fraction must be at least 1")
    config = SaliencyConfig(
        methods=opts.methods,
        map_size=(max(1, size[0] // opts.map_fraction), max(1, size[1] // opts.map_fraction)),
        smoe_weights=tuple(opts.smoe_weights) if opts.smoe_weights else None,
        normaliser=opts.normaliser, smoe_eps=opts.smoe_eps, recipro_score=opts.recipro_score,
        recipro_variant=opts.recipro_variant, class_input=opts.class_input,
    )
    report = export_onnx(model, structure, out, arch=arch, labels=labels, input_size=size,
                         mean=mean, std=std, config=config, log=log)
    if opts.precision != "fp32":
        from export.quantize import convert

        q = convert(out, out, opts.precision, opts.calibration, log=log)
        report.update(size_mb=q["size_mb"], precision=q["info"])
    return report
