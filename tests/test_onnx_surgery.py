"""ONNX surgery (export.onnx_surgery): plain ONNX exports of torch CNNs, and models written with
onnx.helper, get the saliency outputs; every map must equal the torch export's of the same network
(both run in ONNX Runtime) within 1e-4, and the original outputs stay bit-for-bit the same."""
from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from edge_saliency import contract
from edge_saliency.cli import main as cli_main
from edge_saliency.errors import UserError
from export.onnx_surgery import SurgeryOptions, check_images, preprocess, surgery

TOL = 1e-4
MAPS = (contract.SMOE, contract.SMOE_SCALES, contract.RECIPRO)
LITE0_SCALES = ("_blocks.0._act1", "_blocks.2._act1", "_blocks.4._act1", "_blocks.10._act1", "_act_head")


def _session(path):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _run(path, batch):
    sess = _session(path)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {contract.INPUT: batch})))


def _plain_export(model: nn.Module, size, path: Path, nhwc: bool = False) -> Path:
    x = torch.zeros(1, 3, *size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), x, str(path), dynamo=False, opset_version=17, input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    return path


def _torch_export(model: nn.Module, size, path: Path, scale_layers=None, mean=(127.0,) * 3, std=(128.0,) * 3,
                  **config) -> Path:
    from export.discovery import discover
    from export.onnx_export import export_onnx
    from export.saliency_module import SaliencyConfig

    structure = discover(model.eval(), size, scale_layers)
    cfg = SaliencyConfig(map_size=(size[0] // 4, size[1] // 4), **config)
    export_onnx(model, structure, path, arch="test", labels=[f"c{i}" for i in range(structure.num_classes)],
                input_size=size, mean=mean, std=std, config=cfg, log=lambda m: None)
    return path


def _assert_maps_equal(ours: dict, theirs: dict, names=MAPS):
    assert np.array_equal(ours[contract.TARGET], theirs[contract.TARGET])
    np.testing.assert_allclose(ours[contract.LOGITS], theirs[contract.LOGITS], atol=TOL, rtol=0)
    for name in names:
        assert ours[name].shape == theirs[name].shape, name
        diff = float(np.abs(ours[name] - theirs[name]).max())
        assert diff <= TOL, f"{name}: max |diff| {diff:.2e}"
        assert ours[name].std() > 1e-3, f"{name} is flat: the comparison would prove nothing"


# ---------------------------------------------------------------- test architectures (torch)
class TinyResNet(nn.Module):
    """conv-bn-relu stem, maxpool, basic residual blocks, avgpool + fc: gap_linear."""

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
            self.relu1 = nn.ReLU()
            self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
            self.down = None if stride == 1 and cin == cout else nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            self.relu2 = nn.ReLU()

        def forward(self, x):
            idt = x if self.down is None else self.down(x)
            return self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))) + idt)

    def __init__(self, k=10):
        super().__init__()
        self.conv1, self.bn1, self.relu = nn.Conv2d(3, 8, 7, 2, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self.Block(8, 8, 1)
        self.layer2 = self.Block(8, 16, 2)
        self.layer3 = self.Block(16, 32, 2)
        self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(32, k)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class TinyVGG(nn.Module):
    """conv-relu stacks and maxpools, flatten, Linear-ReLU-Dropout-Linear: masked_batch."""

    def __init__(self, k=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16 * 8 * 8, 24), nn.ReLU(), nn.Dropout(),
                                        nn.Linear(24, k))

    def forward(self, x):
        return self.classifier(self.features(x))


class TinyMobileNetV2(nn.Module):
    """inverted residuals with ReLU6 and linear bottlenecks, 1x1 head conv, pool, Dropout + Linear."""

    class Inverted(nn.Module):
        def __init__(self, cin, cout, stride, expand=4):
            super().__init__()
            mid = cin * expand
            self.conv = nn.Sequential(
                nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(),
                nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(),
                nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            return x + self.conv(x) if self.residual else self.conv(x)

    def __init__(self, k=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6()),
            self.Inverted(8, 8, 1), self.Inverted(8, 12, 2), self.Inverted(12, 12, 1), self.Inverted(12, 16, 2),
            nn.Sequential(nn.Conv2d(16, 48, 1, bias=False), nn.BatchNorm2d(48), nn.ReLU6()))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(48, k))

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


