"""The graph builder: every registered method on every test architecture, maps equal to the
method's numpy reference within 1e-4; the torch export and ``--onnx`` give the same file."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

import archs
import graph_util as gu
from edge_saliency import contract, methods
from edge_saliency.errors import UserError
from edge_saliency.graph import builder
from edge_saliency.graph.builder import BuildSpec

TOL = 1e-4
IMAGENET = dict(mean=builder.IMAGENET_MEAN, std=builder.IMAGENET_STD)
LITE0 = dict(mean=(127.0,) * 3, std=(128.0,) * 3)

# name -> (how to make the plain ONNX file, its preprocessing, expected head kind)
TEST_ARCHS = {
    "tiny_resnet": (lambda p: archs.plain_export(archs.confident(archs.randomise_bn(archs.TinyResNet())), (64, 64), p),
                    IMAGENET, "gap_linear"),
    "tiny_vgg": (lambda p: archs.plain_export(archs.confident(archs.TinyVGG(), 10.0), (64, 64), p), IMAGENET,
                 "masked_batch"),
    "tiny_mobilenetv2": (lambda p: archs.plain_export(archs.confident(archs.randomise_bn(archs.TinyMobileNetV2())),
                                                      (64, 64), p), IMAGENET, "gap_linear"),
    "tiny_conv_head": (lambda p: archs.plain_export(archs.confident(archs.randomise_bn(archs.TinyConvHead())),
                                                    (64, 64), p), IMAGENET, "gap_head"),
    "helper_nhwc_flatten_matmul": (archs.helper_nhwc_flatten_matmul, IMAGENET, "masked_batch"),
    "helper_batch1_reshape_gemm_softmax": (archs.helper_batch1_reshape_gemm_softmax, IMAGENET, "masked_batch"),
    "helper_gap_gemm_opset11": (archs.helper_gap_gemm_opset11, IMAGENET, "gap_linear"),
    "efficientnet_lite0_pretrained": (None, LITE0, "gap_linear"),
}


@pytest.fixture(scope="module")
def plain_models(tmp_path_factory, lite0_plain):
    folder = tmp_path_factory.mktemp("plain")
    made = {}
    for name, (make, _, _) in TEST_ARCHS.items():
        torch.manual_seed(0)
        made[name] = lite0_plain if make is None else make(folder / f"{name}.onnx")
    return made


def _input_size(plain) -> tuple[int, int]:
    from edge_saliency.graph.discovery import find_input

    return find_input(onnx.load(str(plain)), None, None).size


@pytest.mark.parametrize("method", methods.NAMES)
@pytest.mark.parametrize("arch", sorted(TEST_ARCHS))
def test_every_method_on_every_test_architecture(arch, method, plain_models, tmp_path):
    plain = plain_models[arch]
    _, pre, kind = TEST_ARCHS[arch]
    spec = BuildSpec(methods=(method,), **pre)
    m = methods.BY_NAME[method]
    out = tmp_path / "m.onnx"
    if m.gap_linear_only and kind != "gap_linear":
        with pytest.raises(UserError, match=f"{method} in the graph need a head that is global average pooling"):
            gu.surgery(plain, out, methods=(method,), **pre)
        assert not out.exists()
        return
    report = gu.surgery(plain, out, methods=(method,), **pre)
    assert report["outputs"][:2 + len(m.outputs)] == [contract.LOGITS, contract.TARGET, *m.outputs]
    if m.needs_head:
        assert report["head"] == kind
    images = builder.check_images(_input_size(plain))
    batch = images if report["metadata"]["export"]["dynamic_batch"] else images[:1]
    diffs = gu.reference_diffs(out, onnx.load(str(plain)), spec, batch)
    assert set(diffs) == set(m.outputs)
    for name, diff in diffs.items():
        assert diff <= TOL, f"{arch}/{name}: max |diff| vs the numpy reference {diff:.2e}"
    got = gu.run(out, batch)
    for name in m.outputs:
        v = got[name]
        assert np.isfinite(v).all() and v.min() >= 0.0 and v.max() <= 1.0, name


def test_recipro_options_and_class_input(plain_models, tmp_path):
    """softmax score, 3x3 masks, and a chosen class, on the GAP+linear and the cloned-head paths."""
    for arch in ("tiny_resnet", "tiny_vgg"):
        plain = plain_models[arch]
        spec = BuildSpec(methods=("recipro",), recipro_score="softmax", recipro_variant="gaussian3x3",
                         class_input=True, **IMAGENET)
        out = tmp_path / f"{arch}.onnx"
        gu.surgery(plain, out, **{k: v for k, v in spec.spec_fields().items() if k in (
            "methods", "recipro_score", "recipro_variant", "class_input", "mean", "std")})
        images = builder.check_images((64, 64))
        for cls in ([-1, -1, -1], [3, 7, -1]):
            diffs = gu.reference_diffs(out, onnx.load(str(plain)), spec, images, class_index=cls)
            assert diffs["recipro_cam"] <= TOL, (arch, cls, diffs)
        top = gu.run(out, images)[contract.TARGET]
        chosen = gu.run(out, images, class_index=[3, 7, -1])[contract.TARGET]
        assert chosen.tolist() == [3, 7, int(top[2])]


def test_recipro_reference_head_is_the_torch_module(tmp_path):
    """For the cloned-head path the reference head is the torch module's own classifier, not ONNX."""
    torch.manual_seed(1)
    model = archs.confident(archs.TinyVGG(), 10.0)
    plain = archs.plain_export(model, (64, 64), tmp_path / "vgg.onnx")
    out = tmp_path / "m.onnx"
    spec = BuildSpec(methods=("recipro",), recipro_score="softmax", **IMAGENET)
    gu.surgery(plain, out, methods=("recipro",), recipro_score="softmax", **IMAGENET)

    def torch_head(maps):
        with torch.no_grad():
            x = model.avgpool(torch.from_numpy(maps).float())
            return model.classifier(torch.flatten(x, 1)).double().numpy()

    diffs = gu.reference_diffs(out, onnx.load(str(plain)), spec, builder.check_images((64, 64)), head_fn=torch_head)
    assert diffs["recipro_cam"] <= TOL


