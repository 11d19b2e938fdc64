"""Gradient CAMs in the graph (guidance-rectified, Grad-CAM, Grad-CAM++) against torch autograd on
the pretrained EfficientNet-Lite0: the analytic GAP+linear gradient is the true gradient."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_saliency import samples
from edge_saliency.methods import gradient_cams as gc
from export.efficientnet_lite import efficientnet_lite0

GRADIENT_METHODS = ("guided", "gradcam", "gradcampp")


def autograd(model, layer, x, target=None):
    """(A, dy_c/dA, target) at ``layer``'s output, by autograd."""
    store = {}

    def hook(module, inputs, output):
        output.retain_grad()
        store["a"] = output

    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = model(x)
            target = logits.argmax(dim=1) if target is None else target
            logits.gather(1, target.view(-1, 1)).sum().backward()
    finally:
        handle.remove()
    return store["a"].detach()[0].numpy(), store["a"].grad[0].numpy(), int(target[0])


@pytest.fixture(scope="module")
def all_methods_onnx(tmp_path_factory):
    from export.build import ExportOptions, export_from_options

    out = tmp_path_factory.mktemp("models") / "all.onnx"
    export_from_options(ExportOptions(out=str(out), methods=("smoe", "recipro", *GRADIENT_METHODS),
                                      class_input=True), log=lambda m: None)
    return out


@pytest.mark.parametrize("photo", ["chelsea", "coffee"])
def test_exported_gradient_cams_equal_autograd(all_methods_onnx, photo):
    from edge_saliency.runtime.model import SaliencyModel

    m = SaliencyModel(all_methods_onnx, provider="cpu")
    assert m.outputs[-3:] == ["guided_cam", "grad_cam", "grad_cam_pp"]
    frame = samples.photo(photo)
    tabby = m.class_index("tabby")
    model = efficientnet_lite0(pretrained=True)
    img = m.preprocess(frame)
    x = ((torch.from_numpy(img[:, :, ::-1].copy()).float() - 127.0) / 128.0).permute(2, 0, 1)[None]
    for cls in (None, tabby):
        r = m.predict(frame, class_index=cls)
        a, g, target = autograd(model, model._act_head, x, None if cls is None else torch.tensor([cls]))
        assert r.class_index == target
        for method in GRADIENT_METHODS:
            want = gc.ref_map(method, a, g)
            np.testing.assert_allclose(r.map(method), want, atol=1e-4, err_msg=f"{method} class {cls}")
    assert not np.allclose(r.map("guided"), r.map("gradcam"), atol=1e-2)


def test_eval_reads_exported_gradient_cams(all_methods_onnx):
    from edge_saliency.explain import registry
    from edge_saliency.runtime.model import SaliencyModel

    m = SaliencyModel(all_methods_onnx, provider="cpu")
    assert registry.parse_methods("guided,gradcam,gradcampp,smoe", m) == ["guided", "gradcam", "gradcampp", "smoe"]
    sal, target, _ = registry.in_graph_map(m, m.preprocess(samples.photo("chelsea")), "guided", None)
    np.testing.assert_allclose(sal, m.predict(samples.photo("chelsea")).map("guided"))
    assert target == 285
