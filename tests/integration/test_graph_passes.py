"""Graph passes on the exported ONNX: Pads folded into Convs, same outputs, nothing else changed."""
from __future__ import annotations

import io
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_saliency.graph.passes import fold_pads_into_conv, optimise


def _run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def _pad_conv_model(pads, conv_pads=None, mode="constant", value=None, extra_use=False,
                    stride=2, group=1) -> onnx.ModelProto:
    """x [1,4,9,8] -> Pad(pads) -> Conv(3x3, stride, conv_pads) -> y (and optionally Pad -> Relu)."""
    rng = np.random.default_rng(0)
    cin = 4
    w = rng.standard_normal((6 if group == 1 else cin, cin // group, 3, 3)).astype(np.float32)
    b = rng.standard_normal((w.shape[0],)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    nodes = [helper.make_node("Constant", [], ["pads"], value=numpy_helper.from_array(np.array(pads, np.int64)))]
    pad_inputs = ["x", "pads"]
    if value is not None:
        inits.append(numpy_helper.from_array(np.array(value, np.float32), "value"))
        pad_inputs.append("value")
    nodes.append(helper.make_node("Pad", pad_inputs, ["xp"], mode=mode))
    conv_kw = {"strides": [stride, stride], "group": group}
    if conv_pads is not None:
        conv_kw["pads"] = conv_pads
    nodes.append(helper.make_node("Conv", ["xp", "w", "b"], ["y"], **conv_kw))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "h", "w"])]
    if extra_use:
        nodes.append(helper.make_node("Relu", ["xp"], ["r"]))
        outputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, ["n", "c", "h", "w"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, 9, 8])],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


X = np.random.default_rng(1).standard_normal((1, 4, 9, 8)).astype(np.float32)


@pytest.mark.parametrize("pads, conv_pads, group", [
    ([0, 0, 0, 0, 0, 0, 1, 1], None, 1),          # TF 'SAME', stride 2: pad after only
    ([0, 0, 1, 0, 0, 0, 2, 1], [1, 0, 0, 1], 1),  # added to the Conv's own pads
    ([0, 0, 0, 1, 0, 0, 1, 2], None, 4),          # depthwise
])
def test_pad_folded_into_conv_same_output(pads, conv_pads, group):
    model = _pad_conv_model(pads, conv_pads, group=group)
    want = _run(model, {"x": X})[0]
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    assert fold_pads_into_conv(folded) == 1
    onnx.checker.check_model(folded, full_check=True)
    assert "Pad" not in _ops(folded) and "Constant" not in _ops(folded)  # its pads chain is gone too
    conv = folded.graph.node[0]
    assert conv.op_type == "Conv" and conv.input[0] == "x"
    old = conv_pads or [0, 0, 0, 0]
    expect = [old[0] + pads[2], old[1] + pads[3], old[2] + pads[6], old[3] + pads[7]]
    assert list(helper.get_attribute_value(next(a for a in conv.attribute if a.name == "pads"))) == expect
    got = _run(folded, {"x": X})[0]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kwargs", [
    {"pads": [0, 0, 0, 0, 0, 0, 1, 1], "value": 1.0},          # non-zero padding value
    {"pads": [0, 0, 0, 0, 0, 0, 1, 1], "mode": "reflect"},     # not zero padding
    {"pads": [0, 1, 0, 0, 0, 0, 1, 1]},                         # pads channels
    {"pads": [0, 0, 0, 0, 0, 0, -1, 1]},                        # crops
    {"pads": [0, 0, 0, 0, 0, 0, 1, 1], "extra_use": True},      # padded tensor used elsewhere
])
def test_pads_that_must_stay(kwargs):
    model = _pad_conv_model(**kwargs)
    before = model.SerializeToString()
    assert fold_pads_into_conv(model) == 0
    assert model.SerializeToString() == before


def test_zero_padding_value_input_is_folded():
    model = _pad_conv_model([0, 0, 0, 0, 0, 0, 1, 1], value=0.0)
    want = _run(model, {"x": X})[0]
    assert fold_pads_into_conv(model) == 1
    assert "Pad" not in _ops(model)
    np.testing.assert_allclose(_run(model, {"x": X})[0], want, rtol=0, atol=1e-6)


def test_torch_exported_same_padding_chain():
    """torch exports F.pad(x, [0, 1, 0, 1]) with its pads computed by a chain of shape ops."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Conv2d(3, 8, 3, stride=2, bias=False)
            self.b = torch.nn.Conv2d(8, 8, 5, stride=2, groups=8, bias=False)

        def forward(self, x):
            x = torch.relu(self.a(F.pad(x, [0, 1, 0, 1])))
            return self.b(F.pad(x, [1, 2, 1, 2]))

    torch.manual_seed(0)
    net = Net().eval()
    x = torch.randn(2, 3, 32, 32)
    buf = io.BytesIO()
    torch.onnx.export(net, (x,), buf, dynamo=False, opset_version=17, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    model = onnx.load_from_string(buf.getvalue())
    assert _ops(model).count("Pad") == 2
    want = _run(model, {"x": x.numpy()})[0]
    assert optimise(model) == {"pads_folded_into_conv": 2}
    onnx.checker.check_model(model, full_check=True)
    assert "Pad" not in _ops(model)
    assert set(_ops(model)) == {"Conv", "Relu"}
    got = _run(model, {"x": x.numpy()})[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    with torch.no_grad():
        np.testing.assert_allclose(got, net(x).numpy(), rtol=0, atol=1e-5)


def test_default_export_has_no_pads(lite0_onnx):
    """EfficientNet-Lite0's five asymmetric 'SAME' pads end up inside their Convs."""
    model = onnx.load(str(lite0_onnx))
    assert "Pad" not in _ops(model)
    meta = {p.key: p.value for p in model.metadata_props}
    export = json.loads(meta["edge_saliency.export"])
    assert export["graph_passes"] == {"pads_folded_into_conv": 5}
