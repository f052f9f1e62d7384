"""Fuzzing camcore.overlay: random shapes (1x1 to 4K), layouts, alphas, options and non-finite maps.

Every case must run without crashing and match a plain numpy reference within 1 per pixel. The
reference resizes with camcore.resize_cam, which test_resize.py checks against cv2.resize (bit
for bit for maps of at least 2 x 2), so that maps with a single row or column are covered too.
"""

from __future__ import annotations

import numpy as np
import pytest

from camcore.postprocess import COLORMAPS, colormap_table, overlay, prepare_cam_reference, resize_cam


def _reference(image, cam, alpha, colormap, rgb, normalize, value_range, alpha_from_cam):
    height, width = image.shape[:2]
    up = resize_cam(prepare_cam_reference(cam, normalize, value_range), (height, width))
    heat = np.uint8(255 * np.clip(up, 0, 1))
    colour = colormap_table(colormap, rgb=rgb)[heat].astype(np.float64)
    if alpha_from_cam:
        w = (alpha * heat.astype(np.float64) / 255)[..., None]
        a, b = w, 1 - w
    else:
        a, b = float(np.float32(alpha)), float(np.float32(1 - alpha))  # addWeighted's float32 weights
    out = image.copy()
    out[..., :3] = np.clip(np.rint(a * colour + b * image[..., :3]), 0, 255).astype(np.uint8)
    return out


def _layout(rng: np.random.Generator, frame: np.ndarray) -> np.ndarray:
    """The frame as a contiguous array, a crop of a bigger buffer, a flipped view or a Fortran copy."""
    kind = rng.integers(4)
    if kind == 1:
        h, w, c = frame.shape
        big = rng.integers(0, 256, (h + 3, w + 5, c), dtype=np.uint8)
        big[2 : 2 + h, 1 : 1 + w] = frame
        return big[2 : 2 + h, 1 : 1 + w]
    if kind == 2:
        return frame[::-1].copy()[::-1]
    if kind == 3:
        return np.asfortranarray(frame)
    return frame


def _case(rng: np.random.Generator, height: int, width: int) -> None:
    channels = int(rng.choice([3, 4]))
    image = _layout(rng, rng.integers(0, 256, (height, width, channels), dtype=np.uint8))
    cam_shape = (int(rng.integers(1, 24)), int(rng.integers(1, 24)))
    if rng.random() < 0.1:
        cam_shape = (int(rng.integers(1, 2 * height + 2)), int(rng.integers(1, 2 * width + 2)))  # bigger than the frame
    cam = (rng.random(cam_shape) * 1.6 - 0.3).astype(rng.choice([np.float32, np.float64]))
    if rng.random() < 0.4:  # non-finite values
        for value in (np.nan, np.inf, -np.inf):
            cam[rng.random(cam_shape) < 0.1] = value
    alpha = float(rng.choice([0.0, 1.0, 0.5, rng.random()]))
    options = {
        "colormap": str(rng.choice(COLORMAPS)),
        "rgb": bool(rng.integers(2)),
        "normalize": False,
        "value_range": None,
        "alpha_from_cam": bool(rng.random() < 0.3),
    }
    mode = rng.integers(3)
    if mode == 1:
        options["normalize"] = True
    elif mode == 2:
        options["value_range"] = (float(rng.uniform(-1, 0.5)), float(rng.uniform(0.6, 2)))
    want = _reference(np.ascontiguousarray(image), cam, alpha, **options)
    threads = [None, 1, 2, 3][rng.integers(4)]
    where = rng.integers(3)
    if where == 0:
        got = overlay(image, cam, alpha, out=None, threads=threads, **options)
    elif where == 1:
        got = np.empty_like(np.ascontiguousarray(image))
        assert overlay(image, cam, alpha, out=got, threads=threads, **options) is got
    else:
        got = np.ascontiguousarray(image).copy()
        overlay(got, cam, alpha, out=got, threads=threads, **options)  # in place
    context = (image.shape, cam.shape, cam.dtype, alpha, options, threads)
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    assert diff.max(initial=0) <= 1, context
    np.testing.assert_array_equal(got[..., 3:], np.ascontiguousarray(image)[..., 3:])


def test_random_small_and_medium_frames():
    rng = np.random.default_rng(2024)
    for _ in range(150):
        height, width = (int(v) for v in rng.integers(1, [5, 5] if rng.random() < 0.2 else [300, 400]))
        _case(rng, height, width)


@pytest.mark.parametrize(("height", "width"), [(1, 1), (1, 3840), (2160, 1), (1080, 1920), (2160, 3840)])
def test_extreme_frames(height, width):
    rng = np.random.default_rng(height * 7 + width)
    _case(rng, height, width)


def test_empty_inputs():
    cam = np.ones((4, 4), np.float32)
    for shape in [(0, 0, 3), (0, 7, 3), (7, 0, 4), (0, 7, 7, 3), (2, 0, 7, 4)]:
        image = np.zeros(shape, np.uint8)
        assert overlay(image, cam).shape == shape
        assert overlay(image, cam, out=np.empty_like(image)).shape == shape
    assert overlay(np.zeros((0, 5, 5, 3), np.uint8), np.zeros((0, 4, 4), np.float32)).shape == (0, 5, 5, 3)
    for empty in (np.zeros((0, 4), np.float32), np.zeros((4, 0), np.float32), np.zeros((0, 0), np.float32)):
        with pytest.raises(ValueError, match="cam must not be empty"):
            overlay(np.zeros((8, 8, 3), np.uint8), empty)
