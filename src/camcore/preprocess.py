"""Image and frame preprocessing shared by ``camcore explain`` and ``camcore video``.

A frame (uint8, H x W x 3, BGR from OpenCV or RGB) is resized to the model's input size with
OpenCV's bilinear ``INTER_LINEAR``, scaled to [0, 1], normalised with ``mean``/``std`` (given in
R, G, B order; ImageNet's by default), put in the model's channel order (RGB unless ``bgr``) and
layout (NCHW unless ``nhwc``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

from camcore.errors import CamcoreError

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: Channel order of the frames handed to the pipeline.
Channels = Literal["bgr", "rgb"]


@dataclass(frozen=True)
class Preprocess:
    """Turn one uint8 frame into one float32 model input (no batch axis).

    Args:
        size: the model's input (height, width); ``None`` keeps the frame's size.
        mean, std: per-channel statistics in R, G, B order, applied after scaling to [0, 1].
        bgr: the model expects BGR channel order.
        nhwc: the model expects NHWC layout.

    Example:
        >>> pre = Preprocess((224, 224))
        >>> pre(np.zeros((720, 1280, 3), np.uint8), channels="bgr").shape
        (3, 224, 224)
    """

    size: tuple[int, int] | None = None
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD
    bgr: bool = False
    nhwc: bool = False
    _mul: np.ndarray = field(init=False, repr=False, compare=False)
    _add: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, np.float32).reshape(-1)
        std = np.asarray(self.std, np.float32).reshape(-1)
        if mean.shape != (3,) or std.shape != (3,):
            raise CamcoreError(f"mean and std need 3 values each, got {list(mean)} and {list(std)}")
        if np.any(std == 0):
            raise CamcoreError(f"std must not contain 0, got {list(std)}")
        if self.bgr:
            mean, std = mean[::-1], std[::-1]
        # (x / 255 - mean) / std  ==  x * mul + add
        object.__setattr__(self, "_mul", (1.0 / (255.0 * std)).astype(np.float32))
        object.__setattr__(self, "_add", (-mean / std).astype(np.float32))

    @property
    def input_hw(self) -> tuple[int, int] | None:
        """The model input's (height, width), when fixed."""
        return self.size

    def __call__(self, frame: np.ndarray, channels: Channels = "bgr") -> np.ndarray:
        """The model input for ``frame`` (uint8 H x W x 3 in ``channels`` order)."""
        if self.size is not None and frame.shape[:2] != self.size:
            frame = cv2.resize(frame, (self.size[1], self.size[0]), interpolation=cv2.INTER_LINEAR)
        want_bgr = self.bgr
        if (channels == "bgr") != want_bgr:
            frame = frame[..., ::-1]
        x = frame.astype(np.float32)
        x *= self._mul
        x += self._add
        return x if self.nhwc else np.ascontiguousarray(x.transpose(2, 0, 1))


def model_input_size(cam: object, nhwc: bool = False) -> tuple[int, int] | None:
    """The (height, width) of a CAM's first model input, or ``None`` when it is dynamic.

    Raises:
        CamcoreError: the input is not 4-D.
    """
    info = cam.info[cam.input_names[0]]  # type: ignore[attr-defined]
    shape = info.shape
    if shape is None or len(shape) != 4:
        raise CamcoreError(f"images need a 4-D model input; the model's is {shape}")
    hw = (shape[1], shape[2]) if nhwc else (shape[2], shape[3])
    if all(isinstance(d, int) for d in hw):
        return (int(hw[0]), int(hw[1]))
    return None


def parse_size(text: str) -> tuple[int, int]:
    """``"224x224"`` (height x width) as a tuple: the ``--size`` argument of the CLI commands."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 224x224 (HxW), not {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, not {text!r}")
    return h, w