def test_smoe_options(plain_models, tmp_path):
    plain = plain_models["efficientnet_lite0_pretrained"]
    for extra in (dict(normaliser="gamma"), dict(smoe_eps=1e-7), dict(smoe_weights=[0.18, 0.15, 0.37, 0.4, 0.72]),
                  dict(map_fraction=8)):
        spec = BuildSpec(methods=("smoe",), **LITE0, **extra)
        out = tmp_path / "m.onnx"
        gu.surgery(plain, out, methods=("smoe",), **LITE0, **extra)
        diffs = gu.reference_diffs(out, onnx.load(str(plain)), spec, builder.check_images((224, 224)))
        assert max(diffs.values()) <= TOL, (extra, diffs)


def test_torch_export_and_onnx_surgery_give_the_same_file(lite0_onnx, lite0_plain, tmp_path):
    out = tmp_path / "surgery.onnx"
    gu.surgery(lite0_plain, out, **LITE0)
    images = builder.check_images((224, 224))
    ours, theirs = gu.run(out, images), gu.run(lite0_onnx, images)
    assert list(ours) == list(theirs)
    for name in ours:
        assert np.array_equal(ours[name], theirs[name]), name
    meta = contract.decode_metadata({p.key: p.value for p in onnx.load(str(out)).metadata_props})
    torch_meta = contract.decode_metadata({p.key: p.value for p in onnx.load(str(lite0_onnx)).metadata_props})
    for key in set(meta) | set(torch_meta):
        if key not in ("arch", "export"):
            assert meta[key] == torch_meta[key], key
    assert torch_meta["export"]["source"] == "torch" and meta["export"]["source"] == lite0_plain.name
    assert [int(t) for t in ours[contract.TARGET][:2]] == [285, 967]  # Egyptian cat, espresso


def test_original_outputs_are_kept_bit_for_bit(plain_models, tmp_path):
    plain = plain_models["helper_batch1_reshape_gemm_softmax"]
    out = tmp_path / "m.onnx"
    report = gu.surgery(plain, out, **IMAGENET)
    assert report["checks"]["batches"] == [1] and report["head"] == "masked_batch"
    image = builder.check_images((32, 32))[:1]
    ours = gu.run(out, image)
    x = builder.preprocess(image, builder.IMAGENET_MEAN, builder.IMAGENET_STD, "rgb", "nchw")
    theirs = gu.session(plain).run(["prob"], {"input": x})[0]
    assert np.array_equal(ours["prob"], theirs)
    e = np.exp(ours[contract.LOGITS] - ours[contract.LOGITS].max())  # logits: the scores before its Softmax
    np.testing.assert_allclose(ours["prob"], e / e.sum(), atol=1e-6)


def test_a_failed_check_writes_nothing(plain_models, tmp_path, monkeypatch):
    monkeypatch.setattr(builder, "TOLERANCE", 0.0)
    monkeypatch.setattr(builder, "FLOAT32_NOISE", 0.0)
    out = tmp_path / "m.onnx"
    with pytest.raises(builder.BuildCheckError, match=r"differs from the numpy reference by .* \(bound 0\.0e\+00\)"):
        gu.surgery(plain_models["tiny_resnet"], out, **IMAGENET)
    assert list(tmp_path.iterdir()) == []


def test_smoe_never_overflows_on_huge_activations(tmp_path):
    """Activations up to 1e30 (untrained plain nets reach 1e8+): finite maps, still the reference."""
    import archs as a
    from onnx import TensorProto, helper, numpy_helper

    w = np.full((8, 3, 3, 3), 1e9, np.float32) * np.random.default_rng(0).random((8, 3, 3, 3)).astype(np.float32)
    w2 = np.random.default_rng(1).random((8, 8, 1, 1)).astype(np.float32) * 1e20
    g = np.random.default_rng(2).standard_normal((4, 8)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["c2"], strides=[2, 2]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "g"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "huge", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(w2, "w2"),
                               numpy_helper.from_array(g, "g")])
    plain = tmp_path / "huge.onnx"
    onnx.save(a.helper_model(graph, 17), str(plain))
    out = tmp_path / "m.onnx"
    gu.surgery(plain, out, methods=("smoe",), **IMAGENET)
    got = gu.run(out, builder.check_images((32, 32)), extra=["r", "r2"])
    assert got["r2"].max() > 1e28
    assert np.isfinite(got[contract.SMOE]).all() and np.isfinite(got[contract.SMOE_SCALES]).all()
    diffs = gu.reference_diffs(out, onnx.load(str(plain)), BuildSpec(methods=("smoe",), **IMAGENET),
                               builder.check_images((32, 32)))
    assert max(diffs.values()) <= TOL
