"""Real third-party CNNs (timm, torchvision; random weights) through the torch export and through
``export --onnx`` on their plain dynamic-batch exports: both write a checked file with the same
outputs, maps finite, in [0, 1], not constant and within the builder's bound of their numpy
references. A few families here (CI keeps under 10 minutes); every architecture of the issue is
in benchmarks/architectures.py with its recorded result."""
from __future__ import annotations

import pytest

from benchmarks.architectures import check_architecture

# one per family the CI run can afford at 128 px: residual, inverted residual + SE + hard-swish,
# SiLU as x*sigmoid(x), LayerNorm/GELU in NHWC (ConvNeXt), reparametrised plain convs, channel
# shuffle, ghost modules, odd sizes (SqueezeNet: 63 -> 31 -> 15 -> 7)
CI_ARCHS = ("torchvision:resnet18", "timm:mobilenetv3_large_100", "timm:efficientnet_b0", "timm:convnext_nano",
            "timm:repvgg_a0", "torchvision:shufflenet_v2_x0_5", "timm:ghostnet_100", "torchvision:squeezenet1_1")


@pytest.mark.parametrize("arch", CI_ARCHS)
def test_real_architecture_through_both_paths(arch, tmp_path):
    row = check_architecture(arch, 128, tmp_path)
    assert row["head"] in ("gap_linear", "gap_head", "masked_batch")
    assert row["torch_report_equal"]
    assert len(row["scales"].split(",")) >= 4, row["scales"]  # a scale end at (nearly) every stage