def _randomise_bn(model: nn.Module) -> nn.Module:
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model.eval()


ARCHS = {"resnet": (TinyResNet, "gap_linear"), "vgg": (TinyVGG, "masked_batch"),
         "mobilenetv2": (TinyMobileNetV2, "gap_linear")}


# ---------------------------------------------------------------- EfficientNet-Lite0
@pytest.fixture(scope="module")
def lite0_plain(tmp_path_factory):
    from export import zoo

    model = zoo.get("efficientnet_lite0").build(True, (224, 224))
    return _plain_export(model, (224, 224), tmp_path_factory.mktemp("surgery") / "lite0_plain.onnx")


def test_lite0_surgery_matches_torch_export(lite0_plain, lite0_onnx, tmp_path):
    """The zoo's scale ends, named as the plain export names their nodes; mean 127 / std 128."""
    nodes = ["/" + name.replace("._", "/_") + "/Clip" for name in LITE0_SCALES]
    out = tmp_path / "lite0_surgery.onnx"
    report = surgery(SurgeryOptions(onnx=str(lite0_plain), out=str(out), mean=(127.0,) * 3, std=(128.0,) * 3,
                                    scale_nodes=nodes), log=lambda m: None)
    assert report["head"] == "gap_linear"
    meta = contract.decode_metadata(onnx.load(str(out)).metadata_props and
                                    {p.key: p.value for p in onnx.load(str(out)).metadata_props})
    torch_meta = contract.decode_metadata(_session(lite0_onnx).get_modelmeta().custom_metadata_map)
    assert set(torch_meta) == set(meta)
    for key in ("size", "layout", "dtype", "color", "mean", "std", "range"):
        assert meta["input"][key] == torch_meta["input"][key], key
    assert [s["resolution"] for s in meta["scales"]] == [s["resolution"] for s in torch_meta["scales"]]
    assert [s["channels"] for s in meta["scales"]] == [s["channels"] for s in torch_meta["scales"]]
    assert meta["smoe"] == torch_meta["smoe"] and meta["methods"] == torch_meta["methods"]
    images = check_images((224, 224))
    ours, theirs = _run(out, images), _run(lite0_onnx, images)
    assert [int(t) for t in ours[contract.TARGET][:2]] == [285, 967]  # Egyptian cat, espresso
    _assert_maps_equal(ours, theirs)
    # the original output is kept, bit for bit, next to ours
    x = preprocess(images, (127.0,) * 3, (128.0,) * 3, "rgb", "nchw")
    plain = _session(lite0_plain).run(["output"], {"input": x})[0]
    assert np.array_equal(ours["output"], plain)


def test_lite0_default_discovery_is_last_activation_per_resolution(lite0_plain, tmp_path):
    """Without --scale-nodes: per resolution the last non-negative activation in node order. The
    Pad tensors before stride-2 convs (113x113, 57x57, ...) are not activations and are skipped."""
    report = surgery(SurgeryOptions(onnx=str(lite0_plain), out=str(tmp_path / "d.onnx"), methods=("smoe",),
                                    mean=(127.0,) * 3, std=(128.0,) * 3), log=lambda m: None)
    assert report["scale_ends"] == ["/_blocks.1/_act0/Clip", "/_blocks.3/_act0/Clip", "/_blocks.5/_act0/Clip",
                                    "/_blocks.11/_act0/Clip", "/_act_head/Clip"]
    meta = report["metadata"]
    assert [s["resolution"] for s in meta["scales"]] == [[112, 112], [56, 56], [28, 28], [14, 14], [7, 7]]


