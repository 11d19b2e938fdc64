"""SMOE Scale as ONNX nodes, op for op as export/methods/smoe.py and normalise.py compute it.

Per scale end a [N, C, H, W] (after its activation; clamped at 0 where it has none):
    x = a + eps;  m = mean_c x;  smoe = m * (log2 m - mean_c log2 x)
then the Gaussian CDF over each map's H x W pixels, 0.5 * (1 + erf((s - mu) / (sigma * sqrt 2))),
a bilinear resize with half-pixel centres to the output map size, and the weighted mean of the maps.
"""
from __future__ import annotations

import math

import numpy as np

from export.surgery_graph import GraphWriter

NORMALISERS = ("gaussian",)
SIGMA_MIN = 1e-12


def smoe_scale(gw: GraphWriter, a: str, clamp: bool, eps: float) -> str:
    """[N, C, H, W] -> [N, 1, H, W] SMOE Scale statistic."""
    if clamp:
        a = gw.op("Relu", [a], "smoe_clamp")
    x = gw.op("Add", [a, gw.const(np.float32(eps), "smoe_eps")], "smoe_x")
    m = gw.reduce("ReduceMean", x, [1], hint="smoe_mean")
    mean_log = gw.reduce("ReduceMean", gw.log2(x, "smoe_log2x"), [1], hint="smoe_mean_log2")
    return gw.op("Mul", [m, gw.op("Sub", [gw.log2(m, "smoe_log2m"), mean_log], "smoe_diff")], "smoe")


def gaussian_cdf(gw: GraphWriter, s: str) -> str:
    mu = gw.reduce("ReduceMean", s, [2, 3], hint="cdf_mu")
    d = gw.op("Sub", [s, mu], "cdf_d")
    var = gw.reduce("ReduceMean", gw.op("Mul", [d, d], "cdf_d2"), [2, 3], hint="cdf_var")
    sigma = gw.op("Max", [gw.op("Sqrt", [var], "cdf_sigma"), gw.const(np.float32(SIGMA_MIN), "sigma_min")], "cdf_sigma")
    z = gw.op("Div", [d, gw.op("Mul", [sigma, gw.const(np.float32(math.sqrt(2.0)), "sqrt2")], "cdf_s2")], "cdf_z")
    one_plus = gw.op("Add", [gw.op("Erf", [z], "cdf_erf"), gw.const(np.float32(1.0), "one")], "cdf_1p")
    return gw.op("Mul", [one_plus, gw.const(np.float32(0.5), "half")], "cdf")


def resize_bilinear(gw: GraphWriter, m: str, src: tuple[int, int], size: tuple[int, int]) -> str:
    if tuple(src) == tuple(size):
        return m
    nc = gw.op("Slice", [gw.op("Shape", [m], "resize_shape"), gw.ints([0], "s0"), gw.ints([2], "s2")], "resize_nc")
    sizes = gw.op("Concat", [nc, gw.ints(list(size), "resize_hw")], "resize_sizes", axis=0)
    return gw.op("Resize", [m, "", "", sizes], "smoe_resized", mode="linear",
                 coordinate_transformation_mode="half_pixel")


def smoe_maps(gw: GraphWriter, ends: list[tuple[str, tuple[int, int], bool]], size: tuple[int, int],
              weights: list[float], eps: float, outputs: tuple[str, str]) -> None:
    """ends: (tensor, (H, W), clamp) early -> late. Writes outputs (smoe [N,1,h,w], smoe_scales [N,S,h,w])."""
    maps = [resize_bilinear(gw, gaussian_cdf(gw, smoe_scale(gw, a, clamp, eps)), hw, size) for a, hw, clamp in ends]
    stacked = gw.op("Concat", maps, outputs=[outputs[1]], axis=1)
    w = np.asarray(weights, dtype=np.float32)
    w = (w / w.sum()).reshape(1, -1, 1, 1)
    weighted = gw.op("Mul", [stacked, gw.const(w, "smoe_weights")], "smoe_weighted")
    if gw.opset >= 13:
        gw.op("ReduceSum", [weighted, gw.ints([1], "axes")], outputs=[outputs[0]], keepdims=1)
    else:
        gw.op("ReduceSum", [weighted], outputs=[outputs[0]], axes=[1], keepdims=1)
