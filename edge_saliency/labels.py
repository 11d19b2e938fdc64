"""Class names: ImageNet's ship with the package; others come from a text file (one per line)."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from edge_saliency.errors import UserError


def imagenet_labels() -> list[str]:
    text = resources.files("edge_saliency").joinpath("data/imagenet_classes.txt").read_text("utf-8")
    return text.splitlines()


def read_labels(path: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"labels file not found: {path}")
    labels = [line.strip() for line in p.read_text("utf-8", errors="replace").splitlines() if line.strip()]
    if not labels:
        raise UserError(f"labels file {path} is empty")
    return labels
