"""Per-map statistics of the audit (pure numpy), computed for a batch of maps at once.

A map ``M`` (H x W, non-negative; negative values and NaN count as 0) is read as a distribution
``p = M / sum(M)`` over pixel centres ``(x + 0.5, y + 0.5)``:

* ``peak_x, peak_y``: the argmax pixel's centre over the width / height (first in row-major order);
* ``entropy``: :math:`-\\sum p \\log p \\,/\\, \\log(HW)` (1: uniform; 0: one pixel);
* ``spread``: :math:`\\sqrt{\\sum p\\,\\lVert c - \\bar c\\rVert^2} \\,/\\, \\sqrt{H^2 + W^2}`, with
  :math:`\\bar c = \\sum p\\,c` the energy centroid;
* ``border_energy``: the energy of pixels whose centre lies in the outer band: x < 10% of W or
  x > 90% of W, or the same in y;
* ``corner_tl, corner_tr, corner_bl, corner_br``: the energy of each corner square: centre x below
  25% (left) or above 75% (right) of W, and y likewise of H;
* with a region (a bool mask at the map's size): ``region_energy`` = :math:`\\sum_{region} p` (the
  energy pointing game), ``region_area`` its share of the pixels, and ``pointing_hit``: the peak
  pixel's centre lies within 1.5% of the diagonal of a region pixel's centre.

An all-zero map has no distribution: every figure but ``region_area`` is None (NaN in the arrays).

Example:
    >>> m = np.zeros((10, 10)); m[0, 0] = 1.0
    >>> s = map_statistics(m)
    >>> s["peak_x"], s["entropy"], s["corner_tl"], s["border_energy"]
    (0.05, 0.0, 1.0, 1.0)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "BORDER",
    "CORNER",
    "MAP_SIDE",
    "POINTING_TOLERANCE",
    "STAT_COLUMNS",
    "MapStats",
    "batch_statistics",
    "box_region",
    "compact_map",
    "compact_maps",
    "map_statistics",
    "mask_region",
]

BORDER = 0.10  #: the border band's width, per side, as a share of that side
CORNER = 0.25  #: the corner squares' side, as a share of each side
POINTING_TOLERANCE = 0.015  #: the pointing game's tolerance, as a share of the diagonal
MAP_SIDE = 32  #: the long side of a stored map

#: the float statistics, in column order (``pointing_hit`` is a bool and comes last)
STAT_COLUMNS = ("peak_x", "peak_y", "entropy", "spread", "border_energy", "corner_tl", "corner_tr", "corner_bl",
                "corner_br", "region_energy", "region_area")  # fmt: skip


@dataclass(frozen=True)
class MapStats:
    """The statistics of a batch of maps: one float64 array (B,) per :data:`STAT_COLUMNS` name,
    NaN where a figure does not exist, and ``pointing_hit`` (B,) int8: 1, 0, or -1 (none)."""

    values: dict[str, np.ndarray]
    pointing_hit: np.ndarray

    def row(self, i: int) -> dict[str, float | bool | None]:
        """Map ``i``'s figures, None where none."""
        out: dict[str, float | bool | None] = {
            k: (None if np.isnan(v[i]) else float(v[i])) for k, v in self.values.items()
        }
        hit = int(self.pointing_hit[i])
        out["pointing_hit"] = None if hit < 0 else bool(hit)
        return out


