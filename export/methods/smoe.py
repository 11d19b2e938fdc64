"""SMOE Scale (Mundhenk, Chen, Friedland, "Efficient Saliency Maps for Explainable AI").

Per location of a scale end's activation a [N, C, H, W] (after its ReLU), over the C channels:
    x = a + 1e-7;  m = mean_c x;  smoe = m * (log2 m - mean_c log2 x)
(eps = 1e-7 in the paper; log2(a + eps) makes the statistic sensitive to activations that
float rounding leaves at 1e-5 instead of 0, so a larger eps trades a little fidelity to the
paper for maps that agree across runtimes and precisions) then each map is normalised over its H x W pixels, bilinearly resized to the output map size and
combined across scale ends as a weighted mean.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from export.methods.normalise import normalise

EPS = 1e-7


# mean_c log2 x is computed as a log of products of channel groups: sum_c ln x_c = sum_g ln(prod_{c in g} x_c).
# With 4 channels per group the graph takes a quarter of the logs (Log was the costliest SMOE op:
# 1.2M activation values per frame for EfficientNet-Lite0), and both channel means are one MatMul
# each (MLAS GEMM in ONNX Runtime, faster than ReduceMean over the channel axis). Same statistic:
# measured max relative error vs float64 on random ReLU6 activations (C = 32..1280) below 5e-6,
# in torch and in ONNX Runtime alike. A product of GROUP values stays a normal float32 as long as
# eps**GROUP >= PRODUCT_MIN and every activation is below PRODUCT_MAX**(1/GROUP) (~3e7 for 4: far
# above any BN/ReLU activation; the export's parity check rejects a graph that makes inf or NaN),
# so the group shrinks for tiny eps.
GROUP = 4
PRODUCT_MIN, PRODUCT_MAX = 1e-30, 1e30
_LN2 = math.log(2.0)


def group_size(channels: int, eps: float, largest: int = GROUP) -> int:
    """Channels per product: a power of two dividing ``channels``, at most ``largest``,
    with eps**g >= PRODUCT_MIN."""
    g = 1
    while g * 2 <= largest and channels % (g * 2) == 0 and eps ** (g * 2) >= PRODUCT_MIN:
        g *= 2
    return g


def _channel_mean(x: torch.Tensor, scale: float) -> torch.Tensor:
    """scale * sum over channels of [N, C, P] -> [N, 1, P], as one MatMul (MLAS GEMM in ONNX
    Runtime: faster than ReduceMean over the channel axis)."""
    ones = torch.full((1, int(x.shape[1])), scale, dtype=x.dtype)
    return torch.matmul(ones, x)


def smoe_scale(a: torch.Tensor, clamp: bool = False, eps: float = EPS) -> torch.Tensor:
    """[N, C, H, W] non-negative activation -> [N, 1, H, W] SMOE Scale statistic."""
    if clamp:
        a = torch.relu(a)
    c, h, w = (int(d) for d in a.shape[1:])  # constants in the graph: no shape ops
    x = a.reshape(-1, c, h * w) + eps  # [N, C, P]: one reshape in, one out
    m = _channel_mean(x, 1.0 / c)
    p = x
    for _ in range(int(math.log2(group_size(c, eps)))):
        half = int(p.shape[1]) // 2  # channel halves: contiguous, one Split in ONNX Runtime
        p = p[:, :half] * p[:, half:]
    mean_ln = _channel_mean(torch.log(p), 1.0 / c)
    # m * (log2 m - mean_c log2 x)
    return (m * (torch.log(m) - mean_ln) * (1.0 / _LN2)).reshape(-1, 1, h, w)


def _power_of_two_ratio(src: int, dst: int) -> bool:
    big, small = max(src, dst), min(src, dst)
    ratio = big // small
    return big % small == 0 and ratio & (ratio - 1) == 0


def resize_bilinear(m: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with half-pixel centres (align_corners=False), no antialiasing."""
    src = tuple(int(d) for d in m.shape[-2:])
    if src == tuple(size):
        return m
    if all(_power_of_two_ratio(s, d) for s, d in zip(src, size)):
        # exact scales (powers of two): the same sampling as by size, but ONNX gets a constant
        # 'scales' input instead of shape ops computing 'sizes' for a dynamic batch
        scale = tuple(d / s for s, d in zip(src, size))
        return F.interpolate(m, scale_factor=scale, mode="bilinear", align_corners=False)
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
