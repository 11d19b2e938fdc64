"""Discovery on ONNX graphs (edge_saliency.graph.discovery): scale ends at block outputs, the
head split, overrides by torch module / node / tensor name, and the errors a user can cause."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import archs
from edge_saliency.errors import UserError
from edge_saliency.graph import discovery, passes


def _analyse(path, **kw):
    model = onnx.load(str(path))
    passes.optimise(model)
    return model, discovery.analyse(model, **kw)


def test_efficientnet_lite0_scale_ends_are_block_outputs(lite0_plain):
    """docs/design.md: the first block's output at 112, the last block's output at 56, 28 and 14 (linear
    bottlenecks, clamped), the head conv at 7; not the wide expansion activations of the next
    block. The head is found through the dynamic-batch x.view(x.size(0), -1)."""
    _, an = _analyse(lite0_plain)
    assert [e.node for e in an.scale_ends] == ["/_blocks.0/_project_conv/Conv", "/_blocks.2/Add", "/_blocks.4/Add",
                                               "/_blocks.10/Add", "/_act_head/Clip"]
    assert [e.channels for e in an.scale_ends] == [16, 24, 40, 112, 1280]
    assert [e.size for e in an.scale_ends] == [(112, 112), (56, 56), (28, 28), (14, 14), (7, 7)]
    assert [e.nonnegative for e in an.scale_ends] == [False, False, False, False, True]
    assert an.head.kind == "gap_linear" and an.head.feature.node == "/_act_head/Clip"
    assert an.input.batch == "batch" and an.num_classes == 1000


def test_resnet_scale_ends_are_the_stem_and_the_stages(tmp_path):
    """For a ResNet the rule gives the paper's choice: relu, layer1 .. layer4 (by module name)."""
    path = archs.plain_export(archs.randomise_bn(archs.TinyResNet()), (64, 64), tmp_path / "r.onnx")
    model, an = _analyse(path)
    by_module = [discovery._resolve(model.graph, m, "test")[0] for m in ("relu", "layer1", "layer2", "layer3", "layer4")]
    assert [e.tensor for e in an.scale_ends] == by_module
    assert all(e.nonnegative for e in an.scale_ends)
    assert an.head.kind == "gap_linear"


def test_inverted_residuals_skip_the_next_blocks_expansion(tmp_path):
    path = archs.plain_export(archs.randomise_bn(archs.TinyMobileNetV2()), (64, 64), tmp_path / "m.onnx")
    _, an = _analyse(path)
    # stem 8@32, block outputs 8@32 -> 12@16 -> 16@8 -> 24@4 (linear: clamped), head conv 64@4 last
    assert [(e.channels, e.size[0]) for e in an.scale_ends] == [(8, 32), (12, 16), (16, 8), (64, 4)]
    assert [e.nonnegative for e in an.scale_ends] == [False, False, False, True]
    assert an.head.kind == "gap_linear"


def test_mlp_head_is_cloned(tmp_path):
    path = archs.plain_export(archs.TinyVGG(), (64, 64), tmp_path / "v.onnx")
    _, an = _analyse(path)
    assert an.head.kind == "masked_batch" and [e.size[0] for e in an.scale_ends] == [64, 32, 16, 8, 4, 2]  # AdaptiveAvgPool2d(2) last


def test_overrides_by_module_node_and_tensor_name(tmp_path):
    path = archs.plain_export(archs.randomise_bn(archs.TinyResNet()), (64, 64), tmp_path / "r.onnx")
    model, an = _analyse(path)
    layer2 = an.scale_ends[2]
    _, over = _analyse(path, scale_nodes=["layer2", layer2.node, layer2.tensor], target_node="layer3")
    assert [e.tensor for e in over.scale_ends] == [layer2.tensor] * 3
    assert over.head.feature.tensor == an.scale_ends[3].tensor and over.head.kind == "masked_batch"


def test_linear_override_is_clamped(tmp_path):
    path = archs.plain_export(archs.randomise_bn(archs.TinyResNet()), (64, 64), tmp_path / "r.onnx")
    model, _ = _analyse(path)
    conv = next(n for n in model.graph.node if n.op_type == "Conv" and n.name.startswith("/layer2/"))
    _, an = _analyse(path, scale_nodes=[conv.name])
    assert an.scale_ends[0].nonnegative is False


def _graph(nodes, inits, shape=("n", 3, 16, 16), k=5, opset=17):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", k])],
                          [numpy_helper.from_array(v, n) for n, v in inits.items()])
    return archs.helper_model(g, opset)


