"""The photographs of the precision variants: int8 calibrates on CALIBRATION_PHOTOS (or a folder),
the accuracy report measures on REPORT_PHOTOS, never the same images. All ship with scikit-image
(and matplotlib for two of the calibration set); nothing is downloaded."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from edge_saliency.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# the accuracy report's photographs (all ship with scikit-image): the sample photos
# (edge_saliency.samples.PHOTOS) first, then other scikit-image images
EVAL_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "hubble_deep_field")
REPORT_PHOTOS = EVAL_PHOTOS + ("immunohistochemistry", "retina", "camera", "brick", "grass",
                               "gravel", "clock", "coins", "moon")
# default calibration images: disjoint from REPORT_PHOTOS, so the report measures images the
# quantiser never saw (scikit-image's other images; matplotlib's sample photographs when installed)
CALIBRATION_PHOTOS = ("motorcycle_left", "motorcycle_right", "grace_hopper", "present_pack", "lfw_faces")


def views(img: np.ndarray) -> list[np.ndarray]:
    """A photo, its horizontal flip, and two crops (centre 70%, top-left 80%): more distinct inputs
    from few photographs, for calibration and for the agreement statistic."""
    h, w = img.shape[:2]
    ch, cw = int(h * 0.7), int(w * 0.7)
    y, x = (h - ch) // 2, (w - cw) // 2
    return [img, np.ascontiguousarray(img[:, ::-1]), np.ascontiguousarray(img[y:y + ch, x:x + cw]),
            np.ascontiguousarray(img[: int(h * 0.8), : int(w * 0.8)])]


def calibration_views(img: np.ndarray) -> list[np.ndarray]:
    """``views`` plus a 3x3 grid of half-size crops and their flips (22 inputs per photo): objects at
    several scales and positions, as a camera sees them."""
    h, w = img.shape[:2]
    out = views(img)
    for fy in (0.0, 0.25, 0.5):
        for fx in (0.0, 0.25, 0.5):
            y, x = int(h * fy), int(w * fx)
            crop = np.ascontiguousarray(img[y:y + h // 2, x:x + w // 2])
            out += [crop, np.ascontiguousarray(crop[:, ::-1])]
    return out


def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """As the runtime does (SaliencyModel.preprocess): INTER_AREA when shrinking."""
    h, w = size
    interp = cv2.INTER_AREA if img.shape[0] > h or img.shape[1] > w else cv2.INTER_LINEAR
    return cv2.resize(img, (w, h), interpolation=interp)


def sample_images(names=EVAL_PHOTOS, with_views: bool = True) -> list[np.ndarray]:
    from edge_saliency import samples

    out = []
    for n in names:
        img = samples.photo(n)
        out.extend(views(img) if with_views else [img])
    return out


def _to_bgr(img: np.ndarray) -> np.ndarray:
    """RGB / RGBA (composited on white) / grey / bool / float [0, 1] -> BGR uint8."""
    img = np.asarray(img)
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    elif img.dtype != np.uint8:
        img = np.clip(img * 255.0 if img.max() <= 1.0 else img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    if img.shape[2] == 4:
        a = img[:, :, 3:4].astype(np.float32) / 255.0
        img = (img[:, :, :3] * a + 255.0 * (1.0 - a)).astype(np.uint8)
    return np.ascontiguousarray(img[:, :, ::-1])


def calibration_photo(name: str) -> np.ndarray:
    """One default calibration image (BGR)."""
    import skimage.data

    if name in ("motorcycle_left", "motorcycle_right"):
        left, right, _ = skimage.data.stereo_motorcycle()
        return _to_bgr(left if name == "motorcycle_left" else right)
    if name == "lfw_faces":  # 16 small face crops as a 4x4 mosaic
        faces = skimage.data.lfw_subset()[:16]
        return _to_bgr(np.vstack([np.hstack(list(faces[r * 4:(r + 1) * 4])) for r in range(4)]))
    if name in ("grace_hopper", "present_pack"):
        try:
            from matplotlib import cbook
        except ImportError as exc:  # part of the export extra: a silently smaller set gives another model
            raise UserError("default int8 calibration uses matplotlib's sample photographs: "
                            "pip install 'edge-saliency[export]' (matplotlib), or pass --calibration DIR") from exc
        f = {"grace_hopper": "grace_hopper.jpg", "present_pack": "Minduka_Present_Blue_Pack.png"}[name]
        return cv2.imread(str(cbook.get_sample_data(f, asfileobj=False)), cv2.IMREAD_COLOR)
    return _to_bgr(getattr(skimage.data, name)())


def calibration_images(names=CALIBRATION_PHOTOS) -> list[np.ndarray]:
    """The default calibration set: ``calibration_views`` of each of ``names`` (110 images)."""
    try:
        import skimage.data  # noqa: F401
    except ImportError as exc:
        raise UserError("default int8 calibration uses scikit-image's images: pip install scikit-image, "
                        "or pass --calibration DIR") from exc
    out = []
    for n in names:
        out.extend(calibration_views(calibration_photo(n)))
    return out


def folder_images(folder: str | os.PathLike, limit: int = 500) -> list[np.ndarray]:
    """BGR images of a folder (recursively, sorted), at most ``limit``."""
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"--calibration {folder}: not a directory")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())[:limit]
    images = []
    for p in files:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is not None:
            images.append(img)
    if not images:
        raise UserError(f"--calibration {folder}: no readable images ({', '.join(IMAGE_SUFFIXES)})")
    return images
