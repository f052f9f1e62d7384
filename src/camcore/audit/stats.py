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


def _masks(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (HW, 2) and the band and corner masks (HW, 5) as weights."""
    xs, ys = np.arange(w) + 0.5, np.arange(h) + 0.5
    bx, by = (xs < BORDER * w) | (xs > (1 - BORDER) * w), (ys < BORDER * h) | (ys > (1 - BORDER) * h)
    lx, rx = xs < CORNER * w, xs > (1 - CORNER) * w
    ty, dy = ys < CORNER * h, ys > (1 - CORNER) * h
    zones = [by[:, None] | bx[None, :], ty[:, None] & lx[None, :], ty[:, None] & rx[None, :],
             dy[:, None] & lx[None, :], dy[:, None] & rx[None, :]]  # fmt: skip
    weights = np.stack([z.reshape(-1) for z in zones], axis=1).astype(np.float64)
    gx, gy = np.meshgrid(xs, ys)
    return gx.reshape(-1), gy.reshape(-1), weights


def batch_statistics(maps: np.ndarray, regions: Sequence[np.ndarray | None] | None = None) -> MapStats:
    """The statistics of ``maps`` (B, H, W) and their optional ``regions`` (bool (H, W) each)."""
    maps = np.asarray(maps)
    if maps.ndim != 3 or maps.shape[1] < 1 or maps.shape[2] < 1:
        raise ValueError(f"maps must be (B, H, W) with H, W >= 1, got shape {maps.shape}")
    b, h, w = maps.shape
    flat = np.nan_to_num(maps.reshape(b, h * w).astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    np.maximum(flat, 0.0, out=flat)
    total = flat.sum(axis=1)
    valid = total > 0
    p = flat / np.where(valid, total, 1.0)[:, None]
    gx, gy, zones = _masks(h, w)
    nan = np.full(b, np.nan)
    peak = np.argmax(flat, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    entropy = -plogp.sum(axis=1) / np.log(h * w) if h * w > 1 else np.zeros(b)
    cx, cy = p @ gx, p @ gy
    var = (p @ (gx * gx) - cx * cx) + (p @ (gy * gy) - cy * cy)
    shares = p @ zones
    values = {
        "peak_x": ((peak % w) + 0.5) / w,
        "peak_y": ((peak // w) + 0.5) / h,
        "entropy": np.clip(entropy, 0.0, 1.0),
        "spread": np.sqrt(np.maximum(var, 0.0)) / np.hypot(h, w),
        "border_energy": shares[:, 0],
        "corner_tl": shares[:, 1],
        "corner_tr": shares[:, 2],
        "corner_bl": shares[:, 3],
        "corner_br": shares[:, 4],
    }
    values = {k: np.where(valid, np.clip(v, 0.0, 1.0), nan) for k, v in values.items()}
    region_energy, region_area, hit = nan.copy(), nan.copy(), np.full(b, -1, np.int8)
    tol2 = (POINTING_TOLERANCE * np.hypot(h, w)) ** 2
    for i, region in enumerate(regions or [None] * b):
        if region is None:
            continue
        r = np.asarray(region, bool)
        if r.shape != (h, w):
            raise ValueError(f"region {i} has shape {r.shape}, the maps {(h, w)}")
        cells = r.reshape(-1)
        if not cells.any():
            continue
        region_area[i] = cells.mean()
        if not valid[i]:
            continue
        region_energy[i] = min(float(p[i, cells].sum()), 1.0)
        k = int(peak[i])
        if cells[k]:
            hit[i] = 1
        else:
            d2 = (gx[cells] - gx[k]) ** 2 + (gy[cells] - gy[k]) ** 2
            hit[i] = int(d2.min() <= tol2)
    values["region_energy"], values["region_area"] = region_energy, region_area
    return MapStats(values, hit)


def map_statistics(cam: np.ndarray, region: np.ndarray | None = None) -> dict[str, float | bool | None]:
    """The statistics of one map (H, W) and its optional region (bool (H, W)), None where none."""
    return batch_statistics(np.asarray(cam)[None], [region]).row(0)


def compact_map(cam: np.ndarray, side: int = MAP_SIDE) -> np.ndarray:
    """The stored map: ``cam`` (H, W, [0, 1]) resized with ``INTER_AREA`` so its long side is
    ``side`` (aspect kept), times 255, rounded, uint8.

    Example:
        >>> compact_map(np.ones((96, 48), np.float32)).shape
        (32, 16)
    """
    h, w = cam.shape
    oh, ow = (side, max(1, round(side * w / h))) if h >= w else (max(1, round(side * h / w)), side)
    small = cv2.resize(np.ascontiguousarray(cam, np.float32), (ow, oh), interpolation=cv2.INTER_AREA)
    return np.rint(np.clip(np.nan_to_num(small), 0.0, 1.0) * 255.0).astype(np.uint8)


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
