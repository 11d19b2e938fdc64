"""Render views, HUD, LOVI legend, banner, and the salient region used by the JSON log."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_saliency import contract
from edge_saliency.pipeline import lovi
from edge_saliency.runtime.model import Result
from edge_saliency.pipeline.region import salient_region
from edge_saliency.pipeline.render import VIEWS, HudStats, Renderer, available_views, draw_banner

SCALES = ["_blocks.0._act1", "_blocks.2._act1", "_blocks.4._act1", "_blocks.10._act1", "_act_head"]


def blob(h, w, cy, cx, sigma):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2)).astype(np.float32)


def make_result(smoe=None, recipro=None, scales=None):
    smoe = blob(56, 56, 14, 42, 5) if smoe is None else smoe
    recipro = blob(7, 7, 2, 5, 1.2) if recipro is None else recipro
    scales = np.stack([blob(56, 56, 14, 42, 3 + i) for i in range(5)]) if scales is None else scales
    return Result(class_index=285, label="Egyptian cat", score=0.8, topk=[("Egyptian cat", 0.8), ("tabby", 0.1)],
                  logits=np.zeros(1000, np.float32), smoe=smoe, smoe_scales=scales, recipro_cam=recipro)


@pytest.fixture
def frame():
    rng = np.random.default_rng(1)
    return rng.integers(60, 200, (480, 640, 3), dtype=np.uint8)


def test_every_view_renders_at_frame_size(frame):
    r = make_result()
    for view in VIEWS:
        out = Renderer(view=view, scale_names=SCALES).render(frame, r, HudStats(fps=30))
        assert out.dtype == np.uint8
        assert out.shape == ((480, 1280, 3) if view == "side" else frame.shape), view


def test_raw_without_hud_is_the_frame_and_alpha_zero_too(frame):
    r = make_result()
    assert np.array_equal(Renderer(view="raw", hud=False).render(frame, r), frame)
    out = Renderer(view="heatmap", alpha=0.0, hud=False).render(frame, r)
    assert np.abs(out.astype(int) - frame).max() <= 1


def test_heatmap_is_the_upsampled_colour_map_and_peaks_where_the_map_does(frame):
    r = make_result()
    out = Renderer(view="heatmap", alpha=1.0, hud=False, colormap="jet").render(frame, r)
    m = r.smoe
    u8 = ((m - m.min()) * (255 / (m.max() - m.min()))).astype(np.uint8)
    expected = cv2.applyColorMap(cv2.resize(u8, (640, 480), interpolation=cv2.INTER_LINEAR), cv2.COLORMAP_JET)
    assert np.abs(out.astype(int) - expected).max() <= 1
    # JET: hot = red. The map's peak at (14, 42) of 56x56 -> frame (120, 480)
    red = (out[..., 2].astype(int) - out[..., 0]) > 100
    ys, xs = np.nonzero(red)
    assert abs(ys.mean() - (14 + 0.5) * 480 / 56) < 15 and abs(xs.mean() - (42 + 0.5) * 640 / 56) < 15


def test_fastcam_is_smoe_times_recipro(frame):
    smoe = blob(56, 56, 14, 42, 8)
    recipro = blob(7, 7, 5, 1, 1.0)  # peaks elsewhere: the product sits between, class-specific
    r = make_result(smoe=smoe, recipro=recipro)
    prod = smoe * cv2.resize(recipro, (56, 56), interpolation=cv2.INTER_LINEAR)
    assert np.allclose(Renderer.map_of(r, "fastcam"), prod)
    a = Renderer(view="fastcam", alpha=1.0, hud=False).render(frame, r)
    b = Renderer(view="heatmap", alpha=1.0, hud=False).render(frame, r)
    assert np.abs(a.astype(int) - b).mean() > 10


def test_side_view_is_frame_then_map(frame):
    r = make_result()
    out = Renderer(view="side", hud=False).render(frame, r)
    assert np.array_equal(out[:, :640], frame)
    full_map = Renderer(view="fastcam", alpha=1.0, hud=False).render(frame, r)
    assert np.array_equal(out[:, 640:], full_map)


def test_lovi_view_blends_lovi_colours_by_their_value_and_draws_the_legend(frame):
    r = make_result()
    black = np.zeros_like(frame)
    colour = cv2.resize(lovi.lovi_display_bgr_u8(r.smoe_scales), (640, 480), interpolation=cv2.INTER_LINEAR)
    out = Renderer(view="lovi", alpha=0.5, hud=False, legend=False).render(black, r)
    v = colour.max(axis=-1, keepdims=True) / 255.0
    assert np.abs(out.astype(int) - colour * v**1.5).max() <= 2  # opacity v^1.5 at alpha 0.5
    full = Renderer(view="lovi", alpha=1.0, hud=False, legend=False).render(black, r)
    assert np.abs(full.astype(int) - colour * np.minimum(1, 2 * v**1.5)).max() <= 2
    white = np.full_like(frame, 255)
    over_white = Renderer(view="lovi", alpha=0.5, hud=False, legend=False).render(white, r)
    assert np.abs(over_white.astype(int) - (colour * v**1.5 + 255 * (1 - v**1.5))).max() <= 2
    # where no layer fires the frame shows through untouched (a constant blend would darken it)
    grey = np.full_like(frame, 128)
    unlit = colour.max(axis=-1) == 0
    assert unlit.mean() > 0.2
    assert np.all(Renderer(view="lovi", hud=False, legend=False).render(grey, r)[unlit] == 128)
    with_legend = Renderer(view="lovi", alpha=0.0, hud=False, scale_names=SCALES).render(black, r)
    for colour in lovi.scale_colours_bgr(5):  # each scale's pure colour is drawn in the legend swatches
        assert np.all(with_legend == colour, axis=-1).sum() > 20, colour


def test_hud_draws_labels_at_the_top_and_no_key_help(frame):
    r = make_result()
    on = Renderer(view="raw", hud=True).render(frame, r, HudStats(fps=31.0, inference=0.02))
    off = Renderer(view="raw", hud=False).render(frame, r)
    diff = np.any(on != off, axis=-1)
    assert diff[:60].any()  # labels at the top
    assert not diff[200:].any()  # no key help at the bottom: recordings and the daemon's stream have no keys
    helped = on.copy()
    rd = Renderer(view="raw", hud=True)
    rd.render(frame, r, HudStats(fps=31.0))
    rd.draw_help(helped)  # the window's copy gets it
    assert np.any(helped != on, axis=-1)[-40:].any()
    again = on.copy()
    rd.draw_help(again)  # the same render shown again (no new frame yet): the same help, not dropped
    assert np.array_equal(again, helped)


def test_hud_never_shows_zero_fps(frame):
    r = make_result()
    rd = Renderer(view="raw")
    rd.render(frame, r, HudStats(fps=0.0, inference=0.02))  # not measured: a dash, not "0.0 FPS"
    stats = dict(rd.texts)["stats"]
    assert stats.startswith("-- FPS") and "0.0 FPS" not in stats
    rd.render(frame, r, HudStats(fps=12.34, inference=0.02))
    assert dict(rd.texts)["stats"].startswith("12.3 FPS")
    assert "render" not in dict(rd.texts)["timings"]  # render time not measured: not shown as 0.0
    rd.render(frame, r, HudStats(fps=12.34, inference=0.02, render=0.0042))
    assert dict(rd.texts)["timings"].endswith("render 4.2")


SIZES = [(320, 240), (480, 360), (640, 480), (800, 600), (1280, 720), (1920, 1080)]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("view", ["lovi", "side", "fastcam"])
def test_hud_legend_and_help_never_overlap_and_stay_inside(size, view):
    w, h = size
    rng = np.random.default_rng(0)
    frame = rng.integers(60, 200, (h, w, 3), dtype=np.uint8)
    r = make_result()
    r.topk = [("Egyptian cat, a long label for a small frame", 0.81), ("tabby, tabby cat", 0.1), ("tiger cat", 0.05)]
    stats = HudStats(fps=29.7, capture_wait=0.0012, preprocess=0.0021, inference=0.1234, render=0.0031, provider="openvino")
    rd = Renderer(view=view, scale_names=SCALES)
    rd.side_view = "lovi"  # side by side with the LOVI map: the legend is drawn too
    out = rd.render(frame, r, stats)
    rd.draw_help(out)
    kinds = [k for k, _ in rd.boxes]
    assert kinds.count("label") == 3 and "stats" in kinds and "timings" in kinds and "help" in kinds
    assert kinds.count("legend-swatch") == (6 if view in ("lovi", "side") else 0)  # one per layer + "all agree"
    H, W = out.shape[:2]
    for i, (ka, a) in enumerate(rd.boxes):
        assert 0 <= a[0] < a[2] <= W and 0 <= a[1] < a[3] <= H, (ka, a, (W, H))
        for kb, b in rd.boxes[i + 1:]:
            overlap = a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
            assert not overlap, (size, ka, a, kb, b)
    # the boxes are honest: everything the HUD, legend and help painted lies inside them
    bare = Renderer(view=view, scale_names=SCALES, hud=False, legend=False)
    bare.side_view = "lovi"
    painted = np.any(out != bare.render(frame, r), axis=-1)
    inside = np.zeros_like(painted)
    for _, (x0, y0, x1, y1) in rd.boxes:
        inside[y0:y1, x0:x1] = True
    assert painted.any() and not (painted & ~inside).any()


def test_views_a_model_cannot_show_are_refused():
    outs = [contract.LOGITS, contract.TARGET, contract.SMOE, contract.SMOE_SCALES]
    assert available_views(outs) == ["heatmap", "fastcam", "lovi", "side", "raw"]
    with pytest.raises(ValueError, match="recipro"):
        Renderer(view="recipro", outputs=outs)
    with pytest.raises(ValueError, match="unknown view"):
        Renderer(view="gradcam")
    r = Renderer(view="heatmap", outputs=outs)
    assert not r.set_view("recipro") and r.view == "heatmap"
    assert r.next_view() == "fastcam"


def test_banner_marks_the_middle():
    img = np.zeros((240, 320, 3), np.uint8)
    draw_banner(img, "NO SIGNAL")
    assert (img[120, :, 2] > 100).mean() > 0.5 and img[10].max() == 0


def test_salient_region_box_and_centroid_in_frame_pixels():
    m = np.zeros((56, 56), np.float32)
    m[10:20, 30:46] = 1.0
    m[40:42, 2:4] = 0.9  # a second, separate blob: not part of the peak's region
    reg = salient_region(m, (640, 480))
    sx, sy = 640 / 56, 480 / 56
    assert reg["box"] == [round(30 * sx), round(10 * sy), round(46 * sx), round(20 * sy)]
    assert reg["centroid"] == pytest.approx([38 * sx, 15 * sy], abs=0.1)
    assert reg["area"] == pytest.approx(160 / 56**2, abs=1e-4)
    assert salient_region(np.zeros((7, 7), np.float32), (640, 480)) is None
