"""resize_cam samples like cv2.resize(INTER_LINEAR) on float32."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from camcore.postprocess import resize_cam

# (source height, source width, destination height, destination width)
SIZES = [
    (7, 7, 224, 224),
    (14, 14, 720, 1280),
    (13, 9, 100, 37),
    (300, 400, 224, 224),  # downscale
    (64, 64, 32, 32),  # exact 2x downscale
    (5, 5, 5, 5),  # identity
    (7, 7, 7, 14),
    (1, 1, 20, 30),
    (1, 7, 20, 20),
    (7, 1, 20, 20),
]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: "{}x{}-to-{}x{}".format(*s))
def test_matches_cv2(size):
    h, w, height, width = size
    rng = np.random.default_rng(h * 1000 + w)
    cam = rng.random((h, w), dtype=np.float32) * np.float32(3) - np.float32(1)
    got = resize_cam(cam, (height, width))
    want = cv2.resize(cam, (width, height), interpolation=cv2.INTER_LINEAR)
    assert got.dtype == np.float32 and got.shape == (height, width)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    if h >= 2 and w >= 2 and cv2.ipp.useIPP():
        # Documented: bit-exact with OpenCV's IPP path for maps of at least 2 x 2.
        np.testing.assert_array_equal(got, want)


def test_threads_and_dtypes():
    cam = np.random.default_rng(1).random((14, 14))  # float64 is converted
    one = resize_cam(cam, (480, 640), threads=1)
    np.testing.assert_array_equal(one, resize_cam(cam, (480, 640), threads=2))
    np.testing.assert_array_equal(one, resize_cam(cam.astype(np.float32), (480, 640)))
