"""Test networks: small ResNet-, VGG- and MobileNetV2-shaped torch modules (random weights, the
module structure and naming of torchvision's, scaled down), their plain ONNX exports, and ONNX
classifiers written with onnx.helper in unusual but legal shapes. The real timm and torchvision
architectures are in ``real_archs.py``."""
from __future__ import annotations

import torch
from torch import nn


class Bottleneck(nn.Module):
    def __init__(self, cin, mid, stride):
        super().__init__()
        cout = mid * 4
        self.conv1, self.bn1 = nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv2, self.bn2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv3, self.bn3 = nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)  # one module, called three times (as torchvision)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + idt)


class TinyResNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 7, 2, 3, bias=False), nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(Bottleneck(8, 4, 1), Bottleneck(16, 4, 1))
        self.layer2 = nn.Sequential(Bottleneck(16, 8, 2), Bottleneck(32, 8, 1))
        self.layer3 = nn.Sequential(Bottleneck(32, 8, 2))
        self.layer4 = nn.Sequential(Bottleneck(32, 16, 2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class TinyVGG(nn.Module):
    """features -> AdaptiveAvgPool2d(2) -> flatten -> MLP: not a GAP head (general path)."""

    def __init__(self, num_classes=10):
        super().__init__()
        cfg = [8, "M", 16, "M", 16, 16, "M", 32, "M"]
        layers, cin = [], 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(2)
        self.classifier = nn.Sequential(nn.Linear(32 * 4, 24), nn.ReLU(True), nn.Dropout(), nn.Linear(24, num_classes))

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        mid = cin * expand
        layers = []
        if expand != 1:
            layers += [nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(inplace=True),
                   nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class TinyMobileNetV2(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        feats = [nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(inplace=True))]
        cin = 8
        for cout, stride in [(8, 1), (12, 2), (12, 1), (16, 2), (24, 2), (24, 1)]:
            feats.append(InvertedResidual(cin, cout, stride, 1 if cin == 8 and cout == 8 else 4))
            cin = cout
        feats.append(nn.Sequential(nn.Conv2d(cin, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU6(inplace=True)))
        self.features = nn.Sequential(*feats)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, num_classes))

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


class TinyConvHead(TinyMobileNetV2):
    """MobileNetV3's head: GAP, a 1x1 conv with bias (64 -> 48), hardswish, flatten, linear."""

    def __init__(self, num_classes=10):
        super().__init__(num_classes)
        self.conv_head = nn.Conv2d(64, 48, 1)
        with torch.no_grad():  # a masked copy pools to 1/P of one position: without this the
            self.conv_head.weight.mul_(16.0)  # bias dominates, every copy scores alike (ill-conditioned)
        self.classifier = nn.Linear(48, num_classes)

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(nn.functional.hardswish(self.conv_head(x)), 1))


class NotACNN(nn.Module):
    """An MLP over the flattened image: no 4-D feature maps."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))

    def forward(self, x):
        return self.net(x)


class FeatureExtractor(nn.Module):
    """A CNN that returns feature maps, not class scores."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU())

    def forward(self, x):
        return self.body(x)


def randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics, so eval-mode numerics are realistic."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model.eval()


def confident(model: nn.Module, gain: float = 30.0) -> nn.Module:
    """Scale the last linear layer so class scores spread as a trained model's do. With random
    weights every class scores about the same, Recipro-CAM's min-max normalisation divides by a
    range near zero, and the map is float noise."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(gain)
    return model.eval()


# ---------------------------------------------------------------- plain ONNX exports and onnx.helper models
def plain_export(model: nn.Module, size, path):
    """The network as torch exports it plainly (dynamic batch): what a user hands to --onnx."""
    import onnx

    from export.build import export_plain

    onnx.save(export_plain(model.eval(), tuple(size)), str(path))
    return path


def _weights(seed, *shapes):
    import numpy as np

    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(s) / np.sqrt(np.prod(s[1:]))).astype(np.float32) for s in shapes]


def helper_model(graph, opset: int):
    from onnx import helper

    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def helper_nhwc_flatten_matmul(path):
    """Input named 'image' (our own input's name), float NHWC [n, 32, 32, 3]; Transpose, conv-relu,
    maxpool, conv s2-relu, a Flatten + MatMul + Add head, opset 17."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

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
    inits = [numpy_helper.from_array(a, n) for a, n in zip((w1, b1, w2, b2, wm * 8, bm), ("w1", "b1", "w2", "b2", "wm", "bm"))]
    graph = helper.make_graph(nodes, "nhwc_flatten_matmul",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 32, 32, 3])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", 10])], inits)
    onnx.save(helper_model(graph, 17), str(path))
    return path


def helper_batch1_reshape_gemm_softmax(path):
    """Fixed batch 1, opset 13; conv-relu, conv s2-Clip(0, 6), conv-relu, Reshape to the constant
    [1, -1], Gemm(transB) - Relu - Gemm, a Softmax output."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w1, w2, w3, g1, gb1, g2, gb2 = _weights(4, (8, 3, 3, 3), (12, 8, 3, 3), (12, 12, 3, 3), (20, 12 * 8 * 8), (20,),
                                            (6, 20), (6,))
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
    inits = [numpy_helper.from_array(a, n) for a, n in zip((w1, w2, w3, g1, gb1, g2 * 10, gb2),
                                                           ("w1", "w2", "w3", "g1", "gb1", "g2", "gb2"))]
    inits += [numpy_helper.from_array(np.float32(6.0), "six"), numpy_helper.from_array(np.float32(0.0), "zero")]
    graph = helper.make_graph(nodes, "batch1_reshape_gemm",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 6])], inits)
    onnx.save(helper_model(graph, 13), str(path))
    return path


def helper_gap_gemm_opset11(path):
    """Opset 11 (the builder converts it), non-square 48x40 input, LeakyRelu (negative values),
    ReduceMean pooling with axes as an attribute, Gemm with transB=0 and alpha/beta != 1."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w1, w2, g, gb = _weights(5, (8, 3, 3, 3), (16, 8, 3, 3), (16, 7), (7,))
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv1"),
        helper.make_node("LeakyRelu", ["c1"], ["r1"], alpha=0.1, name="lrelu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("ReduceMean", ["r2"], ["pooled"], axes=[2, 3], keepdims=0, name="gap"),
        helper.make_node("Gemm", ["pooled", "g", "gb"], ["y"], alpha=2.0, beta=0.5, name="fc"),
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in zip((w1, w2, g * 4, gb), ("w1", "w2", "g", "gb"))]
    graph = helper.make_graph(nodes, "gap_gemm_opset11",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 48, 40])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 7])], inits)
    onnx.save(helper_model(graph, 11), str(path))
    return path
