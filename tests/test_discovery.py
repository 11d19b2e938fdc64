"""Scale-end discovery and the backbone/head split on four architecture shapes."""
from __future__ import annotations

import pytest
import torch

import archs
from edge_saliency.errors import UserError
from export.discovery import discover
from export.efficientnet_lite import efficientnet_lite0


def summary(structure):
    return [(e.name, e.size) for e in structure.scale_ends]


def test_efficientnet_lite0_discovery():
    s = discover(efficientnet_lite0(pretrained=False), (224, 224))
    # the stem's activation at 112 (a top-level module); inside the blocks (whose outputs are
    # linear) the last activation at each resolution: the expansion ReLU6 of the block that
    # downsamples next; the head conv's activation at 7x7
    assert summary(s) == [
        ("_act_stem", (112, 112)), ("_blocks.3._act0", (56, 56)), ("_blocks.5._act0", (28, 28)),
        ("_blocks.11._act0", (14, 14)), ("_act_head", (7, 7)),
    ]
    assert s.head.kind == "gap_linear" and s.head.linear_name == "_fc"
    assert s.head.feature.name == "_act_head" and s.head.feature.channels == 1280
    assert s.num_classes == 1000


def test_resnet_shape_prefers_stage_names():
    s = discover(archs.randomise_bn(archs.TinyResNet()), (64, 64))
    # container outputs are the same tensor as their last ReLU: the outermost name wins
    assert summary(s) == [("relu", (32, 32)), ("layer1", (16, 16)), ("layer2", (8, 8)),
                          ("layer3", (4, 4)), ("layer4", (2, 2))]
    assert s.head.kind == "gap_linear" and s.head.linear_name == "fc"


def test_vgg_shape_uses_masked_batch_head():
    s = discover(archs.TinyVGG().eval(), (64, 64))
    assert [e.size for e in s.scale_ends] == [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]
    assert s.scale_ends[-1].name == "avgpool"
    assert s.head.kind == "masked_batch"


def test_mobilenetv2_shape():
    s = discover(archs.randomise_bn(archs.TinyMobileNetV2()), (64, 64))
    # stem; then (block outputs are linear) the expansion ReLU6 of each downsampling block;
    # at 4x4 the whole `features` Sequential, whose output is the last conv stage's
    assert summary(s) == [("features.0", (32, 32)), ("features.4.conv.2", (16, 16)),
                          ("features.5.conv.2", (8, 8)), ("features", (4, 4))]
    assert s.head.kind == "gap_linear" and s.head.linear_name == "classifier.1"


def test_override_scale_layers_and_feature_layer():
    model = archs.randomise_bn(archs.TinyResNet())
    s = discover(model, (64, 64), scale_layers=["layer2", "layer4"], feature_layer="layer3")
    assert summary(s) == [("layer2", (8, 8)), ("layer4", (2, 2))]
    assert s.head.feature.name == "layer3"
    assert s.head.kind == "masked_batch"  # layer4 sits between layer3 and the GAP


def test_override_with_linear_output_is_clamped():
    model = efficientnet_lite0(pretrained=False)
    s = discover(model, (224, 224), scale_layers=["_blocks.2", "_act_head"])
    assert [e.nonnegative for e in s.scale_ends] == [False, True]
    assert any("_blocks.2" in note for note in s.notes)


@pytest.mark.parametrize("model, message", [
    (archs.NotACNN(), "not a CNN"),
    (archs.FeatureExtractor(), "not a CNN classifier"),
])
def test_not_a_cnn_classifier(model, message):
    with pytest.raises(UserError, match=message):
        discover(model, (32, 32))


def test_unknown_layer_name():
    with pytest.raises(UserError, match="no layer named 'layer9'"):
        discover(archs.TinyResNet().eval(), (64, 64), scale_layers=["layer9"])


def test_wrong_input_size_is_a_clear_error():
    with pytest.raises(UserError, match="input-size"):
        discover(archs.NotACNN(), (64, 64))


def test_head_with_skip_around_feature_is_refused():
    class Skip(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, 2, 1), torch.nn.ReLU())
            self.b = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, 2, 1), torch.nn.ReLU())
            self.fc = torch.nn.Linear(8, 3)

        def forward(self, x):
            a = self.a(x)
            b = self.b(a)
            return self.fc(torch.cat([a.mean((2, 3)), b.amax((2, 3))], 1))

    with pytest.raises(UserError, match="cannot split the head after 'b'"):
        discover(Skip().eval(), (32, 32))
