"""The pointing game (Zhang et al. 2016, https://arxiv.org/abs/1608.00507) and the
energy-based pointing game (Score-CAM, https://arxiv.org/abs/1910.01279): does the map
point inside the annotated object?"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np

from camcore.errors import CamcoreError
from camcore.metrics.registry import register_metric

Box = Sequence[float]


def region_masks(shape: tuple[int, int], boxes: Sequence[Box | Sequence[Box]] | None = None,
                 masks: np.ndarray | Sequence[np.ndarray] | None = None) -> np.ndarray:  # fmt: skip
    """(N, H, W) bool regions: per image a box (x1, y1, x2, y2) in pixels (x2, y2 exclusive),
    several boxes, or a mask."""
    if (boxes is None) == (masks is None):
        raise CamcoreError("pass either boxes or masks")
    if masks is not None:
        out = np.asarray(masks).astype(bool)
        if out.shape[1:] != shape:
            raise CamcoreError(f"masks have shape {out.shape[1:]}, the maps {shape}")
        return out
    regions = []
    for item in boxes:  # type: ignore[union-attr]
        many = np.ndim(item) == 2
        region = np.zeros(shape, bool)
        for x1, y1, x2, y2 in cast("Sequence[Box]", item if many else [item]):
            region[max(int(np.floor(y1)), 0) : int(np.ceil(y2)), max(int(np.floor(x1)), 0) : int(np.ceil(x2))] = True
        regions.append(region)
    return np.stack(regions)


@register_metric("Pointing game: 1 if the map's maximum falls in the object (± tolerance px)",
                 kind="localisation", reference="https://arxiv.org/abs/1608.00507")  # fmt: skip
class PointingGame:
    """Hit :math:`= [\\exists\\, p^* \\in \\arg\\max L : d(p^*, R) \\le \\tau]`, with R the box(es)
    or mask and τ the ``tolerance`` in pixels (15 in the paper; 0: strictly inside). Every
    maximum counts (a flat map points everywhere). Returns float32 (N,) hits.

    Example:
        >>> m = np.zeros((1, 8, 8), np.float32); m[0, 2, 5] = 1
        >>> PointingGame(tolerance=0)(m, boxes=[(4, 1, 7, 4)]).tolist()
        [1.0]
    """

    def __init__(self, tolerance: float = 15) -> None:
        self.tolerance = tolerance

    def __call__(self, cams: np.ndarray, boxes: Sequence[Box | Sequence[Box]] | None = None,
                 masks: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
        cams = np.asarray(cams)
        regions = region_masks(cams.shape[1:], boxes, masks)
        hits = []
        for cam, region in zip(cams, regions):
            ys, xs = np.nonzero(cam == cam.max())
            ry, rx = np.nonzero(region)
            if len(ry) == 0:
                hits.append(0.0)
                continue
            d2 = (ys[:, None] - ry[None]) ** 2 + (xs[:, None] - rx[None]) ** 2
            hits.append(float(np.sqrt(d2.min()) <= self.tolerance))
        return np.asarray(hits, np.float32)


@register_metric("Energy pointing game: the share of the map's mass inside the object",
                 kind="localisation", reference="https://arxiv.org/abs/1910.01279")  # fmt: skip
class EnergyPointingGame:
    """:math:`\\sum_{p \\in R} L_p / \\sum_p L_p` (maps clipped at 0; 0 for an empty map).

    Example:
        >>> m = np.zeros((1, 4, 4), np.float32); m[0, :2, :2] = 1; m[0, 3, 3] = 2
        >>> EnergyPointingGame()(m, boxes=[(0, 0, 2, 2)]).tolist()
        [0.6666666865348816]
    """

    def __call__(self, cams: np.ndarray, boxes: Sequence[Box | Sequence[Box]] | None = None,
                 masks: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
        cams = np.maximum(np.asarray(cams, np.float64), 0)
        regions = region_masks(cams.shape[1:], boxes, masks)
        total = cams.reshape(len(cams), -1).sum(1)
        inside = (cams * regions).reshape(len(cams), -1).sum(1)
        return np.divide(inside, total, out=np.zeros_like(total), where=total > 0).astype(np.float32)