def _w(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 0.3


def test_errors_name_the_cause_and_the_flag(tmp_path):
    conv = helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv")
    relu = helper.make_node("Relu", ["c"], ["f"], name="relu")
    gap = helper.make_node("GlobalAveragePool", ["f"], ["p"], name="gap")
    flat = helper.make_node("Flatten", ["p"], ["fl"], name="flatten")
    fc = helper.make_node("Gemm", ["fl", "g"], ["s"], transB=1, name="fc")
    inits = {"w": _w(0, 4, 3, 3, 3), "g": _w(1, 5, 4)}
    ok = _graph([conv, relu, gap, flat, fc, helper.make_node("Identity", ["s"], ["y"])], inits)
    with pytest.raises(UserError, match="no node, tensor or module named 'nope' in the model \\(--scale-nodes\\)"):
        discovery.analyse(ok, scale_nodes=["relu", "nope"])
    with pytest.raises(UserError, match="node 'flatten' outputs \\[1, 4\\], not a 4-D float feature map.*--target-node"):
        discovery.analyse(ok, target_node="flatten")
    hard = _graph([conv, relu, gap, flat, fc, helper.make_node("Hardmax", ["s"], ["y"], name="hard")], inits)
    with pytest.raises(UserError, match="head node 'hard' \\(Hardmax\\).*--target-node"):
        discovery.analyse(hard)
    dyn = _graph([conv, relu, gap, flat, fc, helper.make_node("Identity", ["s"], ["y"])], inits, shape=("n", 3, "h", "w"))
    with pytest.raises(UserError, match="dynamic spatial size.*--input-size HxW"):
        discovery.analyse(dyn)
    assert discovery.analyse(dyn, input_size=(20, 24)).scale_ends[0].size == (20, 24)
    with pytest.raises(UserError, match="differs from the model's fixed input size 16x16"):
        discovery.analyse(ok, input_size=(32, 32))


def test_not_a_cnn(tmp_path):
    mlp = _graph([helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "g"], ["y"], transB=1)],
                 {"g": _w(2, 5, 3 * 16 * 16)})
    with pytest.raises(UserError, match="not a CNN: no layer outputs a 4-D feature map"):
        discovery.analyse(mlp)
    feats = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "f",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 16, 16])],
                              [numpy_helper.from_array(_w(3, 4, 3, 3, 3), "w")])
    with pytest.raises(UserError, match="not a CNN classifier: no output has class scores"):
        discovery.analyse(archs.helper_model(feats, 17))
    two = helper.make_graph([helper.make_node("Add", ["x", "z"], ["y"])], "two",
                            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4]),
                             helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 3, 4, 4])],
                            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])])
    with pytest.raises(UserError, match="has 2 inputs"):
        discovery.analyse(archs.helper_model(two, 17))


def test_a_skip_around_the_feature_map(tmp_path):
    """A head that also reads an earlier map: the last tensor the whole image flows through is that
    earlier one, so discovery takes it; forcing the later one names the skip."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["a"], name="early"),
             helper.make_node("Conv", ["a", "w2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["f"], name="late"),
             helper.make_node("GlobalAveragePool", ["f"], ["pf"]),
             helper.make_node("GlobalAveragePool", ["a"], ["pa"]),
             helper.make_node("Add", ["pf", "pa"], ["s"], name="mix"),
             helper.make_node("Flatten", ["s"], ["fl"]),
             helper.make_node("Gemm", ["fl", "g"], ["y"], transB=1)]
    model = _graph(nodes, {"w": _w(4, 4, 3, 3, 3), "w2": _w(5, 4, 4, 3, 3), "g": _w(6, 5, 4)})
    an = discovery.analyse(model)
    assert an.head.feature.node == "early" and an.head.kind == "masked_batch"
    with pytest.raises(UserError, match="head node 'mix' reads 'pa'.*a skip around it.*--target-node"):
        discovery.analyse(model, target_node="late")


def test_cut_points_ignore_shape_arithmetic():
    """x.view(x.size(0), -1): Shape -> Gather -> Unsqueeze -> Concat -> Reshape reads the batch
    off the pooled tensor; it is not a second data path."""
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, 2, 1)
            self.fc = torch.nn.Linear(4, 5)

        def forward(self, x):
            x = torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 1)
            return self.fc(x.view(x.size(0), -1))

    from export.build import export_plain

    model = export_plain(Net().eval(), (16, 16))
    assert any(n.op_type == "Shape" for n in model.graph.node)
    an = discovery.analyse(model)
    assert an.head.kind == "gap_linear" and an.head.feature.node == "/Relu"


def test_scope_paths_name_torch_modules():
    assert discovery.scope_path("/layer1/layer1.0/conv1/Conv") == "layer1.0.conv1"
    assert discovery.scope_path("/_blocks.1/_act0/Clip") == "_blocks.1._act0"
    assert discovery.scope_path("/stages/stages.3/blocks/blocks.1/Add") == "stages.3.blocks.1"
    assert discovery.scope_path("/relu/Relu") == "relu" and discovery.scope_path("/Flatten") == ""


def test_lite0_module_names_resolve(lite0_plain):
    """A ModuleList's children (Lite0's _blocks.N) are named as named_modules() names them."""
    model, an = _analyse(lite0_plain, scale_nodes=["_blocks.1._act0", "_blocks.2", "_act_head"])
    assert [e.node for e in an.scale_ends] == ["/_blocks.1/_act0/Clip", "/_blocks.2/Add", "/_act_head/Clip"]