def _onnx_nodes_of(model: nn.Module, ends, plain: Path, size) -> list[str]:
    """The ONNX nodes whose outputs are torch's scale-end activations (matched by value)."""
    from export import surgery_graph as sg

    x = np.random.default_rng(0).standard_normal((1, 3, *size)).astype(np.float32)
    acts, calls, modules = {}, {}, dict(model.named_modules())

    def keep(name, call):
        def hook(module, inputs, output):
            calls[name] = calls.get(name, -1) + 1
            if calls[name] == call:
                acts[name] = output.detach().numpy().copy()
        return hook

    hooks = [modules[e.name].register_forward_hook(keep(e.name, e.call)) for e in ends]
    with torch.no_grad():
        model(torch.from_numpy(x))
    for h in hooks:
        h.remove()
    graph = onnx.load(str(plain)).graph
    names = [o for n in graph.node for o in n.output if o]
    values = sg.probe(onnx.load(str(plain)), {"input": x}, names)
    nodes = []
    for e in ends:
        match = [n.name for n in graph.node if n.output[0] in values and values[n.output[0]].shape == acts[e.name].shape
                 and np.allclose(values[n.output[0]], acts[e.name], atol=1e-5)]
        assert match, e.name
        nodes.append(match[0])
    return nodes


# ---------------------------------------------------------------- small torch architectures
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_small_arch_surgery_matches_torch_export(arch, tmp_path):
    """Surgery reads the tensors torch's discover() picks (passed as --scale-nodes); where both
    rules agree (ResNet, VGG: the last activation at each resolution is the stage output) the
    surgery's own discovery finds the same nodes."""
    from export.discovery import discover

    cls, kind = ARCHS[arch]
    torch.manual_seed(0)
    model = _randomise_bn(cls())
    size = (64, 64)
    plain = _plain_export(model, size, tmp_path / "plain.onnx")
    theirs_path = _torch_export(model, size, tmp_path / "torch.onnx")
    nodes = _onnx_nodes_of(model, discover(model, size).scale_ends, plain, size)
    out = tmp_path / "surgery.onnx"
    report = surgery(SurgeryOptions(onnx=str(plain), out=str(out), mean=(127.0,) * 3, std=(128.0,) * 3,
                                    scale_nodes=nodes), log=lambda m: None)
    assert report["head"] == kind
    images = check_images(size)
    _assert_maps_equal(_run(out, images), _run(theirs_path, images))
    if arch in ("resnet", "vgg"):
        default = surgery(SurgeryOptions(onnx=str(plain), out=str(tmp_path / "d.onnx"), methods=("smoe",),
                                         mean=(127.0,) * 3, std=(128.0,) * 3), log=lambda m: None)
        assert default["scale_ends"] == nodes


@pytest.mark.parametrize("arch,score,variant", [("resnet", "softmax", "onehot"), ("vgg", "softmax", "gaussian3x3")])
def test_recipro_options_match_torch_export(arch, score, variant, tmp_path):
    torch.manual_seed(2)
    model = _randomise_bn(ARCHS[arch][0]())
    size = (64, 64)
    plain = _plain_export(model, size, tmp_path / "plain.onnx")
    theirs = _torch_export(model, size, tmp_path / "torch.onnx", recipro_score=score, recipro_variant=variant)
    out = tmp_path / "surgery.onnx"
    surgery(SurgeryOptions(onnx=str(plain), out=str(out), mean=(127.0,) * 3, std=(128.0,) * 3,
                           recipro_score=score, recipro_variant=variant), log=lambda m: None)
    images = check_images(size)
    _assert_maps_equal(_run(out, images), _run(theirs, images), names=(contract.RECIPRO,))


def test_gap_linear_gaussian_masks_match_torch_module(tmp_path):
    """(torch's ONNX export of this combination fails, so compare with the torch module itself)"""
    from export.discovery import discover
    from export.saliency_module import SaliencyConfig, SaliencyExport

    torch.manual_seed(3)
    model = _randomise_bn(TinyResNet())
    size = (64, 64)
    plain = _plain_export(model, size, tmp_path / "plain.onnx")
    out = tmp_path / "surgery.onnx"
    report = surgery(SurgeryOptions(onnx=str(plain), out=str(out), mean=(127.0,) * 3, std=(128.0,) * 3,
                                    methods=("recipro",), recipro_variant="gaussian3x3"), log=lambda m: None)
    assert report["head"] == "gap_linear"
    wrapper = SaliencyExport(model, discover(model, size), (127.0,) * 3, (128.0,) * 3,
                             SaliencyConfig(methods=("recipro",), recipro_variant="gaussian3x3")).eval()
    images = check_images(size)
    with torch.no_grad():
        want = wrapper(torch.from_numpy(images))[2].numpy()
    got = _run(out, images)[contract.RECIPRO]
    assert got.std() > 1e-3
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


