"""Bad arguments raise ValueError with a one-line message naming the argument."""

from __future__ import annotations

import numpy as np
import pytest

from camcore.postprocess import (
    colorize,
    colormap_table,
    contour_mask,
    draw_contour,
    overlay,
    resize_cam,
    threshold_mask,
)

IMAGE = np.zeros((16, 16, 3), np.uint8)
CAM = np.zeros((4, 4), np.float32)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image": IMAGE.astype(np.float32)}, r"image must be a uint8 array of shape \(H, W, 3\)"),
        ({"image": IMAGE[..., 0]}, r"image must be .*shape \(16, 16\)"),
        ({"image": np.zeros((16, 16, 2), np.uint8)}, "image must be"),
        ({"image": np.zeros((2, 2, 16, 16, 3), np.uint8)}, "image must be"),
        ({"image": "frame.png"}, "image must be"),
        ({"cam": np.zeros((1, 4, 4, 1), np.float32)}, r"cam must be a 2-D \(H, W\) map or a batch"),
        ({"cam": np.zeros((2, 4, 4), np.float32)}, "cam is a batch of 2 maps but image is a single frame"),
        (
            {"image": np.zeros((3, 16, 16, 3), np.uint8), "cam": np.zeros((2, 4, 4), np.float32)},
            r"cam batch \(2 maps\) does not match the image batch \(3 frames\)",
        ),
        ({"cam": np.zeros((4, 0), np.float32)}, "cam must not be empty"),
        ({"cam": None}, "cam must be a numpy array; got NoneType"),
        ({"cam": np.zeros((4, 4), np.int64)}, "cam must be a floating-point array"),
        ({"cam": np.zeros((0, 4), np.float32)}, "cam must not be empty"),
        ({"alpha": 1.5}, r"alpha must be in \[0, 1\]; got 1.5"),
        ({"alpha": -0.1}, "alpha must be in"),
        ({"alpha": float("nan")}, "alpha must be in"),
        ({"colormap": "rainbow2"}, "unknown colormap 'rainbow2'; valid colormaps: jet, turbo"),
        ({"value_range": (1.0, 1.0)}, r"value_range must be \(lo, hi\) with finite lo < hi"),
        ({"value_range": (0.0, float("inf"))}, "value_range must be"),
        ({"value_range": (0.0, 1.0), "normalize": True}, "normalize=True and value_range are exclusive"),
        (
            {"out": np.zeros((16, 15, 3), np.uint8)},
            r"out must be a writable uint8 array of shape \(16, 16, 3\)",
        ),
        ({"out": np.zeros((16, 16, 3), np.float32)}, "out must be"),
        ({"out": np.zeros((16, 32, 3), np.uint8)[:, ::2]}, "out must be"),  # pixels not packed
        ({"out": np.zeros((16, 16, 6), np.uint8)[..., ::2]}, "out must be"),  # channels not packed
        ({"out": np.broadcast_to(np.zeros((1, 16, 3), np.uint8), (16, 16, 3))}, "out must be"),  # rows overlap
        ({"out": [[0]]}, "out must be"),
        ({"threads": -1}, "threads must be >= 0"),
    ],
)
def test_overlay_rejects(kwargs, match):
    args = {"image": IMAGE, "cam": CAM} | kwargs
    with pytest.raises(ValueError, match="^overlay: " + match) as info:
        overlay(**args)
    assert "\n" not in str(info.value)


def test_overlay_rejects_read_only_out():
    out = np.zeros_like(IMAGE)
    out.flags.writeable = False
    with pytest.raises(ValueError, match=r"out must be .*\(read-only\)"):
        overlay(IMAGE, CAM, out=out)


def test_overlay_rejects_float_image_everywhere_in_a_batch():
    with pytest.raises(ValueError, match="overlay: image must be a uint8 array"):
        overlay(np.zeros((2, 8, 8, 3), np.float64), np.zeros((2, 4, 4), np.float32))


def test_contour_functions_reject():
    with pytest.raises(ValueError, match="threshold_mask: level must be a finite number"):
        threshold_mask(CAM, float("nan"))
    with pytest.raises(ValueError, match=r"contour_mask: size must be \(height, width\)"):
        contour_mask(CAM, 0.5, (0, 3))
    with pytest.raises(ValueError, match="draw_contour: color must have 3 entries"):
        draw_contour(IMAGE, CAM, 0.5, (1, 2))
    with pytest.raises(ValueError, match=r"draw_contour: color entries must be in \[0, 255\]"):
        draw_contour(IMAGE, CAM, 0.5, (1, 2, 300))
    with pytest.raises(ValueError, match="draw_contour: image must be a single"):
        draw_contour(np.zeros((2, 8, 8, 3), np.uint8), CAM, 0.5)


def test_resize_cam_rejects():
    with pytest.raises(ValueError, match=r"resize_cam: size must be \(height, width\)"):
        resize_cam(CAM, (0, 5))
    with pytest.raises(ValueError, match="resize_cam: cam must be a 2-D"):
        resize_cam(np.zeros(4, np.float32), (2, 2))


def test_colorize_rejects():
    with pytest.raises(ValueError, match=r"colorize: cam must be uint8 .* or floating-point"):
        colorize(np.zeros((4, 4), np.int16))
    with pytest.raises(ValueError, match="colorize: unknown colormap 'x'"):
        colorize(CAM, "x")
    with pytest.raises(ValueError, match="colormap_table: unknown colormap"):
        colormap_table("nope")
