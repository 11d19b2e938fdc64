"""The ONNX contract between the graph builder and the device runtime.

One file per model. Input ``image``: uint8 [N, H, W, 3] BGR, already resized. Outputs by name
below; metadata in ``metadata_props`` as JSON values under keys prefixed ``edge_saliency.``.
"""
from __future__ import annotations

import json

from edge_saliency import methods as _methods

INPUT = "image"
CLASS_INPUT = "class_index"  # optional [N] int64; a negative value means "top-1"
LOGITS = "logits"
TARGET = "target_class"
SMOE = "smoe"
SMOE_SCALES = "smoe_scales"
RECIPRO = "recipro_cam"
# gradient CAMs, in-graph when the head is GAP + linear (analytic gradient); not in the default
GUIDED = "guided_cam"  # guidance-rectified gradient CAM (Fahim et al.)
GRADCAM = "grad_cam"
GRADCAMPP = "grad_cam_pp"

# The methods and their outputs come from the one method table (edge_saliency.methods).
METHODS = _methods.NAMES
DEFAULT_METHODS = _methods.DEFAULT
METHOD_OUTPUTS = {m.name: m.outputs for m in _methods.TABLE}
# the [N, 1, h, w] map a method is read from (smoe_scales is for LOVI)
METHOD_MAP = {m.name: m.map_output for m in _methods.TABLE}
PRECISIONS = ("fp32", "fp16", "int8")  # the files `export --precision` writes and `bench` compares
OUTPUTS = (LOGITS, TARGET) + tuple(o for m in _methods.TABLE for o in m.outputs)

PREFIX = "edge_saliency."
CONTRACT_VERSION = 1


def encode_metadata(meta: dict) -> dict[str, str]:
    """{'labels': [...], ...} -> {'edge_saliency.labels': '[...]', ...}"""
    return {PREFIX + k: json.dumps(v) for k, v in meta.items()}


def decode_metadata(props: dict[str, str]) -> dict:
    """Inverse of encode_metadata; ignores keys of other tools."""
    return {k[len(PREFIX):]: json.loads(v) for k, v in props.items() if k.startswith(PREFIX)}
