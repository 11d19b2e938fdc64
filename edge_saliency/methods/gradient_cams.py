"""Gradient CAMs on the last feature map A [N, K, h, w] for target class c, from the gradient
G = d y_c / d A (y_c: the target's logit):

- Grad-CAM:   ReLU(sum_k w_k A^k), w_k = mean_ij G^k
- Grad-CAM++: ReLU(sum_k w_k A^k), w_k = sum_ij alpha^k_ij ReLU(G^k_ij),
              alpha = G^2 / (2 G^2 + sum_ab A^k_ab G^3)  (the usual closed form, y = exp(logit))
- guidance-rectified (Fahim et al., "Rethinking gradient weights' influence over saliency map
  estimation"), our reading: cam = ReLU(sum_k w_k A^k) with Grad-CAM's w_k;
  guide = minmax(sum_k ReLU(A^k G^k)); result minmax(cam * guide).

Every map is min-max normalised to [0, 1]. In the graph only where the head after A is global
average pooling + linear: then G^k_ij = alpha W[c, k] / (h w) at every position, no backward pass.
Three table entries (guided, gradcam, gradcampp) share this module: they differ only in
``_weights`` and the guide.
"""
from __future__ import annotations

import numpy as np

RANGE_MIN = 1e-12


# ------------------------------------------------------------------ ONNX head
def _gradient(ctx) -> str:
    """[N, K] = dy_c/dA^k at every position (the same at all of them)."""
    gw, head = ctx.gw, ctx.head
    h, w = head.feature.size
    rows = gw.op("Gather", [head.weight, ctx.target], "grad_w", axis=0 if head.weight_is_kc else 1)
    if not head.weight_is_kc:
        rows = gw.op("Transpose", [rows], "grad_wt", perm=[1, 0])
    return gw.op("Mul", [rows, gw.const(np.float32(head.alpha / (h * w)), "grad_scale")], "grad_g")


def _weighted_sum(ctx, weights: str, a: str) -> str:
    """sum_k weights[n, k] A^k -> [N, 1, h, w] (as a batched MatMul)."""
    gw, f = ctx.gw, ctx.head.feature
    c, (h, w) = f.channels, f.size
    flat = gw.reshape(a, [0, c, h * w], "grad_aflat")
    s = gw.op("MatMul", [gw.unsqueeze(weights, [1], "grad_wrow"), flat], "grad_sum")
    return gw.reshape(s, [-1, 1, h, w], "grad_map")


def _min_max(gw, m: str, out: str | None = None) -> str:
    lo = gw.reduce("ReduceMin", m, [2, 3], hint="grad_lo")
    hi = gw.reduce("ReduceMax", m, [2, 3], hint="grad_hi")
    rng = gw.op("Max", [gw.op("Sub", [hi, lo], "grad_range"), gw.const(np.float32(RANGE_MIN), "range_min")], "grad_range")
    return gw.op("Div", [gw.op("Sub", [m, lo], "grad_shift"), rng], "grad_norm", outputs=[out] if out else None)


