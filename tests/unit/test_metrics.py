"""Quality metrics against numpy references on hand-made cases whose answers are known."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from edge_saliency.quality import metrics
from edge_saliency.errors import UserError

H, W = 16, 16
BOX = (slice(4, 8), slice(0, 16))  # rows 4..7: 64 pixels, a quarter of the image
AREA = 64 / 256


def box_image(inside=255, outside=0):
    img = np.full((H, W, 3), outside, dtype=np.uint8)
    img[BOX] = inside
    return img


def box_map():
    m = np.zeros((H, W), dtype=np.float32)
    m[BOX] = 1
    return m


def box_brightness_probs(batch):
    """Toy classifier: P(class 1) = mean brightness inside the box / 255, P(class 0) = the rest."""
    p1 = batch[:, BOX[0], BOX[1]].astype(np.float64).mean(axis=(1, 2, 3)) / 255.0
    return np.stack([1 - p1, p1], axis=1)


def sigmoid_box_probs(batch, k=4.0):
    """Toy classifier with softmax scores: logits [0, k * mean brightness in box / 255]."""
    b = batch[:, BOX[0], BOX[1]].astype(np.float64).mean(axis=(1, 2, 3)) / 255.0
    logits = np.stack([np.zeros_like(b), k * b], axis=1)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def threshold_explainer(image):
    """A 'method' whose map is where the image is bright: on image * (box map) it finds the box again."""
    return (image.mean(axis=2) > 127).astype(np.float32)


# ---------------------------------------------------------------- ADCC
def adcc_reference(y, o, r, comp):
    ad = max(0.0, y - o) / y
    coh = (r + 1) / 2
    return 3 / (1 / coh + 1 / (1 - comp) + 1 / (1 - ad))


def test_adcc_map_covering_exactly_the_object():
    img = box_image(200, 60)
    parts = metrics.adcc_parts(sigmoid_box_probs, img, box_map(), 1, threshold_explainer)
    # the box is untouched by image * map, so the score does not drop; the map is found again
    assert parts["avg_drop"] == pytest.approx(0.0, abs=1e-12)
    assert parts["coherency"] == pytest.approx(1.0)
    assert parts["complexity"] == pytest.approx(AREA)
    assert parts["adcc"] == pytest.approx(3 / (1 + 1 / (1 - AREA) + 1))


def test_adcc_map_on_the_background_drops_the_score_by_the_formula():
    img = box_image(200, 60)
    bg = 1 - box_map()
    parts = metrics.adcc_parts(sigmoid_box_probs, img, bg, 1, lambda im: bg)
    y = 1 / (1 + np.exp(-4 * 200 / 255))  # softmax of [0, 4 b] for class 1
    o = 0.5  # the box is black in image * map
    assert parts["clean_score"] == pytest.approx(y)
    assert parts["masked_score"] == pytest.approx(o)
    assert parts["avg_drop"] == pytest.approx((y - o) / y)
    assert parts["complexity"] == pytest.approx(1 - AREA)
    assert parts["coherency"] == pytest.approx(1.0)
    assert parts["adcc"] == pytest.approx(adcc_reference(y, o, 1.0, 1 - AREA))


def test_average_drop_is_zero_when_the_score_rises():
    assert metrics.average_drop(0.5, 0.9) == 0.0
    assert metrics.average_drop(0.8, 0.2) == pytest.approx(0.75)


def test_adcc_is_the_harmonic_mean_and_zero_at_the_edges():
    for coh, comp, ad in [(0.9, 0.3, 0.2), (0.6, 0.1, 0.5), (1.0, 0.0, 0.0)]:
        hm = 3 / (1 / coh + 1 / (1 - comp) + 1 / (1 - ad))
        assert metrics.adcc(ad, coh, comp) == pytest.approx(hm)
    assert metrics.adcc(1.0, 0.9, 0.2) == 0.0
    assert metrics.adcc(0.1, 0.9, 1.0) == 0.0
    assert metrics.adcc(0.0, 1.0, 0.0) == pytest.approx(1.0)


def test_coherency_matches_numpy_pearson():
    rng = np.random.default_rng(1)
    a, b = rng.random((7, 9)), rng.random((7, 9))
    assert metrics.coherency(a, b) == pytest.approx((np.corrcoef(a.ravel(), b.ravel())[0, 1] + 1) / 2)
    assert metrics.coherency(a, 1 - a) == pytest.approx(0.0, abs=1e-12)
    assert metrics.coherency(a, 3 * a + 1) == pytest.approx(1.0)


def test_coherency_resizes_the_second_map():
    a = np.zeros((8, 8), np.float32)
    a[:, :4] = 1
    b = np.zeros((2, 2), np.float32)
    b[:, 0] = 1  # the same left half at a coarser resolution
    assert metrics.coherency(a, b) > 0.9


# ---------------------------------------------------------------- insertion / deletion
def test_insertion_deletion_of_the_exact_object_map():
    img = box_image(255, 0)
    r = metrics.insertion_deletion(box_brightness_probs, img, box_map(), 1, steps=16,
                                   insert_from=np.zeros_like(img))
    # deletion: the score falls linearly to 0 over the first quarter of pixels; insertion rises to 1
    assert r["deletion"] == pytest.approx(AREA / 2)
    assert r["insertion"] == pytest.approx(1 - AREA / 2)


def test_insertion_deletion_of_the_inverted_map():
    img = box_image(255, 0)
    r = metrics.insertion_deletion(box_brightness_probs, img, 1 - box_map(), 1, steps=16,
                                   insert_from=np.zeros_like(img))
    assert r["deletion"] == pytest.approx(1 - AREA / 2)
    assert r["insertion"] == pytest.approx(AREA / 2)


def test_insertion_deletion_matches_a_pixel_loop_reference():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    sal = rng.random((H, W)).astype(np.float32)
    canvas = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    steps = 8
    r = metrics.insertion_deletion(box_brightness_probs, img, sal, 1, steps=steps, insert_from=canvas)
    order = sorted(range(H * W), key=lambda i: (-sal.ravel()[i], i))
    xs, ins, dele = [], [], []
    for s in range(steps + 1):
        k = round(s * H * W / steps)
        a, d = canvas.copy().reshape(-1, 3), img.copy().reshape(-1, 3)
        for i in order[:k]:
            a[i] = img.reshape(-1, 3)[i]
            d[i] = 0
        xs.append(k / (H * W))
        ins.append(box_brightness_probs(a.reshape(1, H, W, 3))[0, 1])
        dele.append(box_brightness_probs(d.reshape(1, H, W, 3))[0, 1])
    trap = lambda y: sum((y[i] + y[i + 1]) / 2 * (xs[i + 1] - xs[i]) for i in range(steps))  # noqa: E731
    assert r["insertion"] == pytest.approx(trap(ins))
    assert r["deletion"] == pytest.approx(trap(dele))


# ---------------------------------------------------------------- pointing game
def test_pointing_game_hits_misses_and_tolerance():
    sal = np.zeros((20, 30), np.float32)
    sal[5, 10] = 1.0  # argmax at x=10, y=5
    assert metrics.pointing_hit(sal, [[8, 3, 12, 7]], (20, 30), tolerance=0)
    assert not metrics.pointing_hit(sal, [[20, 10, 29, 19]], (20, 30), tolerance=0)
    assert not metrics.pointing_hit(sal, [[13, 0, 20, 10]], (20, 30), tolerance=0)
    assert metrics.pointing_hit(sal, [[13, 0, 20, 10]], (20, 30), tolerance=3)
    assert metrics.pointing_hit(sal, [[20, 10, 29, 19], [8, 3, 12, 7]], (20, 30), tolerance=0)


def test_pointing_game_in_original_pixels_for_a_coarse_map():
    sal = np.zeros((4, 4), np.float32)
    sal[3, 3] = 1.0  # bottom-right cell of a 4x4 map on a 400x400 image
    assert metrics.pointing_hit(sal, [[300, 300, 399, 399]], (400, 400), tolerance=0)
    assert not metrics.pointing_hit(sal, [[0, 0, 200, 200]], (400, 400), tolerance=15)


def test_read_boxes(tmp_path):
    p = tmp_path / "boxes.json"
    p.write_text(json.dumps({"cat": [[1, 2, 3, 4]], "cup": [5, 6, 7, 8]}))
    assert metrics.read_boxes(p) == {"cat": [[1, 2, 3, 4]], "cup": [[5, 6, 7, 8]]}
    p.write_text("{not json")
    with pytest.raises(UserError, match=rf"^boxes file {re.escape(str(p))} is not valid JSON: "):
        metrics.read_boxes(p)
    p.write_text(json.dumps({"cat": [[1, 2, 3]]}))
    with pytest.raises(UserError, match=rf"^boxes file {re.escape(str(p))}: 'cat' must be a list of \[x0, y0, x1, y1\] boxes$"):
        metrics.read_boxes(p)
    p.write_text(json.dumps([[1, 2, 3, 4]]))
    with pytest.raises(UserError, match=rf"^boxes file {re.escape(str(p))} must map image names to lists of "):
        metrics.read_boxes(p)
    with pytest.raises(UserError, match=rf"^boxes file not found: {re.escape(str(tmp_path / 'missing.json'))}$"):
        metrics.read_boxes(tmp_path / "missing.json")


# ---------------------------------------------------------------- reconstruction accuracy
def decide_box_bright(batch):
    """Decision: class 1 when the box is bright (> 128 on average), else class 0."""
    p1 = (batch[:, BOX[0], BOX[1]].astype(np.float64).mean(axis=(1, 2, 3)) > 128).astype(np.float64)
    return np.stack([1 - p1, p1], axis=1)


def test_keep_mask_keeps_exactly_the_top_fraction():
    rng = np.random.default_rng(0)
    sal = rng.random((H, W))
    m = metrics.keep_mask(sal, (H, W), 0.25)
    assert m.sum() == 64
    assert sal[m].min() > sal[~m].max()


def test_reconstruction_accuracy_known_answers():
    img = box_image(255, 0)
    fills = {"black": np.zeros_like(img), "white": np.full_like(img, 255), "grey": np.full_like(img, 100)}
    good = metrics.reconstruction_accuracy(decide_box_bright, img, box_map(), fills, keep=AREA)
    assert good["accuracy"] == 1.0
    # a map on the background keeps the background; the box then comes from the fill: only white keeps it bright
    bad = metrics.reconstruction_accuracy(decide_box_bright, img, 1 - box_map(), fills, keep=AREA)
    assert bad["unchanged"] == {"black": False, "white": True, "grey": False}
    assert bad["accuracy"] == pytest.approx(1 / 3)


def test_salient_input_composes_kept_pixels_over_the_fill():
    img = box_image(255, 0)
    fill = np.full_like(img, 77)
    out = metrics.salient_input(img, box_map(), AREA, fill)
    assert (out[BOX] == 255).all()
    rest = np.ones((H, W), bool)
    rest[BOX] = False
    assert (out[rest] == 77).all()


def test_reconstruction_fills_are_blur_noise_and_other_images_at_the_image_size():
    img = box_image(255, 0)
    other = np.full((H // 2, W * 2, 3), 9, np.uint8)  # another size: resized to the image's
    fills = metrics.reconstruction_fills(img, [other], seed=4)
    assert list(fills) == ["blur", "noise", "image0"]
    assert all(f.shape == img.shape and f.dtype == np.uint8 for f in fills.values())
    assert (fills["image0"] == 9).all()
    assert fills["blur"][BOX].mean() < 255 and fills["blur"].std() < img.std()  # the box is smeared out
    np.testing.assert_array_equal(fills["noise"], metrics.reconstruction_fills(img, seed=4)["noise"])
