"""RISE (Petsiuk, Das, Saenko 2018): randomized input sampling, the black-box baseline.

N random binary ``grid x grid`` masks (each cell kept with probability ``p``) are upsampled
bilinearly to ``(grid + 1) * cell`` and cropped at a random shift in [0, cell) so that the masks
are smooth and not aligned to the grid. The map is the score-weighted sum of the masks,

    S = sum_i p_c(image * M_i) * M_i / (N * p),

min-max normalised to [0, 1]. Queries: 1 (clean image) + N.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import cv2
import numpy as np

from edge_saliency.errors import UserError
from edge_saliency.explain.common import (BudgetExhausted, Classifier, apply_masks, start, make_explanation,
                                          minmax, target_of)


@dataclass
class RISESettings:
    masks: int = 2000
    grid: int = 7
    p: float = 0.5
    seed: int = 0
    budget: int | None = None

    def check(self) -> None:
        if self.masks < 1:
            raise UserError("RISE needs at least one mask")
        if self.grid < 1:
            raise UserError("--grid must be at least 1")
        if not 0 < self.p < 1:
            raise UserError("RISE's p must be in (0, 1)")
        if self.budget is not None and self.budget < 2:
            raise UserError(f"a query budget of {self.budget} is below RISE's minimum of 2")

    def planned_queries(self) -> int:
        n = self.masks if self.budget is None else min(self.masks, self.budget - 1)
        return 1 + n


def random_masks(rng: np.random.Generator, n: int, grid: int, p: float, size: tuple[int, int]) -> np.ndarray:
    """[n, H, W] float32 smooth random masks, as in the RISE paper."""
    h, w = size
    ch, cw = math.ceil(h / grid), math.ceil(w / grid)
    up_h, up_w = (grid + 1) * ch, (grid + 1) * cw
    cells = (rng.random((n, grid, grid)) < p).astype(np.float32)
    shifts = rng.integers(0, [ch, cw], size=(n, 2))
    out = np.empty((n, h, w), dtype=np.float32)
    for i in range(n):
        big = cv2.resize(cells[i], (up_w, up_h), interpolation=cv2.INTER_LINEAR)
        out[i] = big[shifts[i, 0]:shifts[i, 0] + h, shifts[i, 1]:shifts[i, 1] + w]
    return out


def explain(classifier: Classifier, image: np.ndarray, class_index: int | None = None,
            settings: RISESettings | None = None, progress: bool | None = None, batch_size: int | None = None):
    s = settings or RISESettings()
    image, scorer = start("rise", classifier, image, s, s.planned_queries(), progress, batch_size)
    size = classifier.input_size
    t0 = time.perf_counter()
    rng = np.random.default_rng(s.seed)
    cls, p_clean, probs = target_of(classifier, image, class_index, scorer)
    total = np.zeros(size, dtype=np.float64)
    used = 0
    interrupted = False
    n = s.planned_queries() - 1
    try:
        while used < n:
            k = min(scorer.batch_size, n - used)
            masks = random_masks(rng, k, s.grid, s.p, size)
            scores = scorer.probs(apply_masks(image, masks), cls)
            total += np.tensordot(scores, masks, axes=1)
            used += k
    except KeyboardInterrupt:
        interrupted = True
    except BudgetExhausted:
        pass
    finally:
        scorer.progress.close()
    saliency = total / (max(used, 1) * s.p)
    info = {"settings": {k: getattr(s, k) for k in ("masks", "grid", "p", "seed", "budget")},
            "masks_used": used, "clean_score": p_clean}
    return make_explanation(classifier, "rise", minmax(saliency), cls, probs, scorer, time.perf_counter() - t0,
                            interrupted, info)
