"""Plain numpy references, written straight from the formulas in DESIGN.md (float64).

Nothing here is shared with the implementation: these are what the implementation is checked
against.
"""
from __future__ import annotations

import math

import numpy as np


def smoe_scale(a: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """a [C, H, W] -> [H, W]: x = a + eps; m = mean_c x; m * (log2 m - mean_c log2 x)."""
    x = a.astype(np.float64) + eps
    m = x.mean(axis=0)
    return m * (np.log2(m) - np.log2(x).mean(axis=0))


def gaussian_cdf(x: np.ndarray) -> np.ndarray:
    """0.5 * (1 + erf((x - mu) / (sigma sqrt 2))) over the whole map."""
    mu, sigma = x.mean(), x.std()
    erf = np.vectorize(math.erf)
    return 0.5 * (1.0 + erf((x - mu) / (sigma * math.sqrt(2.0))))


def gamma_cdf(x: np.ndarray) -> np.ndarray:
    """CDF of a Gamma(k, theta) fitted with s = ln mean - mean ln x, k = (3 - s + sqrt((s-3)^2 + 24 s)) / (12 s)."""
    from scipy.special import gammainc

    x = np.clip(x.astype(np.float64), 0, None) + 1e-10
    s = math.log(x.mean()) - np.log(x).mean()
    k = (3 - s + math.sqrt((s - 3) ** 2 + 24 * s)) / (12 * s)
    theta = x.mean() / k
    return gammainc(k, x / theta)


def resize_bilinear(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of [H, W] to size with half-pixel centres (align_corners=False), edges clamped."""
    h_in, w_in = m.shape
    h, w = size

    def coords(n_out, n_in):
        src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        src = np.clip(src, 0, None)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    y0, y1, fy = coords(h, h_in)
    x0, x1, fx = coords(w, w_in)
    top = m[y0][:, x0] * (1 - fx) + m[y0][:, x1] * fx
    bottom = m[y1][:, x0] * (1 - fx) + m[y1][:, x1] * fx
    return top * (1 - fy)[:, None] + bottom * fy[:, None]


def smoe_combined(acts: list[np.ndarray], size, weights=None, normaliser=gaussian_cdf, eps=1e-7):
    """acts: list of [C, H, W] -> (combined [h, w], scales [S, h, w])."""
    scales = np.stack([resize_bilinear(normaliser(smoe_scale(a, eps)), size) for a in acts])
    w = np.ones(len(acts)) if weights is None else np.asarray(weights, dtype=np.float64)
    return (scales * w[:, None, None]).sum(0) / w.sum(), scales


GAUSS_3X3 = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float64) / 16


def recipro_masks(h: int, w: int, variant: str = "onehot") -> np.ndarray:
    """[h*w, h, w]: mask p keeps position p (gaussian3x3: its 3x3 neighbourhood, weighted)."""
    masks = np.zeros((h * w, h, w))
    for i in range(h):
        for j in range(w):
            if variant == "onehot":
                masks[i * w + j, i, j] = 1
                continue
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    if 0 <= i + di < h and 0 <= j + dj < w:
                        masks[i * w + j, i + di, j + dj] = GAUSS_3X3[di + 1, dj + 1]
    return masks


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def recipro_cam(fmap: np.ndarray, head, target: int, score: str = "softmax", variant: str = "onehot") -> np.ndarray:
    """fmap [C, h, w]; head: [P, C, h, w] -> logits [P, K]. Each masked copy through the head."""
    c, h, w = fmap.shape
    masks = recipro_masks(h, w, variant)
    logits = head(fmap[None].astype(np.float64) * masks[:, None])
    s = softmax(logits)[:, target] if score == "softmax" else logits[:, target]
    s = (s - s.min()) / max(s.max() - s.min(), 1e-12)
    return s.reshape(h, w)


def gap_linear_head(weight: np.ndarray, bias: np.ndarray):
    """The head 'global average pooling, then linear' as a function of a batch of maps."""
    return lambda maps: maps.mean(axis=(2, 3)) @ weight.T.astype(np.float64) + bias