@functools.lru_cache(maxsize=16)
def _weights(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel-centre coordinates x, y (HW,) and the weights (HW, 9) whose product with a flat map
    gives its moments and zone energies: x, y, x², y², the band, the corners tl, tr, bl, br."""
    xs, ys = np.arange(w) + 0.5, np.arange(h) + 0.5
    bx, by = (xs < BORDER * w) | (xs > (1 - BORDER) * w), (ys < BORDER * h) | (ys > (1 - BORDER) * h)
    lx, rx = xs < CORNER * w, xs > (1 - CORNER) * w
    ty, dy = ys < CORNER * h, ys > (1 - CORNER) * h
    zones = [by[:, None] | bx[None, :], ty[:, None] & lx[None, :], ty[:, None] & rx[None, :],
             dy[:, None] & lx[None, :], dy[:, None] & rx[None, :]]  # fmt: skip
    gx, gy = (g.reshape(-1) for g in np.meshgrid(xs, ys))
    weights = np.stack([gx, gy, gx * gx, gy * gy, *(z.reshape(-1).astype(np.float64) for z in zones)], axis=1)
    for a in (gx, gy, weights):
        a.setflags(write=False)
    return gx, gy, weights


def batch_statistics(maps: np.ndarray, regions: Sequence[np.ndarray | None] | None = None) -> MapStats:
    """The statistics of ``maps`` (B, H, W) and their optional ``regions`` (bool (H, W) each).

    Per map: its sum S, one product with the weights of :func:`_weights` for the moments and zone
    energies, one logarithm for the entropy, :math:`H = \\log S - \\frac{1}{S}\\sum M \\log M`.
    Each map is reduced on its own, so its figures are the same bits whatever batch it came in.
    """
    maps = np.asarray(maps)
    if maps.ndim != 3 or maps.shape[1] < 1 or maps.shape[2] < 1:
        raise ValueError(f"maps must be (B, H, W) with H, W >= 1, got shape {maps.shape}")
    b, h, w = maps.shape
    flat = maps.reshape(b, h * w).astype(np.float64)
    if not np.isfinite(flat).all() or flat.min(initial=0.0) < 0:
        flat = np.maximum(np.nan_to_num(flat, nan=0.0, posinf=0.0, neginf=0.0), 0.0)
    gx, gy, weights = _weights(h, w)
    # a row at a time (pairwise sum, gemv, dot), so that a map's figures are the same bits in any batch;
    # log M in float32 (numpy's SIMD log; float64's is ~5x slower); 0 log 0 = 0, the map being exactly 0 there
    total = np.asarray([row.sum() for row in flat])
    valid = total > 0
    safe = np.where(valid, total, 1.0)
    moments = np.stack([row @ weights for row in flat]) / safe[:, None]
    mlogm = np.asarray([row @ np.log(np.maximum(row, 1e-30, dtype=np.float32)).astype(np.float64) for row in flat])
    entropy = (np.log(safe) - mlogm / safe) / np.log(h * w) if h * w > 1 else np.zeros(b)
    cx, cy = moments[:, 0], moments[:, 1]
    var = (moments[:, 2] - cx * cx) + (moments[:, 3] - cy * cy)
    peak = np.argmax(flat, axis=1)
    nan = np.full(b, np.nan)
    values = {
        "peak_x": ((peak % w) + 0.5) / w,
        "peak_y": ((peak // w) + 0.5) / h,
        "entropy": entropy,
        "spread": np.sqrt(np.maximum(var, 0.0)) / np.hypot(h, w),
        "border_energy": moments[:, 4],
        "corner_tl": moments[:, 5],
        "corner_tr": moments[:, 6],
        "corner_bl": moments[:, 7],
        "corner_br": moments[:, 8],
    }
    values = {k: np.where(valid, np.clip(v, 0.0, 1.0), nan) for k, v in values.items()}
    region_energy, region_area, hit = nan.copy(), nan.copy(), np.full(b, -1, np.int8)
    rows = [i for i, r in enumerate(regions or []) if r is not None]
    if rows:
        cells = np.stack([np.asarray(regions[i], bool).reshape(-1) for i in rows])  # type: ignore[index]
        if cells.shape[1] != h * w:
            raise ValueError(f"the regions must have the maps' shape {(h, w)}")
        area = cells.mean(axis=1)
        energy = np.asarray([flat[i][cells[j]].sum() for j, i in enumerate(rows)]) / safe[rows]
        inside = cells[np.arange(len(rows)), peak[rows]]
        tol2 = (POINTING_TOLERANCE * np.hypot(h, w)) ** 2
        for j, i in enumerate(rows):
            if area[j] == 0:
                continue
            region_area[i] = area[j]
            if not valid[i]:
                continue
            region_energy[i] = min(energy[j], 1.0)
            if inside[j]:
                hit[i] = 1
            else:  # the nearest region pixel's centre, within the tolerance?
                k = int(peak[i])
                d2 = (gx[cells[j]] - gx[k]) ** 2 + (gy[cells[j]] - gy[k]) ** 2
                hit[i] = int(d2.min() <= tol2)
    values["region_energy"], values["region_area"] = region_energy, region_area
    return MapStats(values, hit)


def map_statistics(cam: np.ndarray, region: np.ndarray | None = None) -> dict[str, float | bool | None]:
    """The statistics of one map (H, W) and its optional region (bool (H, W)), None where none."""
    return batch_statistics(np.asarray(cam)[None], [region]).row(0)


def compact_maps(maps: np.ndarray, side: int = MAP_SIDE) -> np.ndarray:
    """:func:`compact_map` of each of ``maps`` (B, H, W): (B, h, w) uint8."""
    b, h, w = maps.shape
    oh, ow = (side, max(1, round(side * w / h))) if h >= w else (max(1, round(side * h / w)), side)
    small = np.empty((b, oh, ow), np.float32)
    for i in range(b):
        small[i] = cv2.resize(np.ascontiguousarray(maps[i], np.float32), (ow, oh), interpolation=cv2.INTER_AREA)
    np.nan_to_num(small, copy=False)
    np.clip(small, 0.0, 1.0, out=small)
    small *= 255.0
    return np.rint(small).astype(np.uint8)


def compact_map(cam: np.ndarray, side: int = MAP_SIDE) -> np.ndarray:
    """The stored map: ``cam`` (H, W, [0, 1]) resized with ``INTER_AREA`` so its long side is
    ``side`` (aspect kept), times 255, rounded, uint8.

    Example:
        >>> compact_map(np.ones((96, 48), np.float32)).shape
        (32, 16)
    """
    return compact_maps(np.asarray(cam)[None], side)[0]


def box_region(box: tuple[float, float, float, float], image_hw: tuple[int, int], input_hw: tuple[int, int]) -> (
        np.ndarray):  # fmt: skip
    """A box (x0, y0, x1, y1 in image pixels, x1/y1 exclusive) as a bool mask at the model input's
    size: the input pixels whose centre, mapped back by the preprocessing's resize (a scale per
    axis), lies in the box; at least the pixel under the box's centre.

    Example:
        >>> box_region((2, 0, 4, 1), (4, 4), (2, 2)).astype(int).tolist()
        [[0, 1], [0, 0]]
    """
    (ih, iw), (h, w) = image_hw, input_hw
    sx, sy = w / iw, h / ih
    x0, y0, x1, y1 = box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy
    xs, ys = np.arange(w) + 0.5, np.arange(h) + 0.5
    mask = ((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]
    if not mask.any():
        cx, cy = min(int((x0 + x1) / 2), w - 1), min(int((y0 + y1) / 2), h - 1)
        mask[cy, cx] = True
    return mask


def mask_region(mask: np.ndarray, input_hw: tuple[int, int]) -> np.ndarray:
    """A mask image (non-zero: the object; any channels) as a bool mask at the model input's size,
    resized as the preprocessing resizes images (bilinear), then thresholded at one half."""
    m: np.ndarray = np.asarray(mask) > 0
    if m.ndim == 3:
        m = np.any(m, axis=2)
    h, w = input_hw
    if m.shape == (h, w):
        return m
    return cv2.resize(m.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) >= 0.5
