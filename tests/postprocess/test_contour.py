"""Thresholded masks and outlines of a CAM (camcore.postprocess.threshold_mask and friends)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from camcore.postprocess import contour_mask, draw_contour, resize_cam, threshold_mask


def _outline_reference(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with a 4-neighbour outside the mask; the frame's edge counts as outside."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def _cam(seed: int, h: int = 7, w: int = 9) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w), dtype=np.float32)


@pytest.mark.parametrize("level", [0.0, 0.3, 0.5, 0.9, 1.5])
def test_threshold_mask_is_the_resized_map_above_the_level(level):
    cam = _cam(0)
    got = threshold_mask(cam, level, (120, 160))
    assert got.dtype == np.bool_ and got.shape == (120, 160)
    np.testing.assert_array_equal(got, resize_cam(cam, (120, 160)) >= np.float32(level))
    np.testing.assert_array_equal(got, cv2.resize(cam, (160, 120), interpolation=cv2.INTER_LINEAR) >= level)
    np.testing.assert_array_equal(threshold_mask(cam, level), cam >= np.float32(level))  # size defaults to the cam's


def test_threshold_mask_scaling_options():
    cam = _cam(1) * np.float32(8) - np.float32(3)
    lo, hi = cam.min(), cam.max()
    np.testing.assert_array_equal(
        threshold_mask(cam, 0.5, (50, 60), normalize=True), threshold_mask((cam - lo) / (hi - lo), 0.5, (50, 60))
    )
    np.testing.assert_array_equal(
        threshold_mask(cam, 0.5, (50, 60), value_range=(-3, 5)),
        threshold_mask((cam + np.float32(3)) / np.float32(8), 0.5, (50, 60)),
    )
    cam[0, 0] = np.nan  # NaN counts as 0, as in overlay
    assert not threshold_mask(cam, 0.0001)[0, 0]


@pytest.mark.parametrize("level", [0.2, 0.5, 0.8])
def test_contour_mask_is_the_outline(level):
    cam = _cam(2)
    mask = threshold_mask(cam, level, (90, 110))
    outline = contour_mask(cam, level, (90, 110))
    np.testing.assert_array_equal(outline, _outline_reference(mask))
    # The same pixels as cv2.findContours traces (outer borders and holes).
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    traced = np.zeros_like(mask)
    for c in contours:
        traced[c[:, 0, 1], c[:, 0, 0]] = True
    np.testing.assert_array_equal(outline, traced)


def test_draw_contour_paints_the_outline_only():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    cam = _cam(4)
    outline = contour_mask(cam, 0.5, (60, 80))
    got = draw_contour(image, cam, 0.5, (1, 2, 3))
    np.testing.assert_array_equal(got[outline], np.broadcast_to([1, 2, 3], (outline.sum(), 3)))
    np.testing.assert_array_equal(got[~outline], image[~outline])
    frame = image.copy()
    assert draw_contour(frame, cam, 0.5, (1, 2, 3), out=frame) is frame
    np.testing.assert_array_equal(frame, got)
    rgba = np.concatenate([image, np.full((60, 80, 1), 7, np.uint8)], axis=-1)
    painted = draw_contour(rgba, cam, 0.5, (1, 2, 3))
    np.testing.assert_array_equal(painted[outline], np.broadcast_to([1, 2, 3, 255], (outline.sum(), 4)))
    np.testing.assert_array_equal(painted[~outline], rgba[~outline])
    assert draw_contour(np.zeros((0, 5, 3), np.uint8), cam, 0.5).shape == (0, 5, 3)
