"""ONNX graph passes run on the exported graph before its checks (the parity check then covers them).

fold_pads_into_conv: a constant zero ``Pad`` whose only consumer is a ``Conv`` goes into the
Conv's own ``pads`` attribute (ONNX Conv takes asymmetric pads). TensorFlow-'SAME' models such as
EfficientNet-Lite pad asymmetrically before their stride-2 convs; torch exports that as a Pad
whose pads come out of a small chain of shape ops, which ONNX Runtime (1.2x) leaves as a separate
kernel copying the whole activation. Folded, the Conv reads the unpadded input directly.
The result is exactly the same computation: zero padding is zero padding.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import helper, numpy_helper

# ops evaluated at export time when all their inputs are constant (the chains torch emits for pads)
_FOLDABLE = {
    "Cast", "Concat", "ConstantOfShape", "Reshape", "Slice", "Transpose", "Unsqueeze", "Squeeze",
    "Gather", "Identity", "Flatten", "Neg", "Add", "Sub", "Mul", "Div",
}


class _Constants:
    """Constant values of a graph's tensors: initializers, Constant nodes, and foldable ops on them."""

    def __init__(self, graph: onnx.GraphProto):
        self.values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.producer = {o: n for n in graph.node for o in n.output}
        self.graph_inputs = {i.name for i in graph.input} - set(self.values)

    def get(self, name: str) -> np.ndarray | None:
        if name in self.values:
            return self.values[name]
        node = self.producer.get(name)
        if name in self.graph_inputs or node is None:
            return None
        if node.op_type == "Constant":
            value = _constant_node_value(node)
        elif node.op_type in _FOLDABLE and node.domain in ("", "ai.onnx"):
            args = [self.get(i) if i else None for i in node.input]
            if any(a is None for a, i in zip(args, node.input) if i):
                return None
            from onnx.reference import ReferenceEvaluator

            feeds = {i: a for i, a in zip(node.input, args) if i}
            outs = ReferenceEvaluator(node).run(None, feeds)
            for o, v in zip(node.output, outs):
                self.values[o] = np.asarray(v)
            return self.values[name]
        else:
            return None
        if value is not None:
            self.values[name] = value
        return value


def _constant_node_value(node: onnx.NodeProto) -> np.ndarray | None:
    for a in node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t)
        if a.name in ("value_float", "value_int", "value_floats", "value_ints"):
            return np.asarray(helper.get_attribute_value(a))
    return None


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    uses: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            uses.setdefault(i, []).append(n)
    return uses


def fold_pads_into_conv(model: onnx.ModelProto) -> int:
    """Fold constant zero Pads into the following Conv, in place. Returns how many were folded."""
    graph = model.graph
    consts = _Constants(graph)
    uses = _consumers(graph)
    graph_outputs = {o.name for o in graph.output}
    drop: list[onnx.NodeProto] = []
    for pad in graph.node:
        if pad.op_type != "Pad" or pad.domain not in ("", "ai.onnx"):
            continue
        if (_attr(pad, "mode", b"constant") or b"constant") not in (b"constant", "constant"):
            continue
        if len(pad.input) > 3 and pad.input[3]:  # 'axes' input (opset 18+): keep it simple
            continue
        out = pad.output[0]
        users = uses.get(out, [])
        if out in graph_outputs or len(users) != 1:
            continue
        conv = users[0]
        if conv.op_type != "Conv" or conv.input[0] != out or list(conv.input).count(out) != 1:
            continue
        if (_attr(conv, "auto_pad", b"NOTSET") or b"NOTSET") not in (b"NOTSET", "NOTSET"):
            continue
        pads = consts.get(pad.input[1]) if len(pad.input) > 1 and pad.input[1] else None
        if pads is None:
            continue
        pads = np.asarray(pads).astype(np.int64).ravel()
        if len(pad.input) > 2 and pad.input[2]:
            value = consts.get(pad.input[2])
            if value is None or np.any(np.asarray(value) != 0):
                continue
        rank = len(pads) // 2
        if rank < 3 or len(pads) != 2 * rank or np.any(pads < 0):
            continue
        begin, end = pads[:rank], pads[rank:]
        if begin[0] or begin[1] or end[0] or end[1]:  # batch / channel padding: not a conv pad
            continue
        spatial = rank - 2
        old = list(_attr(conv, "pads", None) or [0] * (2 * spatial))
        if len(old) != 2 * spatial:
            continue
        new = [int(old[i] + begin[2 + i]) for i in range(spatial)] + [
            int(old[spatial + i] + end[2 + i]) for i in range(spatial)
        ]
        for a in list(conv.attribute):
            if a.name == "pads":
                conv.attribute.remove(a)
        conv.attribute.append(helper.make_attribute("pads", new))
        conv.input[0] = pad.input[0]
        drop.append(pad)
    for pad in drop:
        graph.node.remove(pad)
        for vi in list(graph.value_info):
            if vi.name == pad.output[0]:
                graph.value_info.remove(vi)
    if drop:
        remove_dead_nodes(model)
    return len(drop)


def remove_dead_nodes(model: onnx.ModelProto) -> int:
    """Remove nodes none of whose outputs is used (by a node or as a graph output), and unused
    initializers. Returns how many nodes were removed."""
    graph = model.graph
    removed = 0
    while True:
        used = Counter(i for n in graph.node for i in n.input)
        used.update(o.name for o in graph.output)
        dead = [n for n in graph.node if not any(used[o] for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
        removed += len(dead)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    for init in list(graph.initializer):
        if init.name not in used:
            graph.initializer.remove(init)
    names = {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
    for vi in list(graph.value_info):
        if vi.name not in names:
            graph.value_info.remove(vi)
    return removed


def optimise(model: onnx.ModelProto) -> dict[str, int]:
    """All passes, in place; returns what each did."""
    return {"pads_folded_into_conv": fold_pads_into_conv(model)}
