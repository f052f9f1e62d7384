"""camcore.overlay against the OpenCV chain it fuses (overlay_reference)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from camcore import _core
from camcore.postprocess import COLORMAPS, colorize, overlay, overlay_reference, resize_cam

OPENCV_MAPS = tuple(n for n in COLORMAPS if not n.startswith("mpl_"))

# (cam height, cam width, image height, image width)
SIZES = [
    (7, 7, 224, 224),
    (14, 14, 720, 1280),
    (1, 1, 64, 48),
    (300, 400, 224, 224),  # cam bigger than the image
    (13, 9, 100, 37),
]
ALPHAS = [0.0, 0.3, 0.5, 0.75, 1.0]
DYADIC = [0.0, 0.25, 0.5, 0.75, 1.0, 77 / 256]  # multiples of 1/256: pixel-identical to addWeighted


def _data(seed: int, h: int, w: int, height: int, width: int):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    cam = rng.random((h, w), dtype=np.float32) * np.float32(1.2) - np.float32(0.1)  # some clipping
    return image, cam


def _max_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


@pytest.mark.parametrize("colormap", OPENCV_MAPS)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "cam{}x{}-img{}x{}".format(*s))
def test_matches_opencv_chain(size, colormap):
    image, cam = _data(0, *size)
    for rgb in (True, False):
        for alpha in ALPHAS:
            got = overlay(image, cam, alpha, colormap, rgb)
            want = overlay_reference(image, cam, alpha, colormap, rgb)
            assert _max_diff(got, want) <= 1, (rgb, alpha)
        for alpha in DYADIC if min(size) > 1 else []:
            # The colour level is exact and the blend of a dyadic alpha too: identical pixels.
            np.testing.assert_array_equal(
                overlay(image, cam, alpha, colormap, rgb), overlay_reference(image, cam, alpha, colormap, rgb)
            )


@pytest.mark.parametrize("simd", ["scalar", "sse2", "avx2"])
def test_simd_levels_agree(simd):
    """Every kernel set (picked at run time from the CPU) gives the same pixels."""
    image, cam = _data(11, 14, 14, 123, 517)  # odd widths exercise the scalar tails
    image4 = np.concatenate([image, image[..., :1]], axis=-1)
    want = [overlay(image, cam, a, "turbo", alpha_from_cam=p) for a in (0.3, 0.5) for p in (False, True)]
    want4 = overlay(image4, cam, 0.6)
    previous = _core.simd()
    try:
        if _core._set_simd(simd) != simd:
            pytest.skip(f"this CPU lacks {simd}")
        got = [overlay(image, cam, a, "turbo", alpha_from_cam=p) for a in (0.3, 0.5) for p in (False, True)]
        got4 = overlay(image4, cam, 0.6)
    finally:
        _core._set_simd(previous)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    np.testing.assert_array_equal(got4, want4)


@pytest.mark.parametrize("scale", [1.0, 9.9e5, 1.1e6, 3e9])
def test_large_map_values_clip_like_opencv_on_every_kernel_set(scale):
    """Maps beyond [0, 1] by a little or by a lot (AVX2 drops the clamps below 2^20 and lets
    saturating packs clip): every kernel set gives OpenCV's pixels."""
    rng = np.random.default_rng(int(scale) % 1000)
    image = rng.integers(0, 256, (61, 97, 3), dtype=np.uint8)
    cam = (rng.random((5, 6), dtype=np.float32) * 2 - 0.5) * np.float32(scale)
    cam[0, :3] = [1.0, np.nextafter(np.float32(1), np.float32(2)), -np.float32(scale)]
    want = overlay_reference(image, cam, 0.5)
    previous = _core.simd()
    try:
        for simd in ("scalar", "sse2", "avx2"):
            if _core._set_simd(simd) == simd:
                np.testing.assert_array_equal(overlay(image, cam, 0.5), want, err_msg=simd)
    finally:
        _core._set_simd(previous)


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


def test_value_range_is_a_fixed_scaling():
    image, cam = _data(12, 7, 7, 60, 80)
    raw = cam * np.float32(4) + np.float32(2)
    got = overlay(image, raw, 0.5, value_range=(2.0, 6.0))
    want = overlay_reference(image, raw, 0.5, value_range=(2.0, 6.0))
    assert _max_diff(got, want) <= 1
    np.testing.assert_array_equal(got, overlay(image, (raw - np.float32(2)) / np.float32(4), 0.5))
    # Unlike normalize, a fixed range keeps colours stable when the map's own extremes move.
    np.testing.assert_array_equal(
        overlay(image, raw * 0, 0.5, value_range=(2.0, 6.0)), overlay(image, np.zeros_like(raw), 0.5)
    )


