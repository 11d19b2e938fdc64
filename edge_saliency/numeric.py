"""Small numeric helpers that several stages need (numpy only): softmax, Pearson correlation."""
from __future__ import annotations

import numpy as np


def softmax(x: np.ndarray) -> np.ndarray:
    """Over the last axis, in float64 (the largest logit subtracted first: no overflow)."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two arrays of the same shape, in float64. Constant arrays: 1 when
    both are the same constant, else 0 (no linear relation to measure)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    da, db = a - a.mean(), b - b.mean()
    na, nb = np.sqrt((da * da).sum()), np.sqrt((db * db).sum())
    if na < 1e-12 or nb < 1e-12:
        return 1.0 if (na < 1e-12 and nb < 1e-12 and abs(a.mean() - b.mean()) < 1e-9) else 0.0
    return float((da * db).sum() / (na * nb))
