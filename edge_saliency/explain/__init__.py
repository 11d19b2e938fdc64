"""Black-box explainers (DE-CAM, mask optimisation + salient-input reconstruction, RISE) on any
ONNX classifier; `explain` / `eval` over a few images (per_image.py) or a dataset (dataset*.py). No torch.

    from edge_saliency.explain import decam, maskopt, rise
    from edge_saliency.explain.common import SaliencyModelClassifier
    result = decam.explain(SaliencyModelClassifier(model), image_bgr)   # result.saliency, .queries
"""
from __future__ import annotations

