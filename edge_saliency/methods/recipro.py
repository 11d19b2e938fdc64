"""Recipro-CAM (Byun, Lee): gradient-free class activation maps from spatially masked features.

Each of the P = h*w positions of the feature map F [N, C, h, w] gets a copy of F that keeps only
that position (one-hot, or its 3x3 neighbourhood weighted [[1,2,1],[2,4,2],[1,2,1]]/16); the head
scores all copies as one batch; the target class's score (logit, or softmax probability) per
position, min-max normalised, is the map [N, 1, h, w].

- gap_linear: a masked copy pools to (kernel * F)[:, i, j] / P, so the P pooled vectors go to the
  linear layer directly; for the logit score only the target class's row of the weights is used.
- gap_head: the pooled vectors [N*P, C(, 1, 1)] go to a clone of the rest of the head.
- masked_batch: the masked copies [N*P, C, h, w] (F x one-hot masks) go to a clone of the head.
"""
from __future__ import annotations

import numpy as np

from edge_saliency.numeric import softmax
from onnx import helper

SCORES = ("logit", "softmax")
VARIANTS = ("onehot", "gaussian3x3")
GAUSS = np.array([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], dtype=np.float32) / 16.0


def spatial_masks(h: int, w: int, variant: str) -> np.ndarray:
    """[P, 1, h, w]: mask p keeps position p (and, for gaussian3x3, its neighbours)."""
    eye = np.eye(h * w, dtype=np.float32).reshape(h * w, h, w)
    if variant == "gaussian3x3":
        padded = np.pad(eye, ((0, 0), (1, 1), (1, 1)))
        eye = sum(GAUSS[dy, dx] * padded[:, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3))
    return eye.reshape(h * w, 1, h, w).astype(np.float32)


def clone_head(gw, head, batch_input: str, values: dict, skip=None, done: dict | None = None) -> str:
    """Copy the head's nodes so they read ``batch_input`` instead of ``head.clone_input``; returns
    the clone's logits (or, with ``skip``, the clone's name for that node's first input: the node
    itself is not copied). ``done``: {node's output: the tensor that replaces it} for nodes already
    computed another way (not copied). A Reshape to a constant shape that fixes the batch at 1 gets
    0 there (copy the batch dimension), so the clone runs on any batch."""
    rename = {head.clone_input: batch_input, **(done or {})}
    for node in head.nodes:
        if node is skip:
            return rename.get(node.input[0], node.input[0])
        if done and all(o in done for o in node.output if o):
            continue
        inputs = [rename.get(i, i) for i in node.input]
        if node.op_type == "Reshape" and node.input[1] not in rename:
            # the probe's output shape with the batch copied from the input: a dynamic-batch
            # x.view(x.size(0), -1) reads the batch off a tensor the clone does not have
            src, dst = values.get(node.input[0]), values.get(node.output[0])
            if src is not None and dst is not None and src.shape[:1] == dst.shape[:1] == (1,):
                fixed = np.array(dst.shape, dtype=np.int64)
                fixed[0] = 0
                inputs[1] = gw.ints(fixed, "head_shape")
        outputs = []
        for o in node.output:
            if o:
                rename[o] = gw.fresh("head")
            outputs.append(rename.get(o, ""))
        gw.clone_node(node, inputs, outputs)
    return rename[head.logits]


def _pooled(gw, fmap: str, c: int, h: int, w: int, variant: str, scaled: bool = True) -> str:
    """F [N, C, h, w] -> [N, P, C] pooled vectors of the masked copies (``scaled`` False: P times
    them, the 1 / P left to the caller)."""
    if variant == "gaussian3x3":
        kernel = np.broadcast_to(GAUSS.reshape(1, 1, 3, 3), (c, 1, 3, 3)).copy()
        fmap = gw.op("Conv", [fmap, gw.const(kernel, "gauss3x3")], "recipro_blur", group=c, pads=[1, 1, 1, 1],
                     kernel_shape=[3, 3])
    flat = gw.op("Transpose", [gw.reshape(fmap, [0, c, h * w], "recipro_flat")], "recipro_pos", perm=[0, 2, 1])
    if not scaled:
        return flat
    return gw.op("Mul", [flat, gw.const(np.float32(1.0 / (h * w)), "inv_p")], "recipro_pooled")


