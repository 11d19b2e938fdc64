"""The sample photographs come back as OpenCV frames: BGR uint8 with 3 channels, whatever
scikit-image stores (grey, RGB, RGBA)."""
import numpy as np
import pytest
import skimage.data

from edge_saliency import samples


@pytest.mark.parametrize("name", ["chelsea", "camera", "logo"])  # RGB, grey, RGBA
def test_photo_is_a_bgr_frame(name):
    frame = samples.photo(name)
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    rgb = skimage.data.__dict__[name]()
    if rgb.ndim == 2:
        rgb = np.stack([rgb] * 3, axis=-1)
    np.testing.assert_array_equal(frame, rgb[:, :, 2::-1])  # B, G, R of the stored R, G, B(, A)
