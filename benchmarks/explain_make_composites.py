"""Make the composite photographs of the explain-quality benchmark, with known object boxes.

scikit-image's cat (chelsea) and coffee cup (coffee) are pasted onto its grass and brick textures
(grey, 448 x 448), so the pointing game has an exact ground-truth box. Writes PNGs and
``boxes.json`` ({stem: [[x0, y0, x1, y1]]} in the composite's pixels) into the given folder.

    python benchmarks/explain_make_composites.py /tmp/explain_images
"""
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import skimage.data as data


def paste(texture: str, photo: str, crop, size, at, tint=(1.0, 1.0, 1.0)):
    bg = getattr(data, texture)()[:448, :448].astype(np.float32)
    bg = np.clip(np.stack([bg * t for t in tint], axis=-1), 0, 255).astype(np.uint8)  # RGB
    (y0, y1), (x0, x1) = crop
    obj = cv2.resize(getattr(data, photo)()[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA)
    x, y = at
    bg[y:y + size[1], x:x + size[0]] = obj
    return bg[:, :, ::-1].copy(), [x, y, x + size[0] - 1, y + size[1] - 1]


def main(out: str) -> None:
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    boxes = {}
    for stem, args in {
        "cat_on_grass": ("grass", "chelsea", ((0, 300), (90, 390)), (200, 200), (220, 40), (0.8, 1.0, 0.6)),
        "cup_on_brick": ("brick", "coffee", ((10, 390), (40, 520)), (230, 182), (40, 240), (1.0, 0.8, 0.7)),
    }.items():
        img, box = paste(*args)
        cv2.imwrite(str(d / f"{stem}.png"), img)
        boxes[stem] = [box]
    (d / "boxes.json").write_text(json.dumps(boxes, indent=1))
    print(json.dumps(boxes))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "explain_images")
