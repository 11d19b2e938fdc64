"""Graph helpers for the graph builder (numpy + onnx + onnxruntime only, never torch).

``GraphWriter`` appends nodes with fresh, prefixed names to a graph and writes the few ops whose
signature changed between opsets (axes as attribute or as input) the way the model's opset
wants. ``probe`` runs the model once in ONNX Runtime with every node output exposed, which gives
the real shape and values of every tensor at the model's input size (what shape inference gives,
plus the values: scale ends must be non-negative).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edge_saliency.errors import UserError

PREFIX = "edge_saliency/"


def default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    raise UserError("the model imports no default ONNX opset; it is not a standard ONNX model")


class GraphWriter:
    """Adds nodes and constants to ``graph`` under names that cannot clash with the model's."""

    def __init__(self, graph: onnx.GraphProto, opset: int):
        self.graph, self.opset = graph, opset
        self.taken = {i.name for i in graph.initializer} | {i.name for i in graph.input}
        for node in graph.node:
            self.taken.update(node.output)
            self.taken.add(node.name)
        self.counter = 0

    def fresh(self, hint: str) -> str:
        while True:
            self.counter += 1
            name = f"{PREFIX}{hint}_{self.counter}"
            if name not in self.taken:
                self.taken.add(name)
                return name

    def const(self, value, hint: str = "const", dtype=np.float32) -> str:
        name = self.fresh(hint)
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def ints(self, values, hint: str = "ints") -> str:
        return self.const(np.asarray(values, dtype=np.int64), hint, np.int64)

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, outputs: list[str] | None = None,
           n_out: int = 1, **attrs) -> str | list[str]:
        hint = hint or op_type.lower()
        outs = outputs or [self.fresh(hint) for _ in range(n_out)]
        self.graph.node.append(helper.make_node(op_type, inputs, outs, name=self.fresh(f"{hint}_node"), **attrs))
        return outs[0] if len(outs) == 1 else outs

    def clone_node(self, node: onnx.NodeProto, inputs: list[str], outputs: list[str]) -> None:
        """A copy of ``node`` (same op, domain and attributes) on other tensors."""
        clone = helper.make_node(node.op_type, inputs, outputs, name=self.fresh("clone_node"), domain=node.domain)
        clone.attribute.extend(node.attribute)
        self.graph.node.append(clone)

    # ops whose axes moved from attribute to input ------------------------------------------
    def reduce(self, op_type: str, x: str, axes: list[int], keepdims: int = 1, hint: str | None = None) -> str:
        moved = 13 if op_type == "ReduceSum" else 18
        if self.opset >= moved:
            return self.op(op_type, [x, self.ints(axes, "axes")], hint, keepdims=keepdims)
        return self.op(op_type, [x], hint, axes=axes, keepdims=keepdims)

    def unsqueeze(self, x: str, axes: list[int], hint: str = "unsqueeze") -> str:
        if self.opset >= 13:
            return self.op("Unsqueeze", [x, self.ints(axes, "axes")], hint)
        return self.op("Unsqueeze", [x], hint, axes=axes)

    def squeeze(self, x: str, axes: list[int], hint: str = "squeeze") -> str:
        if self.opset >= 13:
            return self.op("Squeeze", [x, self.ints(axes, "axes")], hint)
        return self.op("Squeeze", [x], hint, axes=axes)

    def reshape(self, x: str, shape: list[int], hint: str = "reshape") -> str:
        return self.op("Reshape", [x, self.ints(shape, "shape")], hint)

    def log2(self, x: str, hint: str = "log2") -> str:
        # as torch exports log2: Log(x) / ln 2
        return self.op("Div", [self.op("Log", [x], hint), self.const(np.float32(0.693147180559945309), "ln2")], hint)


def static_tensors(graph: onnx.GraphProto) -> set[str]:
    """Tensors that do not depend on any graph input: initializers and what is computed from them."""
    static = {i.name for i in graph.initializer} | {""}
    for node in graph.node:
        if node.op_type == "Constant" or all(i in static for i in node.input):
            if node.op_type not in ("RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial"):
                static.update(node.output)
    return static


def producers(graph: onnx.GraphProto) -> dict[str, tuple[int, onnx.NodeProto]]:
    return {out: (i, node) for i, node in enumerate(graph.node) for out in node.output if out}


def consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    found: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in set(node.input):
            if name:
                found.setdefault(name, []).append(node)
    return found


def probe(model: onnx.ModelProto, feeds: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """Run ``model`` once with ``names`` exposed as outputs (no graph optimisation, exact values)."""
    from edge_saliency.runtime.engines import quiet_cpu_session

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for name in names:
        if name not in have:
            m.graph.output.append(onnx.ValueInfoProto(name=name))
    try:
        sess = quiet_cpu_session(m, optimise=False)
        outs = sess.run(names, feeds)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"ONNX Runtime cannot run the model on a test input: {first[:300]}") from exc
    return dict(zip(names, outs))

