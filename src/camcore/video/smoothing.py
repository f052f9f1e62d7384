"""Temporal smoothing of CAM maps: an EMA over frames and a normalization range shared by frames.

Per-frame min-max scaling (what ``cam(x)`` does for single images) makes a video flicker: a
frame with weak evidence is stretched to full heat, and the peak's brightness jumps with every
frame. :class:`TemporalSmoother` works on the raw, non-negative maps instead:

    m_t  = s · m_{t-1} + (1 - s) · raw_t           (exponential moving average, s = ``smooth``)
    hi_t = max(max(m_t), decay · hi_{t-1})          (``normalize="running"``)
    out  = clip(m_t / hi_t, 0, 1)

so the range changes only slowly (``decay`` per frame) and a weak frame stays dim. A fixed
``(lo, hi)`` pair gives a truly constant range; ``"frame"`` is the per-frame min-max scaling.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from camcore.errors import CamcoreError

#: "running" (slowly adapting range), "frame" (per-frame min-max, flickers) or a fixed (lo, hi).
Normalization = Literal["running", "frame"] | tuple[float, float]

_EPS = 1e-7


class TemporalSmoother:
    """EMA of maps plus a shared normalization range; one instance per video.

    Args:
        smooth: EMA weight of the past in [0, 1); 0 disables smoothing.
        normalize: see :data:`Normalization`.
        decay: per-frame decay of the running range's top (``normalize="running"``), in (0, 1].

    Example:
        >>> s = TemporalSmoother(smooth=0.5)
        >>> a = s.update(np.array([[0.0, 2.0]], np.float32))   # first frame: range top 2
        >>> b = s.update(np.array([[0.0, 0.2]], np.float32))   # weak frame stays dim
        >>> float(a.max()), round(float(b.max()), 2)
        (1.0, 0.56)
    """

    def __init__(self, smooth: float = 0.5, normalize: Normalization = "running", decay: float = 0.99) -> None:
        if not 0.0 <= smooth < 1.0:
            raise CamcoreError(f"smooth must be in [0, 1), got {smooth}")
        if not 0.0 < decay <= 1.0:
            raise CamcoreError(f"range decay must be in (0, 1], got {decay}")
        if isinstance(normalize, str):
            if normalize not in ("running", "frame"):
                raise CamcoreError(f"normalize must be 'running', 'frame' or (lo, hi), got {normalize!r}")
        else:
            lo, hi = (float(v) for v in normalize)
            if not hi > lo:
                raise CamcoreError(f"a fixed normalization range needs hi > lo, got ({lo}, {hi})")
            normalize = (lo, hi)
        self.smooth = float(smooth)
        self.normalize: Normalization = normalize
        self.decay = float(decay)
        self._ema: np.ndarray | None = None
        self._top = 0.0
        self.current: np.ndarray | None = None  #: the last normalized map

    def update(self, raw: np.ndarray) -> np.ndarray:
        """Fold in one frame's raw map (2-D, >= 0) and return the normalized map in [0, 1]."""
        raw = np.asarray(raw, dtype=np.float32)
        if self._ema is None or self._ema.shape != raw.shape or self.smooth == 0.0:
            self._ema = raw.copy()
        else:
            self._ema *= self.smooth
            self._ema += (1.0 - self.smooth) * raw
        m = self._ema
        if self.normalize == "frame":
            lo = float(m.min())
            out = (m - lo) / (_EPS + float(m.max()) - lo)
        elif self.normalize == "running":
            self._top = max(float(m.max()), self.decay * self._top)
            out = m / self._top if self._top > 0 else np.zeros_like(m)
        else:
            lo, hi = self.normalize
            out = (m - lo) / (hi - lo)
        self.current = np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)
        return self.current
