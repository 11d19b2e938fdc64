"""The salient region of a saliency map: box and centroid in frame pixels (for logs and sinks)."""
from __future__ import annotations

import cv2
import numpy as np


def salient_region(saliency: np.ndarray, frame_size: tuple[int, int], level: float = 0.5) -> dict | None:
    """Connected region around the map's peak where the map is >= level * peak.

    saliency: [h, w] map at any resolution; frame_size: (width, height) of the frame.
    Returns {"box": [x0, y0, x1, y1], "centroid": [x, y], "area": fraction of the frame} in frame
    pixels (x1, y1 exclusive), or None for an empty (all-zero) map.
    """
    m = np.asarray(saliency, dtype=np.float32)
    peak = float(m.max()) if m.size else 0.0
    lo = float(m.min()) if m.size else 0.0
    if not np.isfinite(peak) or peak <= 0 or peak == lo:
        return None
    thr = lo + level * (peak - lo)
    mask = (m >= thr).astype(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    py, px = np.unravel_index(int(np.argmax(m)), m.shape)
    k = labels[py, px]
    x, y, w, h = (int(v) for v in stats[k, :4])
    h_map, w_map = m.shape
    fw, fh = frame_size
    sx, sy = fw / w_map, fh / h_map
    region = labels == k
    weights = (m - lo) * region
    total = float(weights.sum())
    ys, xs = np.mgrid[0:h_map, 0:w_map]
    cx = (float((weights * xs).sum()) / total + 0.5) * sx
    cy = (float((weights * ys).sum()) / total + 0.5) * sy
    return {
        "box": [int(round(x * sx)), int(round(y * sy)), int(round((x + w) * sx)), int(round((y + h) * sy))],
        "centroid": [round(cx, 1), round(cy, 1)],
        "area": round(float(region.sum()) / region.size, 4),
    }
