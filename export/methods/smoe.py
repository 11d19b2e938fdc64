"""SMOE Scale (Mundhenk, Chen, Friedland, "Efficient Saliency Maps for Explainable AI").

Per location of a scale end's activation a [N, C, H, W] (after its ReLU), over the C channels:
    x = a + 1e-7;  m = mean_c x;  smoe = m * (log2 m - mean_c log2 x)
(eps = 1e-7 in the paper; log2(a + eps) makes the statistic sensitive to activations that
float rounding leaves at 1e-5 instead of 0, so a larger eps trades a little fidelity to the
paper for maps that agree across runtimes and precisions) then each map is normalised over its H x W pixels, bilinearly resized to the output map size and
combined across scale ends as a weighted mean.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from export.methods.normalise import normalise

EPS = 1e-7


def smoe_scale(a: torch.Tensor, clamp: bool = False, eps: float = EPS) -> torch.Tensor:
    """[N, C, H, W] non-negative activation -> [N, 1, H, W] SMOE Scale statistic."""
    if clamp:
        a = torch.relu(a)
    x = a + eps
    m = x.mean(dim=1, keepdim=True)
    return m * (torch.log2(m) - torch.log2(x).mean(dim=1, keepdim=True))


def resize_bilinear(m: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with half-pixel centres (align_corners=False), no antialiasing."""
    if tuple(m.shape[-2:]) == tuple(size):
        return m
    return F.interpolate(m, size=size, mode="bilinear", align_corners=False)


def smoe_maps(
    activations: list[torch.Tensor],
    size: tuple[int, int],
    weights: list[float],
    normaliser: str = "gaussian",
    clamp: list[bool] | None = None,
    eps: float = EPS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale-end activations (early -> late) -> (smoe [N,1,h,w], smoe_scales [N,S,h,w])."""
    clamp = clamp or [False] * len(activations)
    scales = [
        resize_bilinear(normalise(smoe_scale(a, c, eps), normaliser), size)
        for a, c in zip(activations, clamp)
    ]
    stacked = torch.cat(scales, dim=1)
    w = torch.tensor(weights, dtype=stacked.dtype).view(1, -1, 1, 1)
    combined = (stacked * (w / w.sum())).sum(dim=1, keepdim=True)
    return combined, stacked
