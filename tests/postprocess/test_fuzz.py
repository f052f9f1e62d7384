"""Fuzzing camcore.overlay: random shapes (1x1 to 4K), layouts, alphas, options and non-finite maps.

Every case must run without crashing and match the OpenCV chain the module documents, computed
here without camcore's C++ core: the map prepared in numpy by ``prepare_cam_reference``
(non-finite values, ``normalize``, ``value_range``), ``cv2.resize(INTER_LINEAR)`` on float32,
``np.uint8(255 * clip)``, the colour table (``cv2.applyColorMap``, or matplotlib's own map for
``mpl_*``) and ``cv2.addWeighted`` (``alpha_from_cam``: the float64 blend with ``np.rint``).
The tolerance is the documented one:

* maps of at least 2 x 2: identical pixels for alphas that are multiples of 1/256, at most 1
  apart otherwise (and with ``alpha_from_cam``, whose weights are not multiples of 1/256);
* maps with a single row or column: OpenCV samples those in a different order, so the colour
  level of a pixel may be 1 off: each pixel must be within 1 of the chain's blend at the level
  OpenCV computes or at a neighbouring one.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
import pytest

from camcore.postprocess import COLORMAPS, overlay, prepare_cam_reference


@functools.cache
def _matplotlib_table(name: str) -> np.ndarray:
    import matplotlib

    return matplotlib.colormaps[name].resampled(256)(np.arange(256), bytes=True)[:, :3]


def _colour(level: np.ndarray, colormap: str, rgb: bool) -> np.ndarray:
    """The colour of each uint8 level, in the image's channel order."""
    if colormap.startswith("mpl_"):
        colour = _matplotlib_table(colormap.removeprefix("mpl_"))[level]  # RGB
        return np.ascontiguousarray(colour if rgb else colour[..., ::-1])
    colour = cv2.applyColorMap(level, getattr(cv2, f"COLORMAP_{colormap.upper()}"))  # BGR
    return np.ascontiguousarray(colour[..., ::-1] if rgb else colour)


def _blend(
    picture: np.ndarray, colour: np.ndarray, level: np.ndarray, alpha: float, alpha_from_cam: bool
) -> np.ndarray:
    if alpha_from_cam:
        w = (alpha * level.astype(np.float64) / 255)[..., None]
        return np.clip(np.rint(w * colour + (1 - w) * picture), 0, 255).astype(np.uint8)
    return cv2.addWeighted(colour, alpha, picture, 1 - alpha, 0)


def _opencv_levels(cam: np.ndarray, height: int, width: int, normalize, value_range) -> np.ndarray:
    up = cv2.resize(prepare_cam_reference(cam, normalize, value_range), (width, height), interpolation=cv2.INTER_LINEAR)
    return np.uint8(255 * np.clip(up, 0, 1))


def _check(got, image, cam, alpha, colormap, rgb, normalize, value_range, alpha_from_cam, context) -> None:
    """``got`` against the OpenCV chain, with the tolerance documented for this case."""
    image = np.ascontiguousarray(image)
    height, width = image.shape[:2]
    picture = np.ascontiguousarray(image[..., :3])
    np.testing.assert_array_equal(got[..., 3:], image[..., 3:])  # a 4th channel is kept
    got = np.ascontiguousarray(got[..., :3])
    level = _opencv_levels(cam, height, width, normalize, value_range)
    thin = min(cam.shape) < 2 or not cv2.ipp.useIPP()  # bit-exact sampling needs 2 x 2 maps (and IPP)
    if not thin:
        want = _blend(picture, _colour(level, colormap, rgb), level, alpha, alpha_from_cam)
        dyadic = float(alpha * 256).is_integer() and not alpha_from_cam
        diff = int(cv2.absdiff(got, want).max(initial=0))
        assert diff <= (0 if dyadic else 1), (*context, "max diff", diff)
        return
    # single row or column: each pixel within 1 of the blend at OpenCV's level or a neighbouring one
    want = _blend(picture, _colour(level, colormap, rgb), level, alpha, alpha_from_cam)
    diff = cv2.absdiff(got, want)
    err = np.maximum(np.maximum(diff[..., 0], diff[..., 1]), diff[..., 2])
    off = np.nonzero(err > 1)
    if off[0].size:
        best = err[off]
        for step in (-1, 1):
            near = np.clip(level[off].astype(np.int16) + step, 0, 255).astype(np.uint8)[:, None]
            cand = _blend(picture[off][:, None], _colour(near, colormap, rgb), near, alpha, alpha_from_cam)
            best = np.minimum(best, np.abs(got[off].astype(np.int16) - cand[:, 0]).max(axis=-1))
        assert best.max() <= 1, (*context, "max diff", int(best.max()))


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
    _check(got, image, cam, alpha, context=context, **options)


def test_random_small_and_medium_frames():
    rng = np.random.default_rng(2024)
    for _ in range(150):
        height, width = (int(v) for v in rng.integers(1, [5, 5] if rng.random() < 0.2 else [300, 400]))
        _case(rng, height, width)


@pytest.mark.parametrize(("height", "width"), [(1, 1), (1, 3840), (2160, 1), (1080, 1920), (2160, 3840)])
def test_extreme_frames(height, width):
    rng = np.random.default_rng(height * 7 + width)
    _case(rng, height, width)


EXTREME_FRAMES = [(1, 1), (1, 3840), (2160, 1), (1080, 1920), (2160, 3840)]
MAPS = [(1, 1), (1, 9), (9, 1), (2, 2), (2, 31), (7, 5), (23, 17)]


@pytest.mark.parametrize(("height", "width"), EXTREME_FRAMES)
def test_tiny_maps_on_extreme_frames(height, width):
    """Every map shape, from 1 x 1 up, on every extreme frame, against the OpenCV chain: a fixed
    grid (the random cases above may miss a combination)."""
    rng = np.random.default_rng(height + 3 * width)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    configs = [
        (0.5, "jet", True, {}),
        (77 / 256, "mpl_viridis", False, {"value_range": (-0.1, 1.1)}),
        (0.3, "turbo", True, {"alpha_from_cam": True, "normalize": True}),
    ]
    for i, shape in enumerate(MAPS):
        cam = rng.random(shape, dtype=np.float32) * np.float32(1.4) - np.float32(0.2)
        alpha, colormap, rgb, options = configs[(i + height) % len(configs)]
        got = overlay(image, cam, alpha, colormap, rgb, **options)
        full = {"normalize": False, "value_range": None, "alpha_from_cam": False, **options}
        _check(got, image, cam, alpha, colormap, rgb, context=(image.shape, shape, alpha, colormap), **full)


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
