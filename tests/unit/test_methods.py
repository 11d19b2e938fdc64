"""The methods' pieces (edge_saliency.methods): the numpy references against the formulas and
independent implementations (scipy, torch), and each ONNX head piece against its reference on
synthetic activations (1e-4)."""
from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

import archs
import graph_util as gu
from edge_saliency.graph.writer import GraphWriter
from edge_saliency.methods import gradient_cams as gc
from edge_saliency.methods import recipro, smoe

TOL = 1e-4


def relu_activation(rng, c, h, w, zero_share=0.5, n=2):
    """Non-negative activations with exact zeros, as after a ReLU."""
    a = rng.gamma(2.0, 1.0, size=(n, c, h, w)) * (rng.random((n, c, h, w)) > zero_share)
    return a.astype(np.float32)


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def run_piece(write, *arrays: np.ndarray) -> np.ndarray:
    """Run an ONNX head piece ``write(gw, *input_names) -> output name`` on float32 arrays."""
    names = [f"in{i}" for i in range(len(arrays))]
    g = helper.make_graph([], "piece", [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(a.shape))
                                        for n, a in zip(names, arrays)], [])
    gw = GraphWriter(g, 17)
    out = write(gw, *names)
    g.output.append(onnx.ValueInfoProto(name=out))
    model = archs.helper_model(g, 17)
    return gu.session(model).run(None, dict(zip(names, arrays)))[0]


# ------------------------------------------------------------------ the references themselves
def test_smoe_reference_matches_the_formula_written_out(rng):
    a = relu_activation(rng, 6, 3, 4, n=1)[0].astype(np.float64)
    eps = 1e-7
    want = np.zeros((3, 4))
    for i in range(3):
        for j in range(4):
            x = a[:, i, j] + eps
            m = x.mean()
            want[i, j] = m * (math.log2(m) - sum(math.log2(v) for v in x) / len(x))
    np.testing.assert_allclose(smoe.ref_smoe_scale(a, eps), want, rtol=1e-12)


def test_smoe_is_zero_where_channels_agree():
    assert np.abs(smoe.ref_smoe_scale(np.full((8, 3, 3), 2.5), 1e-3)).max() < 1e-12


def test_gamma_reference_matches_scipy(rng):
    from scipy.special import gammainc

    raw = smoe.ref_smoe_scale(relu_activation(rng, 32, 12, 12, n=1)[0], 1e-3)
    x = np.clip(raw, 0, None) + 1e-10
    s = math.log(x.mean()) - np.log(x).mean()
    k = (3 - s + math.sqrt((s - 3) ** 2 + 24 * s)) / (12 * s)
    np.testing.assert_allclose(smoe.ref_gamma_cdf(raw), gammainc(k, x / (x.mean() / k)), atol=1e-9)


def test_gaussian_reference_matches_scipy(rng):
    from scipy.stats import norm

    x = rng.normal(3.0, 2.0, size=(13, 7))
    np.testing.assert_allclose(smoe.ref_gaussian_cdf(x), norm.cdf(x, x.mean(), x.std()), atol=1e-12)


def test_bilinear_reference_agrees_with_torch_both_ways(rng):
    m = rng.random((7, 10))
    for size in [(14, 20), (3, 4), (7, 10), (5, 13)]:
        want = torch.nn.functional.interpolate(torch.from_numpy(m)[None, None], size=size, mode="bilinear",
                                               align_corners=False)[0, 0].numpy()
        np.testing.assert_allclose(smoe.ref_resize_bilinear(m, size), want, atol=1e-9)


def test_recipro_reference_gap_linear_equals_masked_copies_through_torch(rng):
    """The numpy GAP+linear head on masked copies = torch's AdaptiveAvgPool + Linear on them."""
    fmap = relu_activation(rng, 12, 5, 6, zero_share=0.3, n=1)[0]
    lin = torch.nn.Linear(12, 9).double()
    head = recipro.gap_linear_head(lin.weight.detach().numpy(), lin.bias.detach().numpy())

    def torch_head(maps):
        with torch.no_grad():
            return lin(torch.from_numpy(maps).mean(dim=(2, 3))).numpy()

    for variant in recipro.VARIANTS:
        for score in recipro.SCORES:
            np.testing.assert_allclose(recipro.ref_map(fmap, head, 3, score, variant),
                                       recipro.ref_map(fmap, torch_head, 3, score, variant), atol=1e-12)
    m = recipro.ref_map(fmap, head, 3)
    assert m.min() == 0.0 and m.max() == 1.0


