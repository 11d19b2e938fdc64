"""What every black-box explainer shares: the classifier interface, query budget, batching,
progress on stderr, Ctrl-C handling, mask helpers and the result object.

A *classifier* is anything that maps a batch of uint8 BGR images [N, H, W, 3] (already at the
model's input size) to logits [N, K]. Two adapters ship here:

- ``SaliencyModelClassifier``: an edge-saliency ONNX file (``SaliencyModel.run``, output ``logits``);
- ``OnnxClassifier``: any ONNX classifier with a float NCHW input, given its mean/std, so a user can
  explain a model they cannot modify.

Scores are softmax probabilities of the target class. No torch anywhere.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import cv2
import numpy as np

from edge_saliency.numeric import softmax

from edge_saliency import contract
from edge_saliency.errors import UserError
from edge_saliency.runtime.model import Result


class Classifier(Protocol):
    input_size: tuple[int, int]  # (h, w)
    labels: list[str]

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """uint8 BGR [N, H, W, 3] -> float logits [N, K]."""


class FunctionClassifier:
    """Wrap a plain function batch -> logits (toy classifiers, tests, other runtimes)."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], input_size: tuple[int, int], labels=None):
        self.fn = fn
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.labels = list(labels) if labels is not None else None

    def logits(self, batch: np.ndarray) -> np.ndarray:
        out = np.asarray(self.fn(batch), dtype=np.float64)
        if self.labels is None:
            self.labels = [str(i) for i in range(out.shape[-1])]
        return out


class SaliencyModelClassifier:
    """An edge-saliency model as a black box: only its ``logits`` output is used."""

    def __init__(self, model):
        self.model = model
        self.input_size = tuple(model.info.input_size)
        self.labels = model.labels

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self.model.run(np.ascontiguousarray(batch))[contract.LOGITS]


class OnnxClassifier:
    """Any ONNX classifier with one float NCHW input and logits as its first output.

    The adapter does what an edge-saliency graph does in-graph: BGR -> RGB (unless ``bgr``),
    ``(x - mean) / std`` on 0-255 values, NHWC -> NCHW.
    """

    def __init__(self, path: str, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375),
                 bgr: bool = False, input_size: tuple[int, int] | None = None, labels: list[str] | None = None,
                 provider: str | None = "auto", threads: int | None = None):
        import onnxruntime as ort

        from edge_saliency.runtime import providers
        from pathlib import Path

        if not Path(path).is_file():
            raise UserError(f"model file not found: {path}")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), opts,
                                                providers=providers.resolve(provider, ort.get_available_providers()))
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(f"cannot load {path} with ONNX Runtime: {first[:300]}") from exc
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        if len(inp.shape) != 4:
            raise UserError(f"{path}: input {inp.name!r} has shape {inp.shape}; a plain classifier needs [N, 3, H, W]")
        if input_size is None:
            h, w = inp.shape[2], inp.shape[3]
            if not (isinstance(h, int) and isinstance(w, int)):
                raise UserError(f"{path}: input size is dynamic ({inp.shape}); pass --input-size")
            input_size = (h, w)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.mean = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
        if np.any(self.std <= 0):
            raise UserError("--std values must be positive")
        self.bgr = bgr
        self.output_name = self.session.get_outputs()[0].name
        self.labels = labels
        self.path = str(path)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        x = batch if self.bgr else batch[..., ::-1]
        x = (np.ascontiguousarray(x.transpose(0, 3, 1, 2)).astype(np.float32) - self.mean) / self.std
        out = self.session.run([self.output_name], {self.input_name: x})[0]
        out = out.reshape(len(batch), -1)
        if self.labels is None:
            from edge_saliency.labels import imagenet_labels

            self.labels = imagenet_labels() if out.shape[1] == 1000 else [str(i) for i in range(out.shape[1])]
        return out


