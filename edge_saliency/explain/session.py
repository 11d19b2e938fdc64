"""What every explain / eval run opens and shares, for one image or a whole dataset: the
classifier (an edge-saliency model, or any ONNX classifier with --plain), the class to explain,
the black-box methods' settings from the flags, the model's preprocessing, and the results table."""
from __future__ import annotations

import math
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from edge_saliency.errors import UserError
from edge_saliency.explain import registry
from edge_saliency.explain.common import OnnxClassifier, SaliencyModelClassifier
from edge_saliency.quality import metrics

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def open_classifier(args):
    """(classifier, edge-saliency model or None). A file without edge-saliency metadata is opened as
    a plain ONNX classifier (float NCHW input) with --mean/--std/--bgr."""
    from edge_saliency.runtime.model import SaliencyModel

    if not args.model and getattr(args, "default_model", None) is None:
        raise UserError("no model given (--model)")
    path = args.model or str(args.default_model(log_fn=lambda m: print(m, file=sys.stderr)))
    if not args.plain:
        try:
            model = SaliencyModel(path, provider=args.provider, threads=args.threads)
            return SaliencyModelClassifier(model), model
        except UserError as exc:
            if "edge-saliency" not in str(exc) or not Path(path).is_file():
                raise
    labels = None
    if args.labels:
        from edge_saliency.labels import read_labels

        labels = read_labels(args.labels)
    mean = _floats(args.mean, "--mean") if args.mean else (123.675, 116.28, 103.53)
    std = _floats(args.std, "--std") if args.std else (58.395, 57.12, 57.375)
    size = None
    if args.input_size:
        size = tuple(int(v) for v in args.input_size.lower().replace("x", ",").split(","))
        size = size * 2 if len(size) == 1 else size
    return OnnxClassifier(path, mean, std, bgr=args.bgr, input_size=size, labels=labels,
                          provider=args.provider, threads=args.threads), None


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"{what} wants 3 comma-separated numbers, got {text!r}") from None
    if len(vals) != 3:
        raise UserError(f"{what} wants 3 comma-separated numbers, got {text!r}")
    return vals


def class_index_of(classifier, model, name: str | None) -> int | None:
    if name is None:
        return None
    if model is not None:
        return model.class_index(name)
    labels = classifier.labels
    if str(name).lstrip("-").isdigit():
        idx = int(name)
        if labels is not None and not 0 <= idx < len(labels):
            raise UserError(f"class index {idx} out of range 0..{len(labels) - 1}")
        return idx
    if labels is None:  # labels are known after the first query
        classifier.logits(np.zeros((1, *classifier.input_size, 3), dtype=np.uint8))
        labels = classifier.labels
    lowered = [lab.lower() for lab in labels]
    if name.lower() not in lowered:
        raise UserError(f"no class named {name!r} in the model's labels")
    return lowered.index(name.lower())


def method_settings(args, names: list[str]) -> dict:
    """Settings of the chosen black-box methods from the flags (checked: a bad value is one line)."""
    s = {}
    for name, cls in registry.SETTINGS.items():
        if name not in names:
            continue
        st = cls(seed=args.seed, budget=args.budget)
        for flag, field in (("grid", "grid"), ("population", "population"), ("generations", "generations"),
                            ("de_f", "F"), ("de_cr", "CR"), ("sparsity", "sparsity"), ("masks", "masks"),
                            ("opt_steps", "steps"), ("pairs", "pairs"), ("keep", "keep"),
                            ("fill", "fill"), ("refine", "refine"), ("de_strategy", "strategy"),
                            ("prune", "prune"), ("de_boxes", "boxes")):
            v = getattr(args, flag, None)
            if v is not None and hasattr(st, field):
                st = replace(st, **{field: v})
        st.check()
        s[name] = st
    return s


def preprocess(classifier, model, image: np.ndarray) -> np.ndarray:
    if model is not None:
        return model.preprocess(image)
    h, w = classifier.input_size
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)


COLUMNS = [("avg_drop", "AvgDrop"), ("coherency", "Coherency"), ("complexity", "Complexity"), ("adcc", "ADCC"),
           ("insertion", "Insert"), ("deletion", "Delete"), ("pointing", "Pointing"),
           ("reconstruction", "Recon"), ("ms", "ms/map"), ("queries", "queries/map")]


def format_table(summary: dict, with_pointing: bool) -> str:
    cols = [(k, t) for k, t in COLUMNS if with_pointing or k != "pointing"]
    head = f"{'method':<9}" + "".join(f"{t:>12}" for _, t in cols)
    lines = [head, "-" * len(head)]
    for method, vals in summary.items():
        cells = []
        for k, _ in cols:
            v = vals.get(k)
            cells.append(f"{'-':>12}" if v is None or (isinstance(v, float) and math.isnan(v))
                         else f"{v:>12.0f}" if k in ("ms", "queries") else f"{v:>12.3f}")
        lines.append(f"{method:<9}" + "".join(cells))
    return "\n".join(lines)


def overlay(image: np.ndarray, saliency: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    m = metrics.resize_map(saliency, image.shape[:2])
    heat = cv2.applyColorMap(np.clip(m * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(image, 1 - alpha, heat, alpha, 0)


def json_default(o):
    """json.dumps(default=...) for numpy values in results."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
