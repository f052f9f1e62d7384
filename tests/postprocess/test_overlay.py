"""camcore.overlay against the OpenCV chain it fuses (overlay_reference)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from camcore.postprocess import COLORMAPS, colorize, overlay, overlay_reference, resize_cam

# (cam height, cam width, image height, image width)
SIZES = [
    (7, 7, 224, 224),
    (14, 14, 720, 1280),
    (1, 1, 64, 48),
    (300, 400, 224, 224),  # cam bigger than the image
    (13, 9, 100, 37),
]
ALPHAS = [0.0, 0.3, 0.5, 0.75, 1.0]


def _data(seed: int, h: int, w: int, height: int, width: int):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    cam = rng.random((h, w), dtype=np.float32) * np.float32(1.2) - np.float32(0.1)  # some clipping
    return image, cam


def _max_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


@pytest.mark.parametrize("colormap", COLORMAPS)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "cam{}x{}-img{}x{}".format(*s))
def test_matches_opencv_chain(size, colormap):
    image, cam = _data(0, *size)
    for rgb in (True, False):
        for alpha in ALPHAS:
            got = overlay(image, cam, alpha, colormap, rgb)
            want = overlay_reference(image, cam, alpha, colormap, rgb)
            assert _max_diff(got, want) <= 1, (rgb, alpha)


@pytest.mark.parametrize("size", SIZES[:2], ids=lambda s: "cam{}x{}-img{}x{}".format(*s))
def test_normalize_matches_reference(size):
    image, cam = _data(1, *size)
    cam = cam * np.float32(10) - np.float32(3)
    got = overlay(image, cam, 0.4, "turbo", normalize=True)
    want = overlay_reference(image, cam, 0.4, "turbo", normalize=True)
    assert _max_diff(got, want) <= 1
    # Min-max scaling is what normalize means.
    lo, hi = cam.min(), cam.max()
    np.testing.assert_array_equal(got, overlay(image, (cam - lo) / (hi - lo), 0.4, "turbo"))


def test_normalize_constant_map_is_zero_heat():
    image, _ = _data(2, 1, 1, 32, 32)
    cam = np.full((5, 5), 3.0, np.float32)
    zeros = np.zeros_like(cam)
    np.testing.assert_array_equal(overlay(image, cam, normalize=True), overlay(image, zeros))


def test_alpha_extremes():
    image, cam = _data(3, 7, 7, 50, 60)
    np.testing.assert_array_equal(overlay(image, cam, alpha=0.0), image)
    heat = colorize(resize_cam(cam, (50, 60)), "jet")
    np.testing.assert_array_equal(overlay(image, cam, alpha=1.0), heat)


def test_rgb_flag_swaps_channel_order():
    image, cam = _data(4, 7, 7, 40, 40)
    rgb = overlay(image, cam, 0.5, "viridis", rgb=True)
    bgr = overlay(image[..., ::-1], cam, 0.5, "viridis", rgb=False)
    np.testing.assert_array_equal(rgb, bgr[..., ::-1])


def test_non_finite_values():
    """NaN counts as 0, +Inf as 1 and -Inf as 0 (replaced before resizing)."""
    image, cam = _data(5, 7, 7, 64, 64)
    cam[0, 0], cam[3, 4], cam[6, 6] = np.nan, np.inf, -np.inf
    clean = cam.copy()
    clean[0, 0], clean[3, 4], clean[6, 6] = 0.0, 1.0, 0.0
    got = overlay(image, cam)
    np.testing.assert_array_equal(got, overlay(image, clean))
    assert _max_diff(got, overlay_reference(image, cam)) <= 1
    all_nan = np.full((3, 3), np.nan, np.float32)
    np.testing.assert_array_equal(overlay(image, all_nan), overlay(image, np.zeros((3, 3), np.float32)))
    np.testing.assert_array_equal(overlay(image, all_nan, normalize=True), overlay(image, np.zeros((3, 3), np.float32)))


def test_threads_do_not_change_the_result():
    image, cam = _data(6, 14, 14, 720, 1280)
    one = overlay(image, cam, 0.3, "inferno", threads=1)
    np.testing.assert_array_equal(one, overlay(image, cam, 0.3, "inferno", threads=2))
    np.testing.assert_array_equal(one, overlay(image, cam, 0.3, "inferno", threads=7))
    np.testing.assert_array_equal(one, overlay(image, cam, 0.3, "inferno", threads=None))


def test_concurrent_python_threads():
    image, cam = _data(7, 14, 14, 360, 640)
    want = overlay(image, cam)
    results: list[np.ndarray] = []

    def work():
        results.extend(overlay(image, cam, threads=1) for _ in range(5))

    workers = [threading.Thread(target=work) for _ in range(4)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert len(results) == 20
    for r in results:
        np.testing.assert_array_equal(r, want)


def test_out_argument_and_in_place():
    image, cam = _data(8, 7, 7, 48, 64)
    want = overlay(image, cam, 0.6, "hot")
    out = np.empty_like(image)
    assert overlay(image, cam, 0.6, "hot", out=out) is out
    np.testing.assert_array_equal(out, want)
    frame = image.copy()
    overlay(frame, cam, 0.6, "hot", out=frame)
    np.testing.assert_array_equal(frame, want)
    # A crop of a bigger buffer is a valid `out` (rows are strided, pixels packed).
    canvas = np.zeros((60, 80, 3), np.uint8)
    overlay(image, cam, 0.6, "hot", out=canvas[5:53, 10:74])
    np.testing.assert_array_equal(canvas[5:53, 10:74], want)
    assert not canvas[:5].any() and not canvas[53:].any()


def test_layouts_and_dtypes_give_the_same_result():
    image, cam = _data(9, 7, 7, 80, 90)
    want = overlay(image, cam)
    big = np.zeros((100, 120, 3), np.uint8)
    big[10:90, 20:110] = image
    np.testing.assert_array_equal(overlay(big[10:90, 20:110], cam), want)  # strided crop, no copy
    np.testing.assert_array_equal(overlay(np.asfortranarray(image), cam), want)  # copied
    np.testing.assert_array_equal(overlay(image, cam.astype(np.float64)), want)
    np.testing.assert_array_equal(overlay(image, np.asfortranarray(cam)), want)
    np.testing.assert_array_equal(overlay(image, cam.tolist()), want)


def test_case_insensitive_colormap():
    image, cam = _data(10, 7, 7, 20, 20)
    np.testing.assert_array_equal(overlay(image, cam, colormap="JeT"), overlay(image, cam))