@pytest.mark.parametrize("alpha", [0.3, 0.5, 1.0])
def test_alpha_from_cam_makes_cold_regions_transparent(alpha):
    image, cam = _data(13, 9, 11, 90, 120)
    got = overlay(image, cam, alpha, "inferno", alpha_from_cam=True)
    want = overlay_reference(image, cam, alpha, "inferno", alpha_from_cam=True)
    assert _max_diff(got, want) <= 1
    cold = np.zeros((9, 11), np.float32)
    np.testing.assert_array_equal(overlay(image, cold, alpha, alpha_from_cam=True), image)


@pytest.mark.parametrize("rgb", [True, False])
def test_four_channel_frames_keep_their_alpha_channel(rgb):
    image, cam = _data(14, 7, 7, 50, 70)
    rgba = np.concatenate([image, np.arange(50 * 70, dtype=np.uint8).reshape(50, 70, 1)], axis=-1)
    got = overlay(rgba, cam, 0.4, "viridis", rgb)
    assert got.shape == rgba.shape
    np.testing.assert_array_equal(got[..., 3], rgba[..., 3])
    np.testing.assert_array_equal(got[..., :3], overlay(image, cam, 0.4, "viridis", rgb))
    assert _max_diff(got, overlay_reference(rgba, cam, 0.4, "viridis", rgb)) <= 1
    frame = rgba.copy()
    overlay(frame, cam, 0.4, "viridis", rgb, out=frame, alpha_from_cam=True)
    np.testing.assert_array_equal(frame, overlay(rgba, cam, 0.4, "viridis", rgb, alpha_from_cam=True))


def test_batch_matches_frame_by_frame():
    rng = np.random.default_rng(15)
    images = rng.integers(0, 256, (5, 40, 64, 3), dtype=np.uint8)
    cams = rng.random((5, 7, 9), dtype=np.float32) * np.float32(3)
    for normalize in (False, True):
        got = overlay(images, cams, 0.5, "jet", normalize=normalize, threads=2)
        assert got.shape == images.shape
        for i in range(5):
            np.testing.assert_array_equal(got[i], overlay(images[i], cams[i], 0.5, "jet", normalize=normalize))
    # One map for every frame, strided frames and a strided output.
    shared = overlay(images[::2], cams[0])
    for i, frame in enumerate(images[::2]):
        np.testing.assert_array_equal(shared[i], overlay(frame, cams[0]))
    canvas = np.zeros((5, 50, 70, 3), np.uint8)
    overlay(images, cams, out=canvas[:, 5:45, 3:67])
    np.testing.assert_array_equal(canvas[:, 5:45, 3:67], overlay(images, cams))
    assert overlay(images[:0], cams[:0]).shape == (0, 40, 64, 3)


def test_flipped_and_broadcast_views_are_read_in_place():
    image, cam = _data(16, 7, 7, 30, 40)
    np.testing.assert_array_equal(overlay(image[::-1], cam), overlay(image[::-1].copy(), cam))
    row = np.broadcast_to(image[:1], image.shape)  # every row is the same memory
    np.testing.assert_array_equal(overlay(row, cam), overlay(np.ascontiguousarray(row), cam))
    out = np.zeros_like(image)
    overlay(image, cam, out=out[::-1])
    np.testing.assert_array_equal(out[::-1], overlay(image, cam))


def test_partially_overlapping_out_is_safe():
    """out shifted against image by one pixel: the image is read before it is overwritten."""
    buffer = np.random.default_rng(17).integers(0, 256, (31, 40, 3), dtype=np.uint8)
    cam = np.random.default_rng(18).random((5, 5), dtype=np.float32)
    want = overlay(buffer[1:], cam)
    overlay(buffer[1:], cam, out=buffer[:-1])
    np.testing.assert_array_equal(buffer[:-1], want)


def test_empty_image_gives_an_empty_result():
    cam = np.ones((3, 3), np.float32)
    for shape in [(0, 5, 3), (5, 0, 3), (0, 0, 4), (0, 4, 4, 3)]:
        got = overlay(np.zeros(shape, np.uint8), cam)
        assert got.shape == shape and got.dtype == np.uint8
