"""The torch implementations of the in-graph methods against the numpy references (1e-4)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import reference as ref
from export.methods import recipro_cam as rc
from export.methods.normalise import gamma_cdf, gaussian_cdf
from export.methods.smoe import smoe_maps, smoe_scale

TOL = 1e-4


def relu_activation(rng, c, h, w, zero_share=0.5):
    """Non-negative activations with exact zeros, as after a ReLU."""
    a = rng.gamma(2.0, 1.0, size=(2, c, h, w)) * (rng.random((2, c, h, w)) > zero_share)
    return a.astype(np.float32)


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def test_smoe_scale_matches_formula(rng):
    a = relu_activation(rng, 24, 9, 11)
    got = smoe_scale(torch.from_numpy(a)).numpy()
    assert got.shape == (2, 1, 9, 11)
    for n in range(2):
        np.testing.assert_allclose(got[n, 0], ref.smoe_scale(a[n]), atol=TOL, rtol=0)


def test_smoe_scale_is_zero_where_channels_agree():
    a = np.full((1, 8, 3, 3), 2.5, dtype=np.float32)  # all channels equal: no information
    assert np.abs(smoe_scale(torch.from_numpy(a)).numpy()).max() < 1e-6


def test_smoe_scale_other_eps(rng):
    a = relu_activation(rng, 16, 5, 5)
    got = smoe_scale(torch.from_numpy(a), eps=1e-3).numpy()
    np.testing.assert_allclose(got[0, 0], ref.smoe_scale(a[0], eps=1e-3), atol=TOL, rtol=0)


def test_gaussian_cdf_matches_formula(rng):
    x = rng.normal(3.0, 2.0, size=(2, 1, 13, 7)).astype(np.float32)
    got = gaussian_cdf(torch.from_numpy(x)).numpy()
    for n in range(2):
        np.testing.assert_allclose(got[n, 0], ref.gaussian_cdf(x[n, 0].astype(np.float64)), atol=TOL, rtol=0)
    assert got.min() >= 0 and got.max() <= 1


def test_gaussian_cdf_constant_map_is_finite():
    x = torch.ones(1, 1, 4, 4)
    out = gaussian_cdf(x)
    assert torch.isfinite(out).all()


def test_gamma_cdf_matches_scipy(rng):
    # realistic SMOE maps: positive, skewed
    raw = np.stack([ref.smoe_scale(a) for a in relu_activation(rng, 32, 12, 12)])[:, None].astype(np.float32)
    got = gamma_cdf(torch.from_numpy(raw)).numpy()
    for n in range(2):
        np.testing.assert_allclose(got[n, 0], ref.gamma_cdf(raw[n, 0]), atol=TOL, rtol=0)


@pytest.mark.parametrize("weights", [None, [0.18, 0.15, 0.37]])
def test_smoe_combination_matches_reference(rng, weights):
    acts = [relu_activation(rng, 8, 16, 16), relu_activation(rng, 16, 8, 8), relu_activation(rng, 32, 4, 4)]
    w = weights or [1.0, 1.0, 1.0]
    combined, scales = smoe_maps([torch.from_numpy(a) for a in acts], (8, 8), w)
    assert combined.shape == (2, 1, 8, 8) and scales.shape == (2, 3, 8, 8)
    for n in range(2):
        want_c, want_s = ref.smoe_combined([a[n] for a in acts], (8, 8), weights)
        np.testing.assert_allclose(scales[n].numpy(), want_s, atol=TOL, rtol=0)
        np.testing.assert_allclose(combined[n, 0].numpy(), want_c, atol=TOL, rtol=0)


def test_bilinear_reference_agrees_with_upsampling_and_downsampling(rng):
    # the reference resize itself, against torch, both directions (guards the reference)
    m = rng.random((7, 10))
    for size in [(14, 20), (3, 4), (7, 10)]:
        want = torch.nn.functional.interpolate(torch.from_numpy(m)[None, None], size=size, mode="bilinear",
                                               align_corners=False)[0, 0].numpy()
        np.testing.assert_allclose(ref.resize_bilinear(m, size), want, atol=1e-9)


@pytest.mark.parametrize("score", ["logit", "softmax"])
@pytest.mark.parametrize("variant", ["onehot", "gaussian3x3"])
def test_recipro_cam_gap_shortcut_matches_masked_copies(rng, score, variant):
    """The GAP+linear shortcut equals running every masked copy through GAP + linear."""
    fmap = relu_activation(rng, 12, 5, 6, zero_share=0.3)
    weight = rng.normal(size=(9, 12)).astype(np.float32)
    bias = rng.normal(size=9).astype(np.float32)
    target = torch.tensor([3, 7])
    got = rc.recipro_cam_gap_linear(torch.from_numpy(fmap), torch.from_numpy(weight), torch.from_numpy(bias),
                                    target, score, variant).numpy()
    assert got.shape == (2, 1, 5, 6)
    for n in range(2):
        want = ref.recipro_cam(fmap[n], ref.gap_linear_head(weight, bias), int(target[n]), score, variant)
        np.testing.assert_allclose(got[n, 0], want, atol=TOL, rtol=0)
        assert got[n].min() == 0.0 and abs(got[n].max() - 1.0) < 1e-6


@pytest.mark.parametrize("variant", ["onehot", "gaussian3x3"])
def test_recipro_cam_general_path_matches_reference(rng, variant):
    """General path: a non-GAP head (flatten + MLP) on the masked batch."""
    c, h, w, k = 6, 4, 4, 5
    head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(c * h * w, 16), torch.nn.ReLU(),
                               torch.nn.Linear(16, k)).double()
    fmap = relu_activation(rng, c, h, w, zero_share=0.2).astype(np.float64)
    masks = rc.spatial_masks(h, w, variant).double()
    target = torch.tensor([1, 4])
    with torch.no_grad():
        out = head(rc.masked_copies(torch.from_numpy(fmap), masks))
        got = rc.recipro_cam_from_batch(out, target, (h, w), "softmax").numpy()

    def np_head(maps):
        with torch.no_grad():
            return head(torch.from_numpy(maps)).numpy()

    for n in range(2):
        want = ref.recipro_cam(fmap[n], np_head, int(target[n]), "softmax", variant)
        np.testing.assert_allclose(got[n, 0], want, atol=TOL, rtol=0)
