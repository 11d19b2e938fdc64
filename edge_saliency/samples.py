"""Real photographs for demos, checks and benchmarks: scikit-image ships them (no download).

All images are returned as BGR uint8, as OpenCV gives frames.
"""
from __future__ import annotations

import numpy as np

from edge_saliency.errors import UserError

# name -> ImageNet label the default model gives it (None: no single right answer)
PHOTOS = {
    "chelsea": "Egyptian cat",
    "coffee": "espresso",
    "astronaut": None,
    "rocket": None,
    "hubble_deep_field": None,
}


def photo(name: str) -> np.ndarray:
    try:
        import skimage.data
    except ImportError as exc:
        raise UserError(
            "the sample photographs come with scikit-image: pip install 'edge-saliency[demo]'"
        ) from exc
    rgb = getattr(skimage.data, name)()
    if rgb.ndim == 2:
        rgb = np.stack([rgb] * 3, axis=-1)
    rgb = rgb[:, :, :3]  # RGBA photographs (the logo): drop the alpha channel
    return np.ascontiguousarray(rgb[:, :, ::-1])


def photos(names=None) -> dict[str, np.ndarray]:
    return {n: photo(n) for n in (names or PHOTOS)}
