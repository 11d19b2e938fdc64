"""ONNX Runtime execution providers: pick the best one present, and say when ORT fell back."""
from __future__ import annotations

import logging

log = logging.getLogger("edge_saliency")

# best first
PREFERENCE = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "OpenVINOExecutionProvider",
    "CoreMLExecutionProvider",
    "XnnpackExecutionProvider",
    "CPUExecutionProvider",
)
ALIASES = {
    "tensorrt": "TensorrtExecutionProvider", "trt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider", "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider", "xnnpack": "XnnpackExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


def short_name(provider: str) -> str:
    return provider.replace("ExecutionProvider", "").lower()


def resolve(requested: str | None, available: list[str]) -> list[str]:
    """'auto' / None -> every available provider, best first (CPU last as the fallback);
    a name ('cuda', 'CUDAExecutionProvider') -> [that, CPU]."""
    from edge_saliency.errors import UserError

    if requested in (None, "", "auto"):
        return [p for p in PREFERENCE if p in available] or ["CPUExecutionProvider"]
    name = ALIASES.get(requested.lower(), requested)
    if name not in PREFERENCE and name not in available:
        raise UserError(f"unknown provider {requested!r}; choose from: auto, {', '.join(ALIASES)}")
    if name not in available:
        raise UserError(
            f"provider {short_name(name)} is not available in this onnxruntime build "
            f"(available: {', '.join(short_name(p) for p in available)})"
        )
    return [name] if name == "CPUExecutionProvider" else [name, "CPUExecutionProvider"]
