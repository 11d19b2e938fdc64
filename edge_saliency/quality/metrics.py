"""How saliency maps are judged, from model outputs only (no torch, no gradients).

All functions take ``probs_fn``: a uint8 BGR batch [N, H, W, 3] -> softmax probabilities [N, K].
Scores are softmax probabilities of the target class ``cls``. Maps are float arrays in [0, 1]
at any resolution; they are resized bilinearly to the image's size where pixels are compared.

- AverageDrop = max(0, Y_c - O_c) / Y_c, O_c the score on ``image * map`` (black where map = 0);
- Coherency   = (Pearson(map, map') + 1) / 2, map' the same method's map of ``image * map``;
- Complexity  = mean(map);
- ADCC        = 3 / (1/Coherency + 1/(1 - Complexity) + 1/(1 - AverageDrop))  (0 when a term is 0);
- insertion / deletion AUC: pixels by descending saliency; deletion turns them into the
  ``delete_to`` image (black), insertion copies them from the image onto ``insert_from`` (a blurred
  copy); the score curve over the fraction of pixels in [0, 1] is integrated with the trapezoid rule;
- pointing game: the map's argmax (in the original image's pixels) falls inside a ground-truth box,
  with a tolerance in pixels (15, as in Zhang et al.);
- reconstruction accuracy: keep the top ``keep`` fraction of salient pixels, fill the rest from
  other content (other images, a blurred copy, noise), and count how often the model's top-1
  decision is unchanged.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from edge_saliency import numeric

from edge_saliency.errors import UserError

ProbsFn = Callable[[np.ndarray], np.ndarray]


def resize_map(saliency: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[h, w] -> [H, W] float32, bilinear."""
    saliency = np.asarray(saliency, dtype=np.float32)
    if saliency.shape == tuple(size):
        return saliency
    return cv2.resize(saliency, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def masked_image(image: np.ndarray, saliency: np.ndarray) -> np.ndarray:
    """``image * map`` as uint8 (the map resized to the image)."""
    m = resize_map(saliency, image.shape[:2])[..., None]
    return np.clip(np.rint(image.astype(np.float32) * m), 0, 255).astype(np.uint8)


def average_drop(y: float, o: float) -> float:
    if y <= 0:
        raise ValueError("the clean score Y_c must be positive")
    return max(0.0, y - o) / y


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two maps (b resized to a's shape). Constant maps: 1 when both are
    the same constant, else 0 (no linear relation to measure)."""
    a = np.asarray(a, dtype=np.float64)
    return numeric.pearson(a, resize_map(b, a.shape))


def coherency(saliency: np.ndarray, saliency_masked: np.ndarray) -> float:
    return (pearson(saliency, saliency_masked) + 1.0) / 2.0


def complexity(saliency: np.ndarray) -> float:
    return float(np.mean(saliency))


def adcc(avg_drop: float, coh: float, comp: float) -> float:
    if coh <= 0 or comp >= 1 or avg_drop >= 1:
        return 0.0
    return 3.0 / (1.0 / coh + 1.0 / (1.0 - comp) + 1.0 / (1.0 - avg_drop))


def adcc_parts(probs_fn: ProbsFn, image: np.ndarray, saliency: np.ndarray, cls: int,
               explain_fn: Callable[[np.ndarray], np.ndarray]) -> dict:
    """AverageDrop, Coherency, Complexity and ADCC of one map. ``explain_fn(image) -> map`` recomputes
    the same method's map (same class) on ``image * map``. Two classifier queries plus explain_fn."""
    full = resize_map(saliency, image.shape[:2])
    masked = masked_image(image, full)
    probs = probs_fn(np.stack([image, masked]))
    y, o = float(probs[0, cls]), float(probs[1, cls])
    ad = average_drop(y, o)
    again = resize_map(explain_fn(masked), image.shape[:2])
    coh = coherency(full, again)
    comp = complexity(full)
    return {"avg_drop": ad, "coherency": coh, "complexity": comp, "adcc": adcc(ad, coh, comp),
            "clean_score": y, "masked_score": o}


def blurred(image: np.ndarray, sigma: float = 5.0) -> np.ndarray:
    """The insertion metric's starting canvas (RISE uses a Gaussian blur, kernel 11, sigma 5)."""
    k = int(2 * round(3 * sigma) + 1)
    return cv2.GaussianBlur(image, (k, k), sigma)


def insertion_deletion(probs_fn: ProbsFn, image: np.ndarray, saliency: np.ndarray, cls: int, steps: int = 32,
                       insert_from: np.ndarray | None = None, delete_to: np.ndarray | None = None) -> dict:
    """Insertion and deletion AUC (and their curves). 2 * (steps + 1) classifier queries."""
    if steps < 1:
        raise ValueError("steps must be >= 1")
    h, w = image.shape[:2]
    n = h * w
    order = np.argsort(-resize_map(saliency, (h, w)).ravel(), kind="stable")
    counts = np.rint(np.linspace(0, n, steps + 1)).astype(np.int64)
    start_ins = blurred(image) if insert_from is None else insert_from
    end_del = np.zeros_like(image) if delete_to is None else delete_to
    src, ins0, del0 = image.reshape(n, 3), start_ins.reshape(n, 3), end_del.reshape(n, 3)
    batch = np.empty((2 * (steps + 1), h, w, 3), dtype=np.uint8)
    for i, k in enumerate(counts):
        idx = order[:k]
        ins = ins0.copy()
        ins[idx] = src[idx]
        dele = src.copy()
        dele[idx] = del0[idx]
        batch[i] = ins.reshape(h, w, 3)
        batch[steps + 1 + i] = dele.reshape(h, w, 3)
    scores = probs_fn(batch)[:, cls]
    x = counts / n
    ins_curve, del_curve = scores[:steps + 1], scores[steps + 1:]
    return {"insertion": trapezoid(ins_curve, x), "deletion": trapezoid(del_curve, x),
            "fractions": x.tolist(), "insertion_curve": ins_curve.tolist(), "deletion_curve": del_curve.tolist()}


def trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    y, x = np.asarray(y, dtype=np.float64), np.asarray(x, dtype=np.float64)
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0)


def read_boxes(path: str | Path) -> dict[str, list[list[float]]]:
    """JSON ``{"image name or stem": [[x0, y0, x1, y1], ...]}`` in the original image's pixels."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"boxes file not found: {path}")
    try:
        data = json.loads(p.read_text("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"boxes file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"boxes file {path} must map image names to lists of [x0, y0, x1, y1] boxes")
    out = {}
    for name, boxes in data.items():
        if boxes and not isinstance(boxes[0], (list, tuple)):
            boxes = [boxes]
        try:
            out[name] = [[float(v) for v in b] for b in boxes]
        except (TypeError, ValueError):
            raise UserError(f"boxes file {path}: {name!r} must be a list of [x0, y0, x1, y1] boxes") from None
        if any(len(b) != 4 for b in out[name]):
            raise UserError(f"boxes file {path}: {name!r} must be a list of [x0, y0, x1, y1] boxes")
    return out


def pointing_hit(saliency: np.ndarray, boxes: list[list[float]], image_size: tuple[int, int],
                 tolerance: float = 15.0) -> bool:
    """True when the map's maximum (resized to ``image_size`` (h, w)) is within ``tolerance`` pixels of a box."""
    full = resize_map(saliency, image_size)
    y, x = np.unravel_index(int(np.argmax(full)), full.shape)
    return any(x0 - tolerance <= x <= x1 + tolerance and y0 - tolerance <= y <= y1 + tolerance
               for x0, y0, x1, y1 in boxes)


def keep_mask(saliency: np.ndarray, size: tuple[int, int], keep: float) -> np.ndarray:
    """Boolean [H, W]: the top ``keep`` fraction of pixels by saliency (ties broken by position)."""
    if not 0 < keep <= 1:
        raise ValueError("keep must be in (0, 1]")
    full = resize_map(saliency, size).ravel()
    k = int(round(keep * full.size))
    out = np.zeros(full.size, dtype=bool)
    out[np.argsort(-full, kind="stable")[:k]] = True
    return out.reshape(size)


def salient_input(image: np.ndarray, saliency: np.ndarray, keep: float, fill: np.ndarray) -> np.ndarray:
    """The image's top-``keep`` salient pixels on top of ``fill`` (same size as image)."""
    m = keep_mask(saliency, image.shape[:2], keep)
    return np.where(m[..., None], image, fill)


def reconstruction_fills(image: np.ndarray, others: list[np.ndarray] = (), seed: int = 0,
                         blur_sigma: float = 8.0) -> dict[str, np.ndarray]:
    """Content for the non-salient pixels: a strong blur of the image, uniform noise, and other images."""
    h, w = image.shape[:2]
    rng = np.random.default_rng(seed)
    fills = {"blur": blurred(image, blur_sigma), "noise": rng.integers(0, 256, size=image.shape, dtype=np.uint8)}
    for i, other in enumerate(others):
        if other.shape[:2] != (h, w):
            other = cv2.resize(other, (w, h), interpolation=cv2.INTER_AREA)
        fills[f"image{i}"] = other
    return fills


def reconstruction_accuracy(probs_fn: ProbsFn, image: np.ndarray, saliency: np.ndarray,
                            fills: dict[str, np.ndarray], keep: float = 0.25) -> dict:
    """How often the top-1 decision on salient inputs equals the decision on the image.
    1 + len(fills) classifier queries."""
    names = list(fills)
    batch = np.stack([image] + [salient_input(image, saliency, keep, fills[n]) for n in names])
    top = np.argmax(probs_fn(batch), axis=1)
    same = {n: bool(top[i + 1] == top[0]) for i, n in enumerate(names)}
    return {"accuracy": float(np.mean(list(same.values()))) if same else float("nan"), "keep": keep,
            "unchanged": same}
