"""Map post-processing shared by the pipeline and the methods: min-max scaling and resizing
exactly as pytorch-grad-cam 1.5 does them (OpenCV bilinear ``INTER_LINEAR``)."""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np

from camcore.errors import CamcoreError
from camcore.methods.registry import Runner


def scale_cam_image(cams: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """Min-max scale each map to [0, 1] (``x - min`` over ``1e-7 + max``), then resize.

    ``size`` is (height, width); the resize is OpenCV's bilinear ``INTER_LINEAR``.

    Example:
        >>> scale_cam_image(np.array([[[0.0, 2.0]]]))[0].tolist()
        [[0.0, 1.0]]
    """
    out = []
    for img in cams:
        img = img - np.min(img)
        img = img / (1e-7 + np.max(img))
        if size is not None and img.shape != tuple(size):
            img = cv2.resize(img.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        out.append(img)
    return np.asarray(out, dtype=np.float32)


def scale_across_batch_and_channels(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """:func:`scale_cam_image` of every (n, c) plane of an (N, C, h, w) array, resized to ``size``."""
    n, c = x.shape[:2]
    planes = scale_cam_image(x.reshape(n * c, *x.shape[2:]), size)
    return planes.reshape(n, c, *size)


def image_input(runner: Runner, feeds: Mapping[str, np.ndarray]) -> tuple[str, np.ndarray]:
    """The name and (N, C, H, W) array of the model's image input (its first input)."""
    name = runner.input_names[0]
    x = feeds[name]
    if x.ndim != 4:
        raise CamcoreError(f"this method needs a 4-D (N, C, H, W) image input; {name!r} has shape {x.shape}")
    return name, x
