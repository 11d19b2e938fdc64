"""LOVI, Layer Ordered Visualisation of Information: one colour image from the per-scale SMOE maps.

From the S maps ``p_c`` (ordered early -> late, range-normalised together):
    pos_c      = 1 - c/(S-1)
    hue        = 300 deg * sum_c p_c pos_c / sum_c p_c      (early layers magenta, late layers red)
    saturation = 1 - (sum p / (S max p) - 1/S) / (1 - 1/S)  (white = every layer agrees)
    value      = max_c p_c
then HSV -> BGR. Runs in numpy + OpenCV at the maps' resolution (cheap); upsample the result.

With a single scale there is no layer order: hue 0 (red), saturation 1, value p.

What the formula is fed decides how it looks. The SMOE scale maps arrive Gaussian-CDF normalised,
so every layer sits near 0.5 almost everywhere. Fed as they are, that common floor dominates the
ratios: the hue (a weighted mean of positions) collapses to the middle of the wheel (150 deg,
green), the saturation (1 when one layer carries all the weight) drops to about 0.45, and the
value is high everywhere: a white-green veil. `display_weights` removes the floor first: each
layer keeps only its excess over its own upper quartile, rescaled to its own peak,
p_c = max(0, x_c - q_c) / (max_c - q_c), q_c = the 75th percentile of layer c. A pixel where a
single layer fires then gets that layer's pure colour (saturation 1) and a pixel where none
fires is black (value 0), as the formula intends. (The median leaves half of every layer lit and
their union covers most of the frame; the upper quartile keeps what stands out.)
`lovi_display_bgr_u8` is what the renderer shows; `lovi_hsv` / `lovi_bgr` stay the bare formula.
"""
from __future__ import annotations

import cv2
import numpy as np

HUE_SPAN = 300.0
FLOOR_PERCENTILE = 75.0  # display_weights: what each layer must exceed to count


def positions(n_scales: int) -> np.ndarray:
    """pos_c = 1 - c/(S-1): 1 for the earliest scale, 0 for the latest."""
    if n_scales < 1:
        raise ValueError("LOVI needs at least one scale map")
    if n_scales == 1:
        return np.zeros(1, dtype=np.float32)
    return (1.0 - np.arange(n_scales, dtype=np.float32) / (n_scales - 1)).astype(np.float32)


def lovi_hsv(scales: np.ndarray) -> np.ndarray:
    """[S, h, w] maps -> [h, w, 3] float32 HSV (hue in degrees 0..300, saturation and value 0..1)."""
    p = np.asarray(scales, dtype=np.float32)
    if p.ndim != 3:
        raise ValueError(f"LOVI wants [S, h, w] scale maps, got shape {p.shape}")
    s = p.shape[0]
    lo, hi = float(p.min()), float(p.max())
    p = (p - lo) / (hi - lo) if hi > lo else np.zeros_like(p)
    total = p.sum(axis=0)
    peak = p.max(axis=0)
    lit = total > 0
    safe_total = np.where(lit, total, 1.0)
    hue = HUE_SPAN * np.tensordot(positions(s), p, axes=1) / safe_total
    if s == 1:
        sat = np.ones_like(peak)
    else:
        safe_peak = np.where(peak > 0, peak, 1.0)
        sat = 1.0 - (total / (s * safe_peak) - 1.0 / s) / (1.0 - 1.0 / s)
    hue = np.where(lit, hue, 0.0)
    sat = np.clip(np.where(lit, sat, 0.0), 0.0, 1.0)
    return np.stack([hue, sat, peak], axis=-1).astype(np.float32)


def lovi_bgr(scales: np.ndarray) -> np.ndarray:
    """[S, h, w] maps -> [h, w, 3] float32 BGR in [0, 1]."""
    return cv2.cvtColor(lovi_hsv(scales), cv2.COLOR_HSV2BGR)


def lovi_bgr_u8(scales: np.ndarray) -> np.ndarray:
    """[S, h, w] maps -> [h, w, 3] uint8 BGR, ready to upsample and blend."""
    return np.clip(lovi_bgr(scales) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def display_weights(scales: np.ndarray) -> np.ndarray:
    """[S, h, w] normalised scale maps -> each layer's excess over its own upper quartile, in [0, 1]."""
    p = np.asarray(scales, dtype=np.float32)
    if p.ndim != 3:
        raise ValueError(f"LOVI wants [S, h, w] scale maps, got shape {p.shape}")
    med = np.percentile(p.reshape(p.shape[0], -1), FLOOR_PERCENTILE, axis=1)[:, None, None]
    top = p.reshape(p.shape[0], -1).max(axis=1)[:, None, None]
    span = top - med
    return np.where(span > 0, np.clip((p - med) / np.where(span > 0, span, 1.0), 0.0, 1.0), 0.0).astype(np.float32)


def lovi_display_bgr_u8(scales: np.ndarray) -> np.ndarray:
    """What the lovi view shows: the formula on `display_weights`, uint8 BGR (black = no layer fires)."""
    return lovi_bgr_u8(display_weights(scales))


def scale_colours_bgr(n_scales: int) -> list[tuple[int, int, int]]:
    """The colour of a pixel where only scale c is lit (for the legend): HSV(300 pos_c, 1, 1)."""
    hsv = np.zeros((1, n_scales, 3), dtype=np.float32)
    hsv[0, :, 0] = HUE_SPAN * positions(n_scales)
    hsv[0, :, 1:] = 1.0
    bgr = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0]
    return [tuple(int(round(v * 255)) for v in px) for px in bgr]
