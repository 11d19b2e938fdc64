"""Gradient CAMs (guidance-rectified, Grad-CAM, Grad-CAM++) against numpy references, and the
analytic GAP+linear gradient against autograd."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from edge_saliency import samples
from export.efficientnet_lite import efficientnet_lite0
from export.methods import gradient_cams as gc


def np_minmax(m):
    return (m - m.min()) / max(m.max() - m.min(), 1e-12)


def np_gradcam(a, g):
    w = g.mean(axis=(1, 2))
    return np_minmax(np.maximum((w[:, None, None] * a).sum(0), 0))


def np_gradcampp(a, g):
    num = g ** 2
    denom = 2 * g ** 2 + a.sum(axis=(1, 2))[:, None, None] * g ** 3
    alpha = np.where(denom != 0, num / np.where(denom != 0, denom, 1), 0)
    w = (alpha * np.maximum(g, 0)).sum(axis=(1, 2))
    return np_minmax(np.maximum((w[:, None, None] * a).sum(0), 0))


def np_guided(a, g):
    w = g.mean(axis=(1, 2))
    cam = np.maximum((w[:, None, None] * a).sum(0), 0)
    guide = np_minmax(np.maximum(a * g, 0).sum(0))
    return np_minmax(cam * guide)


REFS = {"gradcam": np_gradcam, "gradcampp": np_gradcampp, "guided": np_guided}


@pytest.mark.parametrize("method", gc.METHODS)
def test_formulas_match_numpy_reference(method):
    rng = np.random.default_rng(3)
    a = (rng.gamma(2.0, 1.0, (2, 16, 6, 5)) * (rng.random((2, 16, 6, 5)) > 0.4)).astype(np.float32)
    g = rng.normal(0, 0.1, (2, 16, 6, 5)).astype(np.float32)
    got = gc.FROM_GRADIENT[method](torch.from_numpy(a), torch.from_numpy(g)).numpy()
    assert got.shape == (2, 1, 6, 5)
    for n in range(2):
        np.testing.assert_allclose(got[n, 0], REFS[method](a[n].astype(np.float64), g[n].astype(np.float64)),
                                   atol=1e-4, rtol=0)


@pytest.mark.parametrize("method", gc.METHODS)
def test_gap_linear_shortcut_equals_autograd_on_efficientnet(method):
    model = efficientnet_lite0(pretrained=True)
    img = cv2.resize(samples.photo("chelsea"), (224, 224), interpolation=cv2.INTER_AREA)
    x = ((torch.from_numpy(img[:, :, ::-1].copy()).float() - 127.0) / 128.0).permute(2, 0, 1)[None]
    a, g, target = gc.gradients_autograd(model, model._act_head, x)
    assert int(target) == 285  # Egyptian cat
    want = gc.FROM_GRADIENT[method](a, g)
    got = gc.gradient_cam_gap_linear(method, a, model._fc.weight.detach(), target)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-4)
    assert got.min() == 0 and abs(float(got.max()) - 1) < 1e-6


def test_guided_differs_from_plain_gradcam():
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.gamma(2.0, 1.0, (1, 8, 5, 5)).astype(np.float32))
    g = torch.from_numpy(rng.normal(0, 1, (1, 8, 5, 5)).astype(np.float32))
    assert not torch.allclose(gc.guided(a, g), gc.gradcam(a, g), atol=1e-3)


# ------------------------------------------------------------------ in the exported graph
@pytest.fixture(scope="module")
def all_methods_onnx(tmp_path_factory):
    from export.build import ExportOptions, export_from_options

    out = tmp_path_factory.mktemp("models") / "all.onnx"
    export_from_options(ExportOptions(out=str(out), methods=("smoe", "recipro", "guided", "gradcam", "gradcampp"),
                                      class_input=True), log=lambda m: None)
    return out


@pytest.mark.parametrize("photo", ["chelsea", "coffee"])
def test_exported_gradient_cams_equal_autograd(all_methods_onnx, photo):
    from edge_saliency.model import SaliencyModel

    m = SaliencyModel(all_methods_onnx, provider="cpu")
    assert m.outputs[-3:] == ["guided_cam", "grad_cam", "grad_cam_pp"]
    frame = samples.photo(photo)
    tabby = m.class_index("tabby")
    model = efficientnet_lite0(pretrained=True)
    img = m.preprocess(frame)
    x = ((torch.from_numpy(img[:, :, ::-1].copy()).float() - 127.0) / 128.0).permute(2, 0, 1)[None]
    for cls in (None, tabby):
        r = m.predict(frame, class_index=cls)
        a, g, target = gc.gradients_autograd(model, model._act_head, x, None if cls is None else torch.tensor([cls]))
        assert r.class_index == int(target)
        for method in gc.METHODS:
            want = gc.FROM_GRADIENT[method](a, g)[0, 0].numpy()
            np.testing.assert_allclose(r.map(method), want, atol=1e-4, err_msg=f"{method} class {cls}")


def test_eval_reads_exported_gradient_cams(all_methods_onnx):
    from edge_saliency.explain import methods as registry
    from edge_saliency.model import SaliencyModel

    m = SaliencyModel(all_methods_onnx, provider="cpu")
    assert registry.parse_methods("guided,gradcam,gradcampp,smoe", m) == ["guided", "gradcam", "gradcampp", "smoe"]
    sal, target, _ = registry.in_graph_map(m, m.preprocess(samples.photo("chelsea")), "guided", None)
    np.testing.assert_allclose(sal, m.predict(samples.photo("chelsea")).map("guided"))
    assert target == 285


def test_gradient_cams_refused_without_gap_linear_head(tmp_path):
    import archs
    from edge_saliency.errors import UserError
    from export.discovery import discover
    from export.saliency_module import SaliencyConfig, SaliencyExport

    model = archs.TinyVGG().eval()
    with pytest.raises(UserError, match="need a head that is global average pooling"):
        SaliencyExport(model, discover(model, (64, 64)), (0,) * 3, (1,) * 3, SaliencyConfig(methods=("guided",)))