def _leading_conv1x1(ctx):
    """(node, weight [K, C, 1, 1], bias) where the gap_head's pooled [N, C, 1, 1] tensor goes only
    into a plain 1x1 Conv with constant weights (timm's MobileNetV3 conv_head, 960 -> 1280)."""
    head = ctx.head
    if head.kind != "gap_head" or not head.pooled_keepdims:
        return None
    users = [n for n in head.nodes if head.clone_input in n.input]
    if len(users) != 1 or users[0].op_type != "Conv" or users[0].input[0] != head.clone_input:
        return None
    node = users[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    static = ctx.analysis.static
    weight = ctx.constant(node.input[1])
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if (weight is None or weight.ndim != 4 or tuple(weight.shape[2:]) != (1, 1) or node.input[1] not in static
            or (bias and bias not in static) or attrs.get("group", 1) != 1
            or any(v != 1 for v in attrs.get("strides", [1, 1]) + attrs.get("dilations", [1, 1]))
            or any(attrs.get("pads", [0, 0, 0, 0])) or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID")):
        return None
    return node, weight.shape, bias


def _conv1x1_as_gemm(gw, f: str, c: int, h: int, w: int, variant: str, conv) -> dict:
    """The pooled vectors [N * P, C] through the head's leading 1x1 Conv as one Gemm (the 1 / P of
    the pooling as its alpha): one [N*P, C] x [C, K] product instead of N*P 1x1 convolutions."""
    node, (k, c_in, _, _), bias = conv
    flat = gw.reshape(_pooled(gw, f, c, h, w, variant, scaled=False), [-1, c], "recipro_rows")
    weight = gw.reshape(node.input[1], [k, c_in], "recipro_conv_w")
    y = gw.op("Gemm", [flat, weight] + ([bias] if bias else []), "recipro_conv_gemm", alpha=1.0 / (h * w), transB=1)
    return {node.output[0]: gw.reshape(y, [-1, k, 1, 1], "recipro_conv_out")}


def _target_scores(gw, all_scores: str, target: str, p: int, score: str) -> str:
    """[N, P, K] logits -> [N, P] score of the target class."""
    if score == "softmax":
        all_scores = gw.op("Softmax", [all_scores], "recipro_softmax", axis=2)
    shape = gw.op("Concat", [gw.op("Shape", [target], "target_shape"), gw.ints([p, 1], "p1")], "idx_shape", axis=0)
    idx = gw.op("Expand", [gw.unsqueeze(target, [1, 2], "target_idx"), shape], "recipro_idx")
    return gw.squeeze(gw.op("GatherElements", [all_scores, idx], "recipro_gather", axis=2), [2], "recipro_scores")


def _min_max(gw, s: str, h: int, w: int, out: str) -> None:
    lo = gw.reduce("ReduceMin", s, [1], hint="recipro_lo")
    hi = gw.reduce("ReduceMax", s, [1], hint="recipro_hi")
    rng = gw.op("Max", [gw.op("Sub", [hi, lo], "recipro_range"), gw.const(np.float32(1e-12), "range_min")], "recipro_range")
    norm = gw.op("Div", [gw.op("Sub", [s, lo], "recipro_shift"), rng], "recipro_norm")
    gw.op("Reshape", [norm, gw.ints([-1, 1, h, w], "map_shape")], outputs=[out])


def _gap_linear_scores(gw, head, pooled: str, target: str, k: int, p: int, score: str, scale: float = 1.0) -> str:
    """[N, P, C] (pooled vectors times 1 / ``scale``: the logit score applies it to the P scores,
    not the P * C inputs) -> [N, P] scores."""
    bias = None
    if head.bias:
        full = gw.op("Expand", [head.bias, gw.ints([1, k], "bias_shape")], "bias_full")
        bias = gw.reshape(full, [-1], "bias_k")
    if score == "logit":
        if head.weight_is_kc:
            w_t = gw.op("Gather", [head.weight, target], "recipro_wt", axis=0)
        else:
            w_t = gw.op("Transpose", [gw.op("Gather", [head.weight, target], "recipro_wt", axis=1)], "recipro_wt", perm=[1, 0])
        s = gw.squeeze(gw.op("MatMul", [pooled, gw.unsqueeze(w_t, [2], "recipro_wcol")], "recipro_dot"), [2], "recipro_s")
        if head.alpha * scale != 1.0:
            s = gw.op("Mul", [s, gw.const(np.float32(head.alpha * scale), "alpha")], "recipro_alpha")
        if bias:
            b_t = gw.op("Gather", [bias, target], "recipro_bt", axis=0)
            if head.beta != 1.0:
                b_t = gw.op("Mul", [b_t, gw.const(np.float32(head.beta), "beta")], "recipro_beta")
            s = gw.op("Add", [s, gw.unsqueeze(b_t, [1], "recipro_bcol")], "recipro_s")
        return s
    weight = gw.op("Transpose", [head.weight], "recipro_w", perm=[1, 0]) if head.weight_is_kc else head.weight
    logits = gw.op("MatMul", [pooled, weight], "recipro_logits")
    if head.alpha != 1.0:
        logits = gw.op("Mul", [logits, gw.const(np.float32(head.alpha), "alpha")], "recipro_alpha")
    if bias:
        if head.beta != 1.0:
            bias = gw.op("Mul", [bias, gw.const(np.float32(head.beta), "beta")], "recipro_beta")
        logits = gw.op("Add", [logits, bias], "recipro_logits")
    return _target_scores(gw, logits, target, p, score)


def build(ctx) -> dict:
    """Writes recipro_cam [N, 1, h, w]; returns the metadata entry."""
    gw, head, spec = ctx.gw, ctx.head, ctx.spec
    f = head.feature
    c, (h, w) = f.channels, f.size
    p = h * w
    k = ctx.num_classes
    if head.kind == "gap_linear" and spec.recipro_score == "logit":
        s = _gap_linear_scores(gw, head, _pooled(gw, f.tensor, c, h, w, spec.recipro_variant, scaled=False), ctx.target,
                               k, p, "logit", scale=1.0 / p)
    elif head.kind == "gap_linear":
        s = _gap_linear_scores(gw, head, _pooled(gw, f.tensor, c, h, w, spec.recipro_variant), ctx.target, k, p,
                               spec.recipro_score)
    else:
        done = None
        if head.kind == "gap_head" and (conv := _leading_conv1x1(ctx)) is not None:
            done, batch = _conv1x1_as_gemm(gw, f.tensor, c, h, w, spec.recipro_variant, conv), ""
        elif head.kind == "gap_head":
            shape = [-1, c, 1, 1] if head.pooled_keepdims else [-1, c]
            batch = gw.reshape(_pooled(gw, f.tensor, c, h, w, spec.recipro_variant), shape, "recipro_batch")
        else:
            masks = gw.const(spatial_masks(h, w, spec.recipro_variant).reshape(1, p, 1, h, w), "recipro_masks")
            copies = gw.op("Mul", [gw.unsqueeze(f.tensor, [1], "recipro_f5"), masks], "recipro_copies")
            batch = gw.reshape(copies, [-1, c, h, w], "recipro_batch")
        last = _final_linear(ctx) if spec.recipro_score == "logit" else None
        if last is not None:  # only the target's row of the classifier: as on the GAP + linear path
            node, linear = last
            feats = clone_head(gw, head, batch, ctx.values, skip=node, done=done)
            d = int(ctx.values[node.input[0]].shape[1])
            s = _gap_linear_scores(gw, linear, gw.reshape(feats, [-1, p, d], "recipro_feats"), ctx.target, k, p,
                                   "logit")
        else:
            head_out = clone_head(gw, head, batch, ctx.values, done=done)
            all_scores = gw.reshape(head_out, [-1, p, k], "recipro_all")
            s = _target_scores(gw, all_scores, ctx.target, p, spec.recipro_score)
    _min_max(gw, s, h, w, "recipro_cam")
    return {"score": spec.recipro_score, "variant": spec.recipro_variant, "path": head.kind,
            "feature_layer": f.node, "map_size": list(f.size)}


def _final_linear(ctx):
    """(node, linear) where the head ends in a Gemm on [N, D] features with constant weights: with
    the logit score its other K - 1 rows are not needed (timm's and torchvision's heads all end so).
    ``linear`` carries weight/bias/weight_is_kc/alpha/beta like a gap_linear Head."""
    from types import SimpleNamespace

    head = ctx.head
    node = next((n for n in head.nodes if head.logits in n.output), None)
    if node is None or node.op_type != "Gemm" or node is head.nodes[0]:
        return None
    attrs = {a.name: a for a in node.attribute}
    if "transA" in attrs and attrs["transA"].i:
        return None
    x = ctx.values.get(node.input[0])
    static = ctx.analysis.static
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if x is None or x.ndim != 2 or node.input[1] not in static or (bias and bias not in static):
        return None
    return node, SimpleNamespace(weight=node.input[1], bias=bias, weight_is_kc=bool(attrs["transB"].i) if "transB" in attrs
                                 else False, alpha=attrs["alpha"].f if "alpha" in attrs else 1.0,
                                 beta=attrs["beta"].f if "beta" in attrs else 1.0)


def output_shapes(ctx) -> dict:
    return {"recipro_cam": [ctx.batch, 1, *ctx.head.feature.size]}


# ------------------------------------------------------------------ numpy reference (float64)
def ref_scores(fmap: np.ndarray, head_fn, target: int, score: str = "logit", variant: str = "onehot") -> np.ndarray:
    """fmap [C, h, w]; head_fn: masked copies [P, C, h, w] -> logits [P, K] -> raw scores [P]."""
    c, h, w = fmap.shape
    masks = spatial_masks(h, w, variant).astype(np.float64)  # [P, 1, h, w]
    logits = np.asarray(head_fn(fmap[None].astype(np.float64) * masks), dtype=np.float64)
    return softmax(logits)[:, target] if score == "softmax" else logits[:, target]


def ref_map(fmap: np.ndarray, head_fn, target: int, score: str = "logit", variant: str = "onehot") -> np.ndarray:
    """The Recipro-CAM map [h, w] of ``target``: each masked copy through the head, min-max normalised."""
    s = ref_scores(fmap, head_fn, target, score, variant)
    s = (s - s.min()) / max(s.max() - s.min(), 1e-12)
    return s.reshape(fmap.shape[1:])


def gap_linear_head(weight: np.ndarray, bias: np.ndarray | None, weight_is_kc: bool = True, alpha: float = 1.0,
                    beta: float = 1.0):
    """The head 'global average pooling, then linear' as a function of a batch of maps."""
    w = weight.astype(np.float64)
    w = w if weight_is_kc else w.T
    b = 0.0 if bias is None else beta * np.asarray(bias, dtype=np.float64).reshape(-1)
    return lambda maps: alpha * maps.mean(axis=(2, 3)) @ w.T + b


def reference(ctx, tensors: dict) -> dict:
    """tensors: the feature map [N, C, h, w] and target_class [N] of one run."""
    spec = ctx.spec
    fmaps, targets = tensors[ctx.head.feature.tensor], tensors["target_class"]
    out = [ref_map(f, ctx.head_fn, int(t), spec.recipro_score, spec.recipro_variant)[None]
           for f, t in zip(fmaps, targets)]
    return {"recipro_cam": np.stack(out)}


def reference_conditioning(ctx, tensors: dict) -> float:
    """max |score| / (max - min) over the positions: how much float32 noise the min-max amplifies."""
    spec = ctx.spec
    worst = 0.0
    for f, t in zip(tensors[ctx.head.feature.tensor], tensors["target_class"]):
        s = ref_scores(f, ctx.head_fn, int(t), spec.recipro_score, spec.recipro_variant)
        worst = max(worst, float(np.abs(s).max() / max(s.max() - s.min(), 1e-30)))
    return worst