def test_recipro_masks():
    onehot = recipro.spatial_masks(3, 4, "onehot")
    assert onehot.shape == (12, 1, 3, 4) and np.array_equal(onehot.sum(axis=0)[0], np.ones((3, 4)))
    gauss = recipro.spatial_masks(3, 4, "gaussian3x3")
    assert gauss[5, 0, 1, 1] == pytest.approx(0.25) and gauss[5, 0, 0, 0] == pytest.approx(1 / 16)
    assert gauss[0, 0, 0, 0] == pytest.approx(0.25) and gauss[0, 0, 2, 3] == 0.0


def test_gradient_cam_references_against_autograd():
    """Grad-CAM weights are the mean gradient: with A -> GAP -> linear built in torch, autograd's
    dy_c/dA equals the analytic W[c]/(hw) the references use."""
    torch.manual_seed(0)
    a = torch.rand(1, 16, 5, 4, requires_grad=True)
    lin = torch.nn.Linear(16, 7)
    y = lin(a.mean(dim=(2, 3)))
    y[0, 2].backward()
    analytic = np.broadcast_to((lin.weight[2].detach().numpy() / 20.0)[:, None, None], (16, 5, 4))
    np.testing.assert_allclose(a.grad[0].numpy(), analytic, atol=1e-7)
    for name in ("gradcam", "gradcampp", "guided"):
        m = gc.ref_map(name, a[0].detach().numpy(), analytic)
        assert m.shape == (5, 4) and m.min() == 0.0 and m.max() == pytest.approx(1.0)
    assert not np.allclose(gc.ref_map("guided", a[0].detach().numpy(), analytic),
                           gc.ref_map("gradcam", a[0].detach().numpy(), analytic))


# ------------------------------------------------------------------ ONNX pieces vs references
@pytest.mark.parametrize("channels, eps", [(1280, 1e-3), (1280, 1e-7), (672, 1e-12), (30, 1e-7), (7, 1e-3), (16, 1e-3)])
def test_smoe_statistic_in_the_graph(rng, channels, eps):
    a = relu_activation(rng, channels, 5, 6) * 3.0
    ratio = smoe.smallest_ratio(a, eps)
    got = run_piece(lambda gw, x: smoe.smoe_scale(gw, x, channels, (5, 6), False, eps, ratio), a)
    for n in range(2):
        want = smoe.ref_smoe_scale(a[n], eps)
        np.testing.assert_allclose(got[n, 0], want, rtol=1e-4, atol=1e-6 * np.abs(want).max())


def test_smoe_clamps_negative_activations(rng):
    a = rng.normal(size=(2, 8, 4, 4)).astype(np.float32)
    got = run_piece(lambda gw, x: smoe.smoe_scale(gw, x, 8, (4, 4), True, 1e-3), a)
    for n in range(2):
        np.testing.assert_allclose(got[n, 0], smoe.ref_smoe_scale(np.maximum(a[n], 0), 1e-3), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("normaliser", smoe.NORMALISERS)
def test_normalisers_in_the_graph(rng, normaliser):
    raw = np.stack([smoe.ref_smoe_scale(a, 1e-3) for a in relu_activation(rng, 32, 12, 11)])[:, None].astype(np.float32)
    write = smoe.gamma_cdf if normaliser == "gamma" else smoe.gaussian_cdf
    ref = smoe.ref_gamma_cdf if normaliser == "gamma" else smoe.ref_gaussian_cdf
    got = run_piece(lambda gw, x: write(gw, x), raw)
    for n in range(2):
        np.testing.assert_allclose(got[n, 0], ref(raw[n, 0]), atol=TOL, rtol=0)
    flat = run_piece(lambda gw, x: write(gw, x), np.ones((1, 1, 4, 4), np.float32))
    assert np.isfinite(flat).all()


@pytest.mark.parametrize("src, dst", [((14, 14), (56, 56)), ((112, 112), (56, 56)), ((7, 7), (56, 56)),
                                      ((13, 13), (55, 55)), ((9, 5), (4, 8))])
def test_resize_in_the_graph(rng, src, dst):
    m = rng.random((2, 1, *src)).astype(np.float32)
    got = run_piece(lambda gw, x: smoe.resize_bilinear(gw, x, src, dst), m)
    for n in range(2):
        np.testing.assert_allclose(got[n, 0], smoe.ref_resize_bilinear(m[n, 0].astype(np.float64), dst), atol=1e-6)
