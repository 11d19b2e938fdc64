"""LOVI colouring against a plain numpy reference written from docs/design.md (no OpenCV in the reference)."""
from __future__ import annotations

import numpy as np
import pytest

from edge_saliency.pipeline import lovi


def hsv_to_rgb_reference(h, s, v):
    """Textbook HSV -> RGB, h in degrees [0, 360), s and v in [0, 1]."""
    c = v * s
    hp = (h / 60.0) % 6.0
    x = c * (1 - np.abs(hp % 2 - 1))
    z = np.zeros_like(c)
    sector = np.floor(hp).astype(int)
    table = [(c, x, z), (x, c, z), (z, c, x), (z, x, c), (x, z, c), (c, z, x)]
    r = np.select([sector == i for i in range(6)], [t[0] for t in table])
    g = np.select([sector == i for i in range(6)], [t[1] for t in table])
    b = np.select([sector == i for i in range(6)], [t[2] for t in table])
    m = v - c
    return np.stack([r + m, g + m, b + m], axis=-1)


def lovi_reference(scales):
    """Per pixel, straight from the formula."""
    p = np.asarray(scales, dtype=np.float64)
    S = p.shape[0]
    p = (p - p.min()) / (p.max() - p.min()) if p.max() > p.min() else np.zeros_like(p)
    out = np.zeros(p.shape[1:] + (3,))
    for i in range(p.shape[1]):
        for j in range(p.shape[2]):
            pc = p[:, i, j]
            if pc.sum() == 0:
                continue  # black
            if S == 1:
                hue, sat = 0.0, 1.0
            else:
                pos = np.array([1 - c / (S - 1) for c in range(S)])
                hue = 300.0 * (pc * pos).sum() / pc.sum()
                sat = 1 - (pc.sum() / (S * pc.max()) - 1 / S) / (1 - 1 / S)
            rgb = hsv_to_rgb_reference(np.array(hue), np.array(sat), np.array(pc.max()))
            out[i, j] = rgb[::-1]  # BGR
    return out


def test_matches_reference_on_random_maps():
    rng = np.random.default_rng(0)
    scales = rng.random((5, 9, 11)).astype(np.float32) * 0.7 + 0.1
    np.testing.assert_allclose(lovi.lovi_bgr(scales), lovi_reference(scales), atol=1e-4)


def test_matches_reference_on_real_model_output(lite0_model):
    from edge_saliency import samples

    r = lite0_model.predict(samples.photo("chelsea"))
    small = r.smoe_scales[:, ::4, ::4]  # keep the per-pixel reference quick
    np.testing.assert_allclose(lovi.lovi_bgr(small), lovi_reference(small), atol=1e-4)


def test_all_zero_is_black():
    out = lovi.lovi_bgr(np.zeros((5, 4, 4), np.float32))
    assert out.shape == (4, 4, 3)
    assert np.all(out == 0)


def test_one_scale_lit_gives_its_pure_colour():
    S = 5
    scales = np.zeros((S, 3, 3), np.float32)
    scales[0, 1, 1] = 1.0  # earliest scale only: hue 300 (magenta), saturated
    scales[S - 1, 0, 0] = 1.0  # latest scale only: hue 0 (red)
    scales[2, 2, 2] = 0.5  # middle scale, half intensity: hue 150
    out = lovi.lovi_bgr(scales)
    np.testing.assert_allclose(out[1, 1], [1.0, 0.0, 1.0], atol=1e-4)  # BGR magenta
    np.testing.assert_allclose(out[0, 0], [0.0, 0.0, 1.0], atol=1e-4)  # BGR red
    np.testing.assert_allclose(out[2, 2], lovi_reference(scales)[2, 2], atol=1e-4)
    hsv = lovi.lovi_hsv(scales)
    assert hsv[2, 2, 0] == pytest.approx(150.0)
    assert hsv[2, 2, 1] == pytest.approx(1.0)
    assert hsv[2, 2, 2] == pytest.approx(0.5)
    assert np.all(out[0, 1] == 0)  # unlit pixel stays black


def test_every_layer_agreeing_is_white():
    scales = np.ones((4, 2, 2), np.float32)
    scales[:, 0, 0] = 0.0  # range normalisation needs a spread
    out = lovi.lovi_bgr(scales)
    np.testing.assert_allclose(out[1, 1], [1.0, 1.0, 1.0], atol=1e-5)


def test_single_scale_model_is_a_red_intensity_map():
    scales = np.array([[[0.0, 0.5], [1.0, 0.25]]], np.float32)
    out = lovi.lovi_bgr(scales)
    np.testing.assert_allclose(out[..., 2], scales[0], atol=1e-4)
    np.testing.assert_allclose(out[..., :2], 0.0, atol=1e-4)
    np.testing.assert_allclose(out, lovi_reference(scales), atol=1e-4)


def test_legend_colours_are_the_single_scale_colours():
    colours = lovi.scale_colours_bgr(5)
    assert colours[0] == (255, 0, 255)
    assert colours[-1] == (0, 0, 255)
    for c, colour in enumerate(colours):
        scales = np.zeros((5, 1, 2), np.float32)
        scales[c, 0, 0] = 1.0
        assert tuple(lovi.lovi_bgr_u8(scales)[0, 0]) == colour


def test_bad_shape_is_an_error():
    with pytest.raises(ValueError, match=r"^LOVI wants \[S, h, w\] scale maps, got shape \(4, 4\)$"):
        lovi.lovi_bgr(np.zeros((4, 4), np.float32))


def test_display_weights_remove_the_common_floor_so_one_layer_shows_its_own_colour():
    # Gaussian-CDF normalised maps sit near 0.5 almost everywhere; one layer fires at one spot
    rng = np.random.default_rng(3)
    S = 5
    scales = (0.5 + 0.02 * rng.standard_normal((S, 20, 20))).astype(np.float32)
    scales[1, 5, 5] = 1.0  # layer 1 (hue 225, blue) alone
    scales[:, 15, 15] = 0.95  # every layer at once: white
    scales[:, 0, 0] = 0.0  # and, like real maps, each spans 0..1
    bare = lovi.lovi_hsv(scales)
    assert bare[5, 5, 1] < 0.6 and 100 < bare[5, 5, 0] < 200  # fed as is: pale and pulled to the middle hue
    assert bare[..., 2].mean() > 0.4  # and the floor lights the whole frame
    shown = lovi.lovi_hsv(lovi.display_weights(scales))
    assert shown[5, 5, 0] == pytest.approx(225.0, abs=2) and shown[5, 5, 1] > 0.97
    assert shown[15, 15, 1] < 0.05 and shown[15, 15, 2] > 0.85  # agreement stays white
    assert np.median(shown[..., 2]) < 0.1  # where no layer stands out: near black (the frame shows through)
    w = lovi.display_weights(scales)
    assert w.min() >= 0 and w.max() <= 1 and np.allclose(w.max(axis=(1, 2)), 1.0)
    np.testing.assert_array_equal(lovi.lovi_display_bgr_u8(scales), lovi.lovi_bgr_u8(w))