# ---------------------------------------------------------------- models written with onnx.helper
def _model(graph, opset: int) -> onnx.ModelProto:
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _weights(seed, *shapes):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(s) / np.sqrt(np.prod(s[1:]))).astype(np.float32) for s in shapes]


def _helper_nhwc_flatten_matmul(path: Path) -> tuple[Path, nn.Module]:
    """Input named 'image' (our name), float NHWC; Transpose, conv-relu, maxpool, conv s2-relu,
    Flatten + MatMul + Add head."""
    w1, b1, w2, b2, wm, bm = _weights(3, (8, 3, 3, 3), (8,), (16, 8, 3, 3), (16,), (16 * 8 * 8, 10), (10,))
    nodes = [
        helper.make_node("Transpose", ["image"], ["x"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Flatten", ["r2"], ["f"], axis=1, name="flatten"),
        helper.make_node("MatMul", ["f", "wm"], ["mm"], name="matmul"),
        helper.make_node("Add", ["mm", "bm"], ["scores"], name="bias"),
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in zip((w1, b1, w2, b2, wm, bm), ("w1", "b1", "w2", "b2", "wm", "bm"))]
    graph = helper.make_graph(nodes, "nhwc_flatten_matmul",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 32, 32, 3])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", 10])], inits)
    onnx.save(_model(graph, 17), str(path))
    torch_model = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, 2, 1),
                                nn.ReLU(), nn.Flatten(), nn.Linear(16 * 8 * 8, 10))
    _load(torch_model, [w1, b1, None, None, None, w2, b2, None, None, wm.T, bm])
    return path, torch_model


def _helper_batch1_reshape_gemm(path: Path) -> tuple[Path, nn.Module]:
    """Fixed batch 1, opset 13; conv-relu, conv s2-Clip(0,6), conv-relu, Reshape to the constant
    [1, -1], Gemm(transB) - Relu - Gemm, Softmax output."""
    w1, w2, w3, g1, gb1, g2, gb2 = _weights(4, (8, 3, 3, 3), (12, 8, 3, 3), (12, 12, 3, 3), (20, 12 * 8 * 8), (20,),
                                            (6, 20), (6,))
    six = numpy_helper.from_array(np.float32(6.0), "six")
    zero = numpy_helper.from_array(np.float32(0.0), "zero")
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv2"),
        helper.make_node("Clip", ["c2", "zero", "six"], ["r2"], name="relu6"),
        helper.make_node("Conv", ["r2", "w3"], ["c3"], pads=[1, 1, 1, 1], name="conv3"),
        helper.make_node("Relu", ["c3"], ["r3"], name="relu3"),
        helper.make_node("Constant", [], ["shape"], value=numpy_helper.from_array(np.array([1, -1], np.int64))),
        helper.make_node("Reshape", ["r3", "shape"], ["flat"], name="reshape"),
        helper.make_node("Gemm", ["flat", "g1", "gb1"], ["h1"], transB=1, name="fc1"),
        helper.make_node("Relu", ["h1"], ["h1r"], name="fc1_relu"),
        helper.make_node("Gemm", ["h1r", "g2", "gb2"], ["logits_raw"], transB=1, name="fc2"),
        helper.make_node("Softmax", ["logits_raw"], ["prob"], axis=1, name="softmax"),
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in zip((w1, w2, w3, g1, gb1, g2, gb2),
                                                           ("w1", "w2", "w3", "g1", "gb1", "g2", "gb2"))] + [six, zero]
    graph = helper.make_graph(nodes, "batch1_reshape_gemm",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 6])], inits)
    onnx.save(_model(graph, 13), str(path))
    torch_model = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.ReLU(), nn.Conv2d(8, 12, 3, 2, 1, bias=False),
                                nn.ReLU6(), nn.Conv2d(12, 12, 3, 1, 1, bias=False), nn.ReLU(), nn.Flatten(),
                                nn.Linear(12 * 8 * 8, 20), nn.ReLU(), nn.Linear(20, 6))
    _load(torch_model, [w1, None, w2, None, w3, None, None, g1, gb1, None, g2, gb2])
    return path, torch_model


