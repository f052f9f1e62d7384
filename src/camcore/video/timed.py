"""What every video source yields: a decoded frame and the time it is shown at."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["TimedFrame"]


class TimedFrame(NamedTuple):
    """A decoded frame (uint8 H x W x 3) and the time it is shown at, in seconds (None: unknown).

    Example:
        >>> TimedFrame(np.zeros((2, 2, 3), np.uint8), 0.04).time
        0.04
    """

    image: np.ndarray
    time: float | None
