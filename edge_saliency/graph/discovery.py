"""Read an ONNX classifier: its image input, scale ends, last feature map and head.

Everything is found from the graph plus one ONNX Runtime run at the model's input size with every
node output exposed (``writer.probe``): real shapes, whatever the exporter wrote.

- data tensors: everything that depends on the image, except shape arithmetic (``Shape`` and what
  is computed from it and from constants: the dynamic-batch ``x.view(x.size(0), -1)`` chain).
- cut points: data tensors through which all of the image's information flows (after the node
  that makes one, it is the only data tensor still waiting for a consumer). A block's or stage's
  output is one; a tensor inside a residual block, or one branch of a multi-branch block, is not.
- scale ends: at each spatial resolution, the last cut point that is a 4-D [1, C, H, W] map there
  (docs/design.md: the output of the last layer at that resolution). At every resolution but the last,
  where that cut point is only the 1x1 channel expansion of the next, downsampling block (an
  inverted residual: MobileNet, EfficientNet, MNASNet, ...), the cut point before that expansion
  is taken instead, the block output. A scale end that is not provably non-negative (linear
  bottlenecks, SiLU, hard-swish, GELU, LayerNorm) is clamped at 0 in the SMOE head.
- feature map: the last scale end (or ``--target-node``).
- head: the nodes between the feature map and the logits (the model's [N, K] output, or the
  input of its final Softmax). Its kind decides how Recipro-CAM and the gradient CAMs run:
    gap_linear   global average pooling, reshapes, one Gemm or MatMul(+Add): pooled vectors go to
                 the linear layer directly; the gradient of a logit is a row of the weights;
    gap_head     global average pooling then anything else (LayerNorm, an MLP, a 1x1 conv): the
                 rest of the head is cloned and run on the h*w pooled vectors of the masked copies;
    masked_batch anything else: the whole head is cloned and run on the h*w masked copies.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from edge_saliency.errors import UserError
from edge_saliency.graph import writer as gwr

# Ops a head may contain: each acts on every sample of the batch on its own.
HEAD_OPS = {
    "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax", "ReduceSum", "ReduceL2", "AveragePool",
    "MaxPool", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Gemm", "MatMul", "Add", "Sub", "Mul",
    "Div", "Relu", "Clip", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu", "Selu",
    "Gelu", "Erf", "Sqrt", "Pow", "Exp", "Log", "Neg", "Abs", "Softplus", "Mish", "Dropout", "Identity",
    "BatchNormalization", "LayerNormalization", "InstanceNormalization", "Conv", "Softmax", "LogSoftmax",
    "Shape", "Gather", "Concat", "Cast", "Slice", "Constant", "Max", "Min", "Where", "Equal", "Expand",
    "ConstantOfShape", "Range", "Einsum", "ReduceProd", "Reciprocal",
}
PASS_THROUGH = {"Flatten", "Reshape", "Squeeze", "Dropout", "Identity"}
# Ops that keep a tensor non-negative when their data inputs are (for the SMOE clamp decision).
KEEPS_NONNEGATIVE = {
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Concat", "Add", "Mul", "Resize", "Upsample",
    "Identity", "Dropout", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Slice", "Split", "Max",
    "Min", "ReduceMean", "ReduceMax", "ReduceSum", "Gather", "Sqrt", "Pad", "Div", "Tile", "Expand",
}
MAKES_NONNEGATIVE = {"Relu", "Sigmoid", "HardSigmoid", "Softplus", "Abs", "Exp", "Softmax"}
# Between a block output and the next block's 1x1 expansion: elementwise ops only.
ELEMENTWISE = {
    "Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Mul", "Add", "Sub", "Div", "BatchNormalization",
    "LeakyRelu", "PRelu", "Tanh", "Erf", "Gelu", "Elu", "Selu", "Softplus", "Mish", "Identity", "Dropout", "Neg",
    "Max", "Min",
}
# Cut points that are not a layer's output: padding, layout and shape changes of the one before.
NOT_FEATURES = {"Pad", "Transpose", "Reshape", "Identity", "Dropout", "Cast"}
TARGET_FLAG = "--target-node"


@dataclass
class ImageInput:
    name: str
    layout: str  # "nchw" | "nhwc" (of the model's own float input)
    size: tuple[int, int]  # (h, w)
    batch: int | str  # the model's batch dimension: a number, or a symbolic name


@dataclass
class ScaleEnd:
    tensor: str
    node: str  # the producing node's name (the tensor name where the node has none)
    order: int  # index of the producing node
    channels: int
    size: tuple[int, int]
    nonnegative: bool = True  # provably >= 0 (else the SMOE head clamps it)


@dataclass
class Head:
    kind: str  # gap_linear | gap_head | masked_batch | none
    feature: ScaleEnd
    logits: str  # the raw scores tensor [N, K]
    nodes: list[onnx.NodeProto] = field(default_factory=list)  # what is cloned (gap_head, masked_batch)
    all_nodes: list[onnx.NodeProto] = field(default_factory=list)  # feature map -> logits, the pooling too
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
    scale_ends: list[ScaleEnd]
    head: Head
    num_classes: int
    outputs: list[str]  # the model's own outputs
    values: dict[str, np.ndarray]
    static: set[str]
    notes: list[str] = field(default_factory=list)

    def constant(self, graph: onnx.GraphProto, name: str) -> np.ndarray | None:
        return _const_value(graph, self.values, name)


def _dims(vi: onnx.ValueInfoProto) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in vi.type.tensor_type.shape.dim]


def find_input(model: onnx.ModelProto, layout: str | None, input_size: tuple[int, int] | None) -> ImageInput:
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise UserError(f"the model has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                        "edge-saliency wraps a classifier with exactly one image input")
    vi = inputs[0]
    elem = vi.type.tensor_type.elem_type
    if elem != TensorProto.FLOAT:
        raise UserError(f"input {vi.name!r} is {TensorProto.DataType.Name(elem)}; edge-saliency wraps models "
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


def channels_last_tensors(graph: onnx.GraphProto, image: ImageInput) -> set[str]:
    """Tensors in NHWC layout: after a Transpose [0, 2, 3, 1] (ConvNeXt's LayerNorm and MLP run so)
    and what is computed from them, until a Transpose [0, 3, 1, 2] or a Conv (NCHW by definition)."""
    nhwc = {image.name} if image.layout == "nhwc" else set()
    for node in graph.node:
        data_nhwc = any(i in nhwc for i in node.input if i)
        if node.op_type == "Transpose":
            perm = list(_attr(node, "perm", []))
            out_nhwc = (perm == [0, 2, 3, 1] and not data_nhwc) or (data_nhwc and perm != [0, 3, 1, 2])
        else:
            out_nhwc = data_nhwc and node.op_type not in ("Conv", "ConvTranspose", "MaxPool", "AveragePool",
                                                          "GlobalAveragePool", "GlobalMaxPool")
        if out_nhwc:
            nhwc.update(o for o in node.output if o)
    return nhwc


def _is_map(v, image: ImageInput) -> bool:
    """A float [1, C, H, W] map whose H x W is a plausible downsampling of the input's."""
    if not (isinstance(v, np.ndarray) and v.ndim == 4 and v.shape[0] == 1 and v.dtype == np.float32):
        return False
    h, w = int(v.shape[2]), int(v.shape[3])
    if h * w <= 1:
        return False
    sh, sw = image.size[0] / h, image.size[1] / w
    return max(sh, sw) / min(sh, sw) < 1.25


def shape_tensors(graph: onnx.GraphProto, static: set[str]) -> set[str]:
    """Tensors computed only from ``Shape`` outputs and constants: shape arithmetic, not data."""
    meta = set(static)
    for node in graph.node:
        if node.op_type == "Shape" or (node.input and all(i in meta for i in node.input)):
            meta.update(o for o in node.output if o)
    return meta - static


def cut_points(graph: onnx.GraphProto, meta: set[str]) -> list[tuple[int, str]]:
    """(node index, tensor) for every data tensor that is, right after the node making it, the only
    data tensor still waiting for a consumer."""
    remaining: dict[str, int] = {}
    for node in graph.node:
        for i in node.input:
            if i and i not in meta:
                remaining[i] = remaining.get(i, 0) + 1
    for o in graph.output:
        remaining[o.name] = remaining.get(o.name, 0) + 1  # graph outputs stay live to the end
    live = {i.name for i in graph.input if remaining.get(i.name)}
    found = []
    for idx, node in enumerate(graph.node):
        for i in node.input:
            if i in remaining and i not in meta:
                remaining[i] -= 1
                if remaining[i] == 0:
                    live.discard(i)
        made = [o for o in node.output if o and o not in meta and remaining.get(o)]
        live.update(made)
        if len(made) == 1 and live == {made[0]}:
            found.append((idx, made[0]))
    return found


def nonnegative_tensors(graph: onnx.GraphProto, static: set[str], values: dict) -> set[str]:
    """Tensors that are >= 0 for every input, by construction (ReLU and what keeps it so)."""
    nonneg: set[str] = set()

    def const_nonneg(name: str) -> bool:
        v = _const_value(graph, values, name)
        return v is not None and bool(np.all(np.asarray(v) >= 0))

    for node in graph.node:
        data = [i for i in node.input if i and i not in static]
        ok = False
        if node.op_type in MAKES_NONNEGATIVE:
            ok = True
        elif node.op_type == "Clip":
            lo = node.input[1] if len(node.input) > 1 and node.input[1] else None
            lo_attr = _attr(node, "min", None)
            ok = (lo is not None and const_nonneg(lo)) or (lo_attr is not None and lo_attr >= 0)
        elif node.op_type in KEEPS_NONNEGATIVE and data:
            consts = [i for i in node.input if i and i in static]
            if node.op_type in ("Add", "Mul", "Div", "Max", "Min", "Concat"):
                ok = all(d in nonneg for d in data) and all(const_nonneg(c) for c in consts)
                if node.op_type == "Max":  # max(x, c >= 0) >= 0 whatever x is
                    ok = ok or any(const_nonneg(c) for c in consts) or any(d in nonneg for d in data)
            elif node.op_type == "Pad":
                ok = data[0] in nonneg and (len(node.input) < 3 or not node.input[2] or const_nonneg(node.input[2]))
            else:
                ok = data[0] in nonneg
        if ok:
            nonneg.update(o for o in node.output if o)
    return nonneg


def scope_path(node_name: str) -> str:
    """The torch module a torch.onnx node came from, as named by model.named_modules():
    '/layer1/layer1.0/conv1/Conv' -> 'layer1.0.conv1', '/_blocks.1/_act0/Clip' -> '_blocks.1._act0'
    (a scope segment repeats its parent's name where the parent is a called container)."""
    segs = node_name.split("/")[1:-1]
    path: list[str] = []
    for seg in segs:
        if path and seg.startswith(path[-1] + "."):
            path[-1] = seg
        else:
            path.append(seg)
    return ".".join(path)


def _module_output(graph: onnx.GraphProto, module: str) -> tuple[str, int, onnx.NodeProto] | None:
    """The output of torch module ``module`` ('layer1', 'blocks.3.0'): torch.onnx names nodes by
    module scope; the module's output is the last tensor made inside it and read outside it (or a
    graph output)."""
    inside = [i for i, n in enumerate(graph.node)
              if n.name.startswith("/") and (scope_path(n.name) + ".").startswith(module + ".")]
    if not inside:
        return None
    members = set(inside)
    outputs = {o.name for o in graph.output}
    readers = gwr.consumers(graph)
    index = {id(n): i for i, n in enumerate(graph.node)}
    for i in reversed(inside):
        node = graph.node[i]
        for o in node.output:
            if o and (o in outputs or any(index[id(r)] not in members for r in readers.get(o, []))):
                return o, i, node
    return None


def _resolve(graph: onnx.GraphProto, ref: str, flag: str) -> tuple[str, int, onnx.NodeProto]:
    """A tensor name, a node name or a torch module name -> (tensor, node index, node)."""
    prod = gwr.producers(graph)
    if ref in prod:
        idx, node = prod[ref]
        return ref, idx, node
    for i, node in enumerate(graph.node):
        if node.name == ref:
            return node.output[0], i, node
    found = _module_output(graph, ref)
    if found:
        return found
    raise UserError(f"no node, tensor or module named {ref!r} in the model ({flag})")


def _scale_end(values, image: ImageInput, nonneg: set[str], tensor: str, idx: int, node: onnx.NodeProto,
               flag: str) -> ScaleEnd:
    v = values.get(tensor)
    if not _is_map(v, image):
        shape = list(v.shape) if isinstance(v, np.ndarray) else "no tensor"
        raise UserError(f"node {_node_label(node, tensor)!r} outputs {shape}, not a 4-D float feature map "
                        f"[N, C, H, W] ({flag})")
    return ScaleEnd(tensor, _node_label(node, tensor), idx, int(v.shape[1]), (int(v.shape[2]), int(v.shape[3])),
                    nonnegative=tensor in nonneg)


def _segment(graph: onnx.GraphProto, values: dict, static: set[str], lo: int, hi: int) -> int | None:
    """Nodes lo+1..hi: the number of 1x1 ungrouped Convs among them when all the others are
    elementwise (or constant) ops, else None."""
    convs = 0
    for node in graph.node[lo + 1:hi + 1]:
        if node.op_type == "Conv":
            w = _const_value(graph, values, node.input[1])
            if w is None or w.ndim != 4 or w.shape[2:] != (1, 1) or int(_attr(node, "group", 1)) != 1:
                return None
            convs += 1
        elif node.op_type not in ELEMENTWISE and not all(o in static for o in node.output):
            return None
    return convs


def _block_output(graph, values, static, points: list[tuple[int, str]]) -> int:
    """Index into ``points`` (cut points at one resolution, in order) of the block output: the last
    one, or the one before it where the last is only a 1x1 widening conv (and its activation)."""
    j = len(points) - 1
    width = lambda k: int(values[points[k][1]].shape[1])  # noqa: E731
    for back in range(j - 1, -1, -1):
        convs = _segment(graph, values, static, points[back][0], points[j][0])
        if convs is None or convs > 1:
            break
        if convs == 1 and width(back) < width(j):
            return back
    return j


def find_scale_ends(graph, values, static, meta, image: ImageInput, nonneg: set[str],
                    scale_nodes: list[str] | None) -> list[ScaleEnd]:
    if scale_nodes:
        return [_scale_end(values, image, nonneg, *_resolve(graph, ref, "--scale-nodes"), "--scale-nodes")
                for ref in scale_nodes]
    nhwc = channels_last_tensors(graph, image)
    maps = [(i, t) for i, t in cut_points(graph, meta)
            if t not in nhwc and graph.node[i].op_type not in NOT_FEATURES and _is_map(values.get(t), image)]
    if not maps:
        raise UserError("not a CNN: no layer outputs a 4-D feature map [N, C, H, W] that the whole image "
                        "flows through; pass --scale-nodes with the tensors to read")
    sizes: list[tuple[int, int]] = []
    by_size: dict[tuple[int, int], list[tuple[int, str]]] = {}
    for i, t in maps:
        hw = tuple(int(d) for d in values[t].shape[2:])
        if hw not in by_size:
            sizes.append(hw)
            by_size[hw] = []
        by_size[hw].append((i, t))
    ends = []
    for k, hw in enumerate(sizes):
        points = by_size[hw]
        j = _block_output(graph, values, static, points) if k < len(sizes) - 1 else len(points) - 1
        idx, t = points[j]
        ends.append(_scale_end(values, image, nonneg, t, idx, graph.node[idx], "discovery"))
    return ends


def find_logits(graph: onnx.GraphProto, values: dict) -> tuple[str, int]:
    prod = gwr.producers(graph)
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


def _is_global_pool(graph, values, node: onnx.NodeProto, feature: ScaleEnd) -> bool:
    if node.op_type == "GlobalAveragePool":
        return True
    if node.op_type == "ReduceMean":
        axes = _reduce_axes(graph, values, node)
        return axes is not None and sorted(a % 4 for a in axes) == [2, 3]
    if node.op_type == "AveragePool":
        kernel = list(_attr(node, "kernel_shape", []))
        pads = list(_attr(node, "pads", [0, 0, 0, 0]))
        return kernel == list(feature.size) and not any(pads)
    return False


def find_head(graph: onnx.GraphProto, values: dict, static: set[str], meta: set[str], feature: ScaleEnd,
              logits: str) -> Head:
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
    prod = gwr.producers(graph)
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
            if i and i not in reach and i not in static and i not in meta:
                raise UserError(f"head node {node.name or node.output[0]!r} reads {i!r}, which comes from before feature "
                                f"map {label!r} (a skip around it); pass {TARGET_FLAG} with a later feature map")
    data_nodes = [n for n in nodes if not all(o in meta for o in n.output if o)]
    head = Head("masked_batch", feature, logits, nodes=nodes, all_nodes=nodes, clone_input=feature.tensor)
    readers = [n for n in data_nodes if feature.tensor in n.input]
    if len(readers) != 1 or not _is_global_pool(graph, values, readers[0], feature):
        return head
    gap = readers[0]
    keep = gap.op_type in ("GlobalAveragePool", "AveragePool") or bool(_attr(gap, "keepdims", 1))
    head = Head("gap_head", feature, logits, nodes=[n for n in nodes if n is not gap], all_nodes=nodes,
                clone_input=gap.output[0], pooled_keepdims=keep)
    linear = _linear_chain(values, static, data_nodes, gap.output[0], logits, feature.channels)
    if linear is not None:
        head.kind = "gap_linear"
        head.weight, head.bias, head.weight_is_kc, head.alpha, head.beta = linear
    return head


def _linear_chain(values, static, nodes, pooled: str, logits: str, channels: int):
    """GAP -> reshapes -> Gemm | MatMul(+Add) == logits: (weight, bias, is_kc, alpha, beta) or None."""
    cur = pooled
    while True:
        data = [n for n in nodes if cur in n.input]
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
    """Everything the builder needs; the head is only split when a method needs it."""
    graph = model.graph
    image = find_input(model, layout, input_size)
    h, w = image.size
    shape = (1, 3, h, w) if image.layout == "nchw" else (1, h, w, 3)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    names = [o for n in graph.node for o in n.output if o]
    values = gwr.probe(model, {image.name: x}, names + [o.name for o in graph.output if o.name not in names])
    static = gwr.static_tensors(graph)
    meta = static | shape_tensors(graph, static)  # not data: constants and shape arithmetic
    nonneg = nonnegative_tensors(graph, static, values)
    scale_ends = find_scale_ends(graph, values, static, meta, image, nonneg, scale_nodes)
    if target_node:
        feature = _scale_end(values, image, nonneg, *_resolve(graph, target_node, TARGET_FLAG), TARGET_FLAG)
    elif scale_nodes and need_head:  # the overrides are for SMOE; the head starts where it starts
        feature = find_scale_ends(graph, values, static, meta, image, nonneg, None)[-1]
    else:
        feature = scale_ends[-1]
    logits, k = find_logits(graph, values)
    head = find_head(graph, values, static, meta, feature, logits) if need_head else Head("none", feature, logits)
    notes = [f"scale end {e.node} can be negative; SMOE clamps it at 0" for e in scale_ends if not e.nonnegative]
    return Analysis(image, scale_ends, head, k, [o.name for o in graph.output], values, static, notes)