def build(ctx) -> dict:
    gw, f, name = ctx.gw, ctx.head.feature, ctx.method.name
    a = f.tensor
    g = _gradient(ctx)  # [N, K]
    if name == "gradcampp":
        h, w = f.size
        g2 = gw.op("Mul", [g, g], "gpp_g2")
        sum_a = gw.reshape(gw.reduce("ReduceSum", a, [2, 3], keepdims=0, hint="gpp_suma"), [0, f.channels], "gpp_suma")
        denom = gw.op("Add", [gw.op("Mul", [g2, gw.const(np.float32(2.0), "two")], "gpp_2g2"),
                              gw.op("Mul", [sum_a, gw.op("Mul", [g2, g], "gpp_g3")], "gpp_ag3")], "gpp_den")
        safe = gw.op("Where", [gw.op("Equal", [denom, gw.const(np.float32(0.0), "zero")], "gpp_zero"),
                               gw.const(np.float32(1.0), "one"), denom], "gpp_safe")
        alpha = gw.op("Div", [g2, safe], "gpp_alpha")
        weights = gw.op("Mul", [gw.op("Mul", [alpha, gw.op("Relu", [g], "gpp_relu_g")], "gpp_w"),
                                gw.const(np.float32(h * w), "positions")], "gpp_weights")
    else:
        weights = gw.op("Mul", [g, gw.const(np.float32(1.0), "one")], "gc_weights")  # mean over positions = g
    cam = gw.op("Relu", [_weighted_sum(ctx, weights, a)], "grad_cam_raw")
    output = ctx.method.outputs[0]
    if name == "guided":
        guide_raw = gw.reduce("ReduceSum", gw.op("Relu", [gw.op("Mul", [a, gw.unsqueeze(g, [2, 3], "guide_g4")],
                                                                "guide_ag")], "guide_relu"), [1], hint="guide_sum")
        _min_max(gw, gw.op("Mul", [cam, _min_max(gw, guide_raw)], "guided_raw"), output)
    else:
        _min_max(gw, cam, output)
    return {"gradient": "analytic (GAP + linear head)", "score": "logit", "feature_layer": f.node,
            "map_size": list(f.size)}


def output_shapes(ctx) -> dict:
    return {ctx.method.outputs[0]: [ctx.batch, 1, *ctx.head.feature.size]}


# ------------------------------------------------------------------ numpy reference (float64)
def ref_min_max(m: np.ndarray) -> np.ndarray:
    return (m - m.min()) / max(m.max() - m.min(), RANGE_MIN)


def _ref_raw(name: str, a: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(cam before min-max, guide before min-max or None)."""
    a, g = a.astype(np.float64), g.astype(np.float64)
    if name == "gradcampp":
        g2 = g * g
        denom = 2 * g2 + a.sum(axis=(1, 2), keepdims=True) * g2 * g
        alpha = g2 / np.where(denom != 0, denom, 1.0)
        w = (alpha * np.maximum(g, 0)).sum(axis=(1, 2))
    else:
        w = g.mean(axis=(1, 2))
    cam = np.maximum(np.tensordot(w, a, axes=1), 0)
    return cam, (np.maximum(a * g, 0).sum(axis=0) if name == "guided" else None)


def ref_map(name: str, a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """a, g [K, h, w] (the feature map and dy_c/dA) -> the method's map [h, w]."""
    cam, guide = _ref_raw(name, a, g)
    return ref_min_max(cam * ref_min_max(guide)) if guide is not None else ref_min_max(cam)


def ref_gap_linear_gradient(ctx, target: int) -> np.ndarray:
    head = ctx.head
    weight = ctx.constant(head.weight).astype(np.float64)
    row = weight[target] if head.weight_is_kc else weight[:, target]
    h, w = head.feature.size
    return np.broadcast_to((head.alpha * row / (h * w))[:, None, None], (len(row), h, w))


def reference(ctx, tensors: dict) -> dict:
    name = ctx.method.name
    fmaps, targets = tensors[ctx.head.feature.tensor], tensors["target_class"]
    out = [ref_map(name, f, ref_gap_linear_gradient(ctx, int(t)))[None] for f, t in zip(fmaps, targets)]
    return {ctx.method.outputs[0]: np.stack(out)}


def reference_conditioning(ctx, tensors: dict) -> float:
    """max |cam| / (max - min) of the map before its min-max normalisation."""
    worst = 0.0
    for f, t in zip(tensors[ctx.head.feature.tensor], tensors["target_class"]):
        cam, guide = _ref_raw(ctx.method.name, f, ref_gap_linear_gradient(ctx, int(t)))
        m = cam * ref_min_max(guide) if guide is not None else cam
        worst = max(worst, float(np.abs(m).max() / max(m.max() - m.min(), 1e-30)))
    return worst