def _load(seq: nn.Sequential, arrays):
    """Copy weights (and biases) into a Sequential; arrays: per parameter in order, None skips."""
    params = [p for p in seq.parameters()]
    given = [a for a in arrays if a is not None]
    assert len(params) == len(given)
    with torch.no_grad():
        for p, a in zip(params, given):
            p.copy_(torch.from_numpy(np.ascontiguousarray(a)))
    seq.eval()


def test_helper_nhwc_flatten_matmul_model(tmp_path):
    path, torch_model = _helper_nhwc_flatten_matmul(tmp_path / "m.onnx")
    out = tmp_path / "s.onnx"
    report = surgery(SurgeryOptions(onnx=str(path), out=str(out), mean=(120.0, 110.0, 100.0), std=(60.0, 50.0, 55.0)),
                     log=lambda m: None)
    assert report["head"] == "masked_batch"
    assert report["scale_ends"] == ["relu1", "pool1", "relu2"]
    theirs = _torch_export(torch_model, (32, 32), tmp_path / "t.onnx", mean=(120.0, 110.0, 100.0), std=(60.0, 50.0, 55.0))
    images = check_images((32, 32))
    ours = _run(out, images)
    assert "scores" in ours and np.array_equal(ours["scores"], ours[contract.LOGITS])
    _assert_maps_equal(ours, _run(theirs, images))
    meta = contract.decode_metadata({p.key: p.value for p in onnx.load(str(out)).metadata_props})
    assert meta["input"]["model_input"] == {"name": "image", "layout": "NHWC", "color": "RGB"}


def test_helper_batch1_reshape_gemm_softmax_model(tmp_path):
    path, torch_model = _helper_batch1_reshape_gemm(tmp_path / "m.onnx")
    out = tmp_path / "s.onnx"
    report = surgery(SurgeryOptions(onnx=str(path), out=str(out), mean=(127.0,) * 3, std=(128.0,) * 3,
                                    labels=None), log=lambda m: None)
    assert report["head"] == "masked_batch" and report["checks"]["batches"] == [1]
    theirs = _torch_export(torch_model, (32, 32), tmp_path / "t.onnx")
    for image in check_images((32, 32)):
        ours = _run(out, image[None])
        # logits are the raw scores before the model's Softmax; its output is kept as it was
        e = np.exp(ours[contract.LOGITS] - ours[contract.LOGITS].max())
        np.testing.assert_allclose(ours["prob"], e / e.sum(), atol=1e-6)
        _assert_maps_equal(ours, _run(theirs, image[None]))