def auto_batch_size(input_size: tuple[int, int], max_batch: int = 64, memory_fraction: float = 0.25) -> int:
    """Batch size that keeps one call's memory under a fraction of what is free.

    Per image we count the uint8 and float copies of the input and, as a rough bound on the
    activations of a small CNN, 32 float copies of the input.
    """
    try:
        import psutil

        free = psutil.virtual_memory().available
    except Exception:  # pragma: no cover - psutil is a dependency; be safe anyway
        free = 1 << 30
    per_image = input_size[0] * input_size[1] * 3 * (1 + 4 + 32 * 4)
    return int(max(1, min(max_batch, memory_fraction * free // per_image)))


class Progress:
    """A one-line progress bar on stderr (only where stderr is a terminal, unless forced)."""

    def __init__(self, total: int, label: str = "", enabled: bool | None = None, stream=None):
        self.stream = stream or sys.stderr
        self.total = max(1, int(total))
        self.label = label
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.done = 0
        self.t0 = time.perf_counter()
        self._last = 0.0

    def update(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if self.enabled and (now - self._last > 0.2 or self.done >= self.total):
            self._last = now
            frac = min(1.0, self.done / self.total)
            bar = "#" * int(30 * frac)
            rate = self.done / max(now - self.t0, 1e-9)
            self.stream.write(f"\r{self.label} [{bar:<30}] {self.done}/{self.total} queries ({rate:.0f}/s)")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


class BudgetExhausted(Exception):
    pass


class Scorer:
    """Counts queries against a budget and turns images into target-class probabilities.

    ``probs(images, cls)`` runs ``images`` in batches of ``batch_size`` and returns the softmax
    probability of ``cls`` for each. It raises BudgetExhausted rather than going over budget.
    """

    def __init__(self, classifier: Classifier, budget: int | None = None, batch_size: int | None = None,
                 progress: Progress | None = None):
        self.classifier = classifier
        self.budget = budget
        self.batch_size = batch_size or auto_batch_size(classifier.input_size)
        self.progress = progress
        self.queries = 0

    @property
    def remaining(self) -> int | float:
        return float("inf") if self.budget is None else self.budget - self.queries

    def all_probs(self, images: np.ndarray) -> np.ndarray:
        n = len(images)
        if n > self.remaining:
            raise BudgetExhausted(f"{n} queries asked, {self.remaining} left")
        out = []
        for i in range(0, n, self.batch_size):
            chunk = images[i:i + self.batch_size]
            out.append(softmax(self.classifier.logits(chunk)))
            self.queries += len(chunk)
            if self.progress:
                self.progress.update(len(chunk))
        return np.concatenate(out, axis=0)

    def probs(self, images: np.ndarray, cls: int) -> np.ndarray:
        return self.all_probs(images)[:, cls]


@dataclass
class Explanation(Result):
    """The real-time ``Result`` plus a black-box map: ``saliency`` [h, w] float32 in [0, 1].

    ``map(method)`` or ``map('saliency')`` gives it; ``info`` holds method-specific numbers
    (queries used, settings, fitness history, reconstruction accuracy ...).
    """

    method: str = ""
    saliency: np.ndarray | None = None
    queries: int = 0
    interrupted: bool = False
    info: dict = field(default_factory=dict)

    def map(self, name: str) -> np.ndarray | None:
        if name in (self.method, "saliency"):
            return self.saliency
        return super().map(name)


def target_of(classifier: Classifier, image: np.ndarray, class_index: int | None, scorer: Scorer):
    """(class index, its probability on the clean image, all probabilities) with one query."""
    probs = scorer.all_probs(image[None])[0]
    cls = int(np.argmax(probs)) if class_index is None else int(class_index)
    if not 0 <= cls < len(probs):
        raise UserError(f"class index {cls} out of range 0..{len(probs) - 1}")
    return cls, float(probs[cls]), probs


def make_explanation(classifier: Classifier, method: str, saliency: np.ndarray, cls: int, probs: np.ndarray,
                     scorer: Scorer, seconds: float, interrupted: bool, info: dict) -> Explanation:
    labels = classifier.labels or [str(i) for i in range(len(probs))]
    order = np.argsort(-probs)[:5]
    return Explanation(
        class_index=cls, label=labels[cls], score=float(probs[cls]),
        topk=[(labels[j], float(probs[j])) for j in order], logits=np.log(np.maximum(probs, 1e-300)),
        timings={"explain": seconds}, method=method, saliency=np.asarray(saliency, dtype=np.float32),
        queries=scorer.queries, interrupted=interrupted, info=info,
    )


def check_image(image: np.ndarray, classifier: Classifier) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"expected a BGR uint8 image [H, W, 3], got {desc}")
    h, w = classifier.input_size
    if image.shape[:2] != (h, w):
        interp = cv2.INTER_AREA if image.shape[0] > h or image.shape[1] > w else cv2.INTER_LINEAR
        image = cv2.resize(image, (w, h), interpolation=interp)
    return image


def start(name: str, classifier: Classifier, image: np.ndarray, settings, planned: int,
          progress: bool | None, batch_size: int | None, min_batch: int = 0) -> tuple[np.ndarray, "Scorer"]:
    """What every black-box method does first: check its settings and the image, open the
    progress bar for ``planned`` queries and the scorer under the settings' budget. Unless the
    caller fixes ``batch_size``, batches hold at least ``min_batch`` images (capped at 256), so
    one population or step is one session.run."""
    settings.check()
    image = check_image(image, classifier)
    scorer = Scorer(classifier, settings.budget, batch_size or None, Progress(planned, name, enabled=progress))
    if not batch_size and min_batch:
        scorer.batch_size = max(scorer.batch_size, min(min_batch, 256))
    return image, scorer


def upsample(masks: np.ndarray, size: tuple[int, int], smooth: bool = True) -> np.ndarray:
    """[N, g, g] (or [g, g]) values in [0, 1] -> [N, H, W] by bicubic (smooth) or bilinear interpolation."""
    single = masks.ndim == 2
    masks = masks[None] if single else masks
    h, w = size
    interp = cv2.INTER_CUBIC if smooth else cv2.INTER_LINEAR
    out = np.stack([cv2.resize(m.astype(np.float32), (w, h), interpolation=interp) for m in masks])
    out = np.clip(out, 0.0, 1.0)
    return out[0] if single else out


def apply_masks(image: np.ndarray, masks: np.ndarray, background: np.ndarray | None = None) -> np.ndarray:
    """image [H, W, 3] uint8, masks [N, H, W] in [0, 1] -> [N, H, W, 3] uint8 of
    ``mask * image + (1 - mask) * background`` (background: black when None)."""
    m = masks[..., None].astype(np.float32)
    img = image[None].astype(np.float32)
    out = m * img if background is None else m * img + (1.0 - m) * background[None].astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def minmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    lo, hi = x.min(), x.max()
    if hi - lo <= 1e-12:
        return np.zeros_like(x, dtype=np.float32)
    return ((x - lo) / (hi - lo)).astype(np.float32)
