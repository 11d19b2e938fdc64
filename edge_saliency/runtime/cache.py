"""Where edge-saliency keeps what it makes on a machine: the default model, the engine choice of
--engine auto, TensorRT engines, bench variants. $EDGE_SALIENCY_HOME, else the XDG cache folder."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    root = os.environ.get("EDGE_SALIENCY_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edge-saliency")
    return Path(root)
