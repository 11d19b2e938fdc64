"""Read a finished ONNX classifier: its image input, scale ends, last feature map and head.

Everything is found from one ONNX Runtime run at the model's input size with every node output
exposed (``surgery_graph.probe``): real shapes and real values, as the torch side finds them with
forward hooks.

- scale ends: for each spatial resolution, the last non-negative 4-D tensor [1, C, H, W] at that
  resolution in node order (so the output of the activation after a conv, not the conv itself);
  padding (Pad), layout (Transpose) and constant tensors are not activations and are skipped.
- feature map: the last scale end (or ``--target-node``).
- head: the nodes between the feature map and the logits (the model's [N, K] output, or the input
  of its final Softmax). Its kind decides how Recipro-CAM runs:
    gap_linear   global average pooling, reshapes, one Gemm or MatMul(+Add): pooled vectors go to
                 the linear layer directly and only the target row is needed for the logit score;
    gap_head     global average pooling then anything else: the rest of the head is cloned and
                 run on the h*w pooled vectors of the masked copies;
    masked_batch anything else: the whole head is cloned and run on the h*w masked copies.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from edge_saliency.errors import UserError
from export import surgery_graph as sg

# Ops a head may contain: all act on each sample of the batch on its own.
HEAD_OPS = {
    "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax", "AveragePool", "MaxPool",
    "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Gemm", "MatMul", "Add", "Sub", "Mul",
    "Div", "Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu", "Selu",
    "Gelu", "Erf", "Sqrt", "Pow", "Dropout", "Identity", "BatchNormalization", "Conv", "Softmax",
    "LogSoftmax", "Shape", "Gather", "Concat", "Cast", "Slice", "Constant",
}
PASS_THROUGH = {"Flatten", "Reshape", "Squeeze", "Dropout", "Identity"}
NOT_ACTIVATIONS = {"Pad", "Transpose", "Constant", "ConstantOfShape", "Shape", "Reshape", "Resize", "Upsample"}
TARGET_FLAG = "--target-node"


@dataclass
class ImageInput:
    name: str
    layout: str  # "nchw" | "nhwc" (of the model's own float input)
    size: tuple[int, int]  # (h, w)
    batch: int | str  # the model's batch dimension: a number, or a symbolic name


@dataclass
class ScaleEndNode:
    tensor: str
    node: str  # the producing node's name (the tensor name where the node has none)
    order: int  # index of the producing node
    channels: int
    size: tuple[int, int]
    nonnegative: bool = True


@dataclass
class Head:
    kind: str  # gap_linear | gap_head | masked_batch
    feature: ScaleEndNode
    logits: str  # the raw scores tensor [N, K]
    nodes: list[onnx.NodeProto] = field(default_factory=list)  # what is cloned (gap_head, masked_batch)
    clone_input: str = ""  # the tensor the clone reads, replaced by the masked batch
    pooled_keepdims: bool = True  # gap_head: the pooled tensor is [N, C, 1, 1] (else [N, C])
    weight: str = ""  # gap_linear: Gemm B / MatMul B
    bias: str | None = None
    weight_is_kc: bool = True  # B is [K, C] (Gemm transB=1), else [C, K]
    alpha: float = 1.0
    beta: float = 1.0


@dataclass
class Analysis:
    input: ImageInput
    scale_ends: list[ScaleEndNode]
    head: Head
    num_classes: int
    outputs: list[str]  # the model's own outputs
    values: dict[str, np.ndarray]
    static: set[str]
    notes: list[str] = field(default_factory=list)


def _dims(vi: onnx.ValueInfoProto) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in vi.type.tensor_type.shape.dim]


def find_input(model: onnx.ModelProto, layout: str | None, input_size: tuple[int, int] | None) -> ImageInput:
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise UserError(f"the model has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                        "surgery wraps a classifier with exactly one image input")
    vi = inputs[0]
    elem = vi.type.tensor_type.elem_type
    if elem != TensorProto.FLOAT:
        raise UserError(f"input {vi.name!r} is {TensorProto.DataType.Name(elem)}; surgery wraps models "
                        "with a float32 image input")
    dims = _dims(vi)
    if len(dims) != 4:
        raise UserError(f"input {vi.name!r} has shape {dims}; expected a 4-D image [N, C, H, W] or [N, H, W, C]")
    if layout is None:
        if dims[1] == 3 and dims[3] != 3:
            layout = "nchw"
        elif dims[3] == 3 and dims[1] != 3:
            layout = "nhwc"
        else:
            raise UserError(f"cannot tell the layout of input {vi.name!r} with shape {dims}; pass --layout nchw or nhwc")
    if layout not in ("nchw", "nhwc"):
        raise UserError(f"--layout wants nchw or nhwc, got {layout!r}")
    ch, hw = (dims[1], dims[2:4]) if layout == "nchw" else (dims[3], dims[1:3])
    if ch not in (3, None) and not isinstance(ch, str):
        raise UserError(f"input {vi.name!r} with shape {dims} has {ch} channels in {layout.upper()}; "
                        "expected 3 (pass --layout if the layout is the other one)")
    static_hw = tuple(hw) if all(isinstance(d, int) and d > 0 for d in hw) else None
    if input_size and static_hw and tuple(input_size) != static_hw:
        raise UserError(f"--input-size {input_size[0]}x{input_size[1]} differs from the model's fixed "
                        f"input size {static_hw[0]}x{static_hw[1]} (input {vi.name!r})")
    size = static_hw or (tuple(input_size) if input_size else None)
    if size is None:
        raise UserError(f"input {vi.name!r} has a dynamic spatial size {dims}; pass --input-size HxW")
    batch = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else (dims[0] or "batch")
    return ImageInput(vi.name, layout, (int(size[0]), int(size[1])), batch)


def _node_label(node: onnx.NodeProto, tensor: str) -> str:
    return node.name or tensor


def _is_map(v) -> bool:
    return (isinstance(v, np.ndarray) and v.ndim == 4 and v.shape[0] == 1 and v.shape[2] * v.shape[3] > 1
            and v.dtype == np.float32)


def _resolve(graph: onnx.GraphProto, ref: str, flag: str) -> tuple[str, int, onnx.NodeProto]:
    """A node name or a tensor name -> (tensor, node index, node)."""
    prod = sg.producers(graph)
    if ref in prod:
        idx, node = prod[ref]
        return ref, idx, node
    for i, node in enumerate(graph.node):
        if node.name == ref:
            return node.output[0], i, node
    raise UserError(f"no node or tensor named {ref!r} in the model ({flag})")


def _scale_end(graph, values, tensor: str, idx: int, node: onnx.NodeProto, flag: str) -> ScaleEndNode:
    v = values.get(tensor)
    if not _is_map(v):
        shape = list(v.shape) if isinstance(v, np.ndarray) else "no tensor"
        raise UserError(f"node {_node_label(node, tensor)!r} outputs {shape}, not a 4-D float feature map "
                        f"[N, C, H, W] ({flag})")
    return ScaleEndNode(tensor, _node_label(node, tensor), idx, int(v.shape[1]), (int(v.shape[2]), int(v.shape[3])),
                        nonnegative=bool(v.min() >= 0.0))


def find_scale_ends(graph: onnx.GraphProto, values: dict, static: set[str],
                    scale_nodes: list[str] | None) -> list[ScaleEndNode]:
    if scale_nodes:
        return [_scale_end(graph, values, *_resolve(graph, ref, "--scale-nodes"), "--scale-nodes") for ref in scale_nodes]
    by_size: dict[tuple[int, int], ScaleEndNode] = {}
    for i, node in enumerate(graph.node):
        if node.op_type in NOT_ACTIVATIONS:
            continue
        for out in node.output:
            v = values.get(out)
            if out in static or not _is_map(v) or v.min() < 0.0:
                continue
            by_size[(int(v.shape[2]), int(v.shape[3]))] = ScaleEndNode(
                out, _node_label(node, out), i, int(v.shape[1]), (int(v.shape[2]), int(v.shape[3])))
    if not by_size:
        raise UserError("no node outputs a non-negative 4-D feature map [N, C, H, W] (not a CNN, or its "
                        "activations are not ReLU-like); pass --scale-nodes with the tensors to read")
    return sorted(by_size.values(), key=lambda e: e.order)


def find_logits(graph: onnx.GraphProto, values: dict) -> tuple[str, int]:
    prod = sg.producers(graph)
    for out in graph.output:
        v = values.get(out.name)
        if isinstance(v, np.ndarray) and v.ndim == 2 and v.shape[0] == 1 and v.shape[1] >= 2 and v.dtype == np.float32:
            name = out.name
            # the raw scores are the input of a final Softmax (through Identity/Dropout)
            while name in prod and prod[name][1].op_type in ("Identity", "Dropout"):
                name = prod[name][1].input[0]
            if name in prod and prod[name][1].op_type in ("Softmax", "LogSoftmax"):
                name = prod[name][1].input[0]
            return name, int(v.shape[1])
    shapes = {o.name: list(values[o.name].shape) if isinstance(values.get(o.name), np.ndarray) else "?" for o in graph.output}
    raise UserError(f"not a CNN classifier: no output has class scores [N, K] (outputs: {shapes})")


def _const_value(graph: onnx.GraphProto, values: dict, name: str):
    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    return values.get(name)


def _reduce_axes(graph, values, node: onnx.NodeProto) -> list[int] | None:
    for a in node.attribute:
        if a.name == "axes":
            return list(a.ints)
    if len(node.input) > 1 and node.input[1]:
        v = _const_value(graph, values, node.input[1])
        return None if v is None else [int(x) for x in np.ravel(v)]
    return None


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def find_head(graph: onnx.GraphProto, values: dict, static: set[str], feature: ScaleEndNode, logits: str) -> Head:
    label = feature.node
    reach = {feature.tensor}
    forward: list[onnx.NodeProto] = []
    for node in graph.node[feature.order + 1:]:
        if any(i in reach for i in node.input):
            forward.append(node)
            reach.update(o for o in node.output if o)
    if logits not in reach:
        raise UserError(f"the class scores {logits!r} do not depend on feature map {label!r}; pass {TARGET_FLAG} "
                        "with the last feature map before the classifier head")
    prod = sg.producers(graph)
    needed, stack = set(), [logits]
    while stack:
        t = stack.pop()
        if t in needed or t not in prod:
            continue
        needed.add(t)
        stack.extend(i for i in prod[t][1].input if i)
    nodes = [n for n in forward if any(o in needed for o in n.output)]
    for node in nodes:
        if node.op_type not in HEAD_OPS:
            raise UserError(f"head node {node.name or node.output[0]!r} ({node.op_type}) after feature map {label!r} "
                            f"is not a classifier-head op; pass {TARGET_FLAG} with the last feature map before the head")
        for i in node.input:
            if i and i not in reach and i not in static:
                raise UserError(f"head node {node.name or node.output[0]!r} reads {i!r}, which comes from before feature "
                                f"map {label!r} (a skip around it); pass {TARGET_FLAG} with a later feature map")
    head = Head("masked_batch", feature, logits, nodes=nodes, clone_input=feature.tensor)
    data = [n for n in nodes if feature.tensor in n.input and n.op_type != "Shape"]
    readers = [n for n in nodes if feature.tensor in n.input]
    if len(data) != 1 or len(readers) != 1:
        return head
    gap = data[0]
    axes = _reduce_axes(graph, values, gap) if gap.op_type == "ReduceMean" else None
    is_gap = gap.op_type == "GlobalAveragePool" or (
        gap.op_type == "ReduceMean" and axes is not None and sorted(a % 4 for a in axes) == [2, 3])
    if not is_gap:
        return head
    keep = gap.op_type == "GlobalAveragePool" or bool(_attr(gap, "keepdims", 1))
    head = Head("gap_head", feature, logits, nodes=[n for n in nodes if n is not gap], clone_input=gap.output[0],
                pooled_keepdims=keep)
    linear = _linear_chain(graph, values, static, nodes, gap.output[0], logits, feature.channels)
    if linear is not None:
        head.kind = "gap_linear"
        head.weight, head.bias, head.weight_is_kc, head.alpha, head.beta = linear
    return head


def _linear_chain(graph, values, static, nodes, pooled: str, logits: str, channels: int):
    """GAP -> reshapes -> Gemm | MatMul(+Add) == logits: (weight, bias, is_kc, alpha, beta) or None."""
    cur = pooled
    while True:
        data = [n for n in nodes if cur in n.input and n.op_type != "Shape"]
        if len(data) != 1:
            return None
        node = data[0]
        if node.op_type in PASS_THROUGH:
            cur = node.output[0]
            continue
        break
    v = values.get(cur)
    if not (isinstance(v, np.ndarray) and v.shape == (1, channels)):
        return None
    if node.op_type == "Gemm":
        if node.input[0] != cur or _attr(node, "transA", 0) or node.output[0] != logits:
            return None
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if node.input[1] not in static or (bias and bias not in static):
            return None
        return node.input[1], bias, bool(_attr(node, "transB", 0)), float(_attr(node, "alpha", 1.0)), float(_attr(node, "beta", 1.0))
    if node.op_type == "MatMul" and node.input[0] == cur and node.input[1] in static:
        if node.output[0] == logits:
            return node.input[1], None, False, 1.0, 1.0
        adds = [n for n in nodes if node.output[0] in n.input]
        if len(adds) == 1 and adds[0].op_type == "Add" and adds[0].output[0] == logits:
            other = [i for i in adds[0].input if i != node.output[0]]
            if len(other) == 1 and other[0] in static:
                return node.input[1], other[0], False, 1.0, 1.0
    return None


def analyse(model: onnx.ModelProto, layout: str | None = None, input_size: tuple[int, int] | None = None,
            scale_nodes: list[str] | None = None, target_node: str | None = None, need_head: bool = True) -> Analysis:
    """Everything the surgery needs; the head is only split when Recipro-CAM needs it."""
    graph = model.graph
    image = find_input(model, layout, input_size)
    h, w = image.size
    shape = (1, 3, h, w) if image.layout == "nchw" else (1, h, w, 3)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    names = [o for n in graph.node for o in n.output if o]
    values = sg.probe(model, {image.name: x}, names + [o.name for o in graph.output if o.name not in names])
    static = sg.static_tensors(graph)
    scale_ends = find_scale_ends(graph, values, static, scale_nodes)
    if target_node:
        feature = _scale_end(graph, values, *_resolve(graph, target_node, TARGET_FLAG), TARGET_FLAG)
    else:
        feature = scale_ends[-1]
    logits, k = find_logits(graph, values)
    head = find_head(graph, values, static, feature, logits) if need_head else Head("none", feature, logits)
    notes = [f"scale end {e.node} has negative values (no activation after it); SMOE clamps them at 0"
             for e in scale_ends if not e.nonnegative]
    return Analysis(image, scale_ends, head, k, [o.name for o in graph.output], values, static, notes)