# ---------------------------------------------------------------- CLI, errors, no torch
def test_cli_writes_a_model_and_never_imports_torch(tmp_path):
    path, _ = _helper_nhwc_flatten_matmul(tmp_path / "m.onnx")
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"thing {i}" for i in range(10)))
    out = tmp_path / "s.onnx"
    code = (
        "import sys; from edge_saliency.cli import main; "
        f"rc = main(['export', '--onnx', {str(path)!r}, '--out', {str(out)!r}, '--labels', {str(labels)!r}, "
        "'--mean', '127,127,127', '--std', '128,128,128', '--color', 'bgr', '--layout', 'nhwc']); "
        "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    from edge_saliency.model import SaliencyModel

    model = SaliencyModel(out, provider="cpu", threads=1)
    assert model.labels[3] == "thing 3" and model.info.input_size == (32, 32)
    result = model.predict(check_images((32, 32))[0])
    assert result.smoe.shape == (8, 8) and result.recipro_cam.shape == (8, 8)
    assert model.info.raw["input"]["model_input"]["color"] == "BGR"


def _cli_error(args, capsys) -> str:
    assert cli_main(["export", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_errors_name_the_node_and_the_flag(tmp_path, capsys):
    path, _ = _helper_nhwc_flatten_matmul(tmp_path / "m.onnx")
    out = str(tmp_path / "o.onnx")
    assert "not found" in _cli_error(["--onnx", str(tmp_path / "missing.onnx"), "--out", out], capsys)
    err = _cli_error(["--onnx", str(path), "--out", out, "--target-node", "flatten"], capsys)
    assert "'flatten'" in err and "--target-node" in err
    err = _cli_error(["--onnx", str(path), "--out", out, "--scale-nodes", "relu1,nope"], capsys)
    assert "'nope'" in err and "--scale-nodes" in err
    err = _cli_error(["--onnx", str(path), "--out", out, "--scale-nodes", "flatten"], capsys)
    assert "'flatten'" in err and "4-D" in err
    err = _cli_error(["--onnx", str(path), "--out", out, "--feature-layer", "relu2"], capsys)
    assert "--target-node" in err
    assert not Path(out).exists()


def test_unsupported_models_get_one_clear_error(tmp_path):
    w = numpy_helper.from_array(_weights(5, (4, 3, 3, 3))[0], "w")
    # no 4-D activation: Conv then Flatten + Gemm (the conv output has negative values)
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Flatten", ["c"], ["f"]),
         helper.make_node("Gemm", ["f", "g"], ["y"], transB=1)],
        "nocnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])],
        [w, numpy_helper.from_array(_weights(6, (5, 4 * 16 * 16))[0], "g")])
    path = tmp_path / "nocnn.onnx"
    onnx.save(_model(g, 17), str(path))
    with pytest.raises(UserError, match="dynamic spatial size.*--input-size"):
        surgery(SurgeryOptions(onnx=str(path), out=str(tmp_path / "o.onnx")), log=lambda m: None)
    with pytest.raises(UserError, match="non-negative 4-D feature map.*--scale-nodes"):
        surgery(SurgeryOptions(onnx=str(path), out=str(tmp_path / "o.onnx"), input_size=(16, 16)), log=lambda m: None)
    # a head that reads a tensor from before the feature map (a skip around it)
    g2 = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["a"], name="early"),
         helper.make_node("Conv", ["a", "w2"], ["c2"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c2"], ["f"], name="late"),
         helper.make_node("GlobalAveragePool", ["f"], ["pf"]),
         helper.make_node("GlobalAveragePool", ["a"], ["pa"]),
         helper.make_node("Add", ["pf", "pa"], ["s"], name="mix"),
         helper.make_node("Flatten", ["s"], ["fl"]),
         helper.make_node("Gemm", ["fl", "g"], ["y"], transB=1)],
        "skip", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])],
        [w, numpy_helper.from_array(_weights(7, (4, 4, 3, 3))[0], "w2"),
         numpy_helper.from_array(_weights(8, (5, 4))[0], "g")])
    path2 = tmp_path / "skip.onnx"
    onnx.save(_model(g2, 17), str(path2))
    with pytest.raises(UserError, match="'mix' reads 'pa'.*--target-node"):
        surgery(SurgeryOptions(onnx=str(path2), out=str(tmp_path / "o.onnx")), log=lambda m: None)
    # a head op that is not a classifier head's
    g3 = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["f"]),
         helper.make_node("GlobalAveragePool", ["f"], ["p"]),
         helper.make_node("Flatten", ["p"], ["fl"]),
         helper.make_node("Gemm", ["fl", "g"], ["s"], transB=1),
         helper.make_node("Hardmax", ["s"], ["y"], name="hard")],
        "hardmax", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])],
        [w, numpy_helper.from_array(_weights(8, (5, 4))[0], "g")])
    path3 = tmp_path / "hardmax.onnx"
    onnx.save(_model(g3, 17), str(path3))
    with pytest.raises(UserError, match="head node 'hard' \\(Hardmax\\).*--target-node"):
        surgery(SurgeryOptions(onnx=str(path3), out=str(tmp_path / "o.onnx")), log=lambda m: None)
    # with the SMOE maps only, the head does not matter
    report = surgery(SurgeryOptions(onnx=str(path2), out=str(tmp_path / "o.onnx"), methods=("smoe",)), log=lambda m: None)
    assert report["outputs"][:4] == [contract.LOGITS, contract.TARGET, contract.SMOE, contract.SMOE_SCALES]
