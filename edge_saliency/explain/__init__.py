"""Black-box explainers (DE-CAM, mask optimisation + salient-input reconstruction, RISE) on any
ONNX classifier, and the `explain` / `eval` commands. No torch.

    from edge_saliency.explain import decam, maskopt, rise
    from edge_saliency.explain.common import SaliencyModelClassifier
    result = decam.explain(SaliencyModelClassifier(model), image_bgr)   # result.saliency, .queries
"""
from __future__ import annotations


def add_parser(sub) -> None:
    from edge_saliency.explain.cli import add_parser as _add

    _add(sub)
