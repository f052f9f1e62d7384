"""Bad arguments raise ValueError with a one-line message naming the argument."""

from __future__ import annotations

import numpy as np
import pytest

from camcore.postprocess import colorize, colormap_table, overlay, resize_cam

IMAGE = np.zeros((16, 16, 3), np.uint8)
CAM = np.zeros((4, 4), np.float32)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image": IMAGE.astype(np.float32)}, r"image must be a uint8 array of shape \(H, W, 3\)"),
        ({"image": IMAGE[..., 0]}, r"image must be .*shape \(16, 16\)"),
        ({"image": np.zeros((16, 16, 4), np.uint8)}, "image must be"),
        ({"image": np.zeros((0, 16, 3), np.uint8)}, "image must not be empty"),
        ({"image": "frame.png"}, "image must be"),
        ({"cam": np.zeros((4, 4, 1), np.float32)}, r"cam must be a 2-D \(H, W\) map"),
        ({"cam": np.zeros((4, 4), np.int64)}, "cam must be a floating-point array"),
        ({"cam": np.zeros((0, 4), np.float32)}, "cam must not be empty"),
        ({"alpha": 1.5}, r"alpha must be in \[0, 1\]; got 1.5"),
        ({"alpha": -0.1}, "alpha must be in"),
        ({"alpha": float("nan")}, "alpha must be in"),
        ({"colormap": "rainbow"}, "unknown colormap 'rainbow'; valid colormaps: jet, turbo"),
        (
            {"out": np.zeros((16, 15, 3), np.uint8)},
            r"out must be a writable uint8 array of shape \(16, 16, 3\)",
        ),
        ({"out": np.zeros((16, 16, 3), np.float32)}, "out must be"),
        ({"out": np.zeros((16, 16, 3), np.uint8)[:, ::2]}, "out must be"),
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
