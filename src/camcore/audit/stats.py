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
import threading
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


@dataclass(frozen=True)
class _Zones:
    """A map side's pixel centres and the index ranges of its zones: ``cuts`` = (a, k0, k1, b)
    with 0 <= a <= k0 <= k1 <= b <= n, so that [0, a) and [b, n) are the border band, [0, k0)
    and [k1, n) the two corner stripes (all zones are ranges, the centres being increasing)."""

    centres: np.ndarray
    cuts: tuple[int, int, int, int]


@functools.lru_cache(maxsize=32)
def _zones(n: int) -> _Zones:
    c = np.arange(n) + 0.5
    c.setflags(write=False)
    # the first index at or past each threshold: the same membership tests as the definitions above
    a = int(np.count_nonzero(c < BORDER * n))
    b = n - int(np.count_nonzero(c > (1 - BORDER) * n))
    k0 = int(np.count_nonzero(c < CORNER * n))
    k1 = n - int(np.count_nonzero(c > (1 - CORNER) * n))
    return _Zones(c, (a, k0, k1, b))


_SCRATCH = threading.local()
_SCRATCH_KEPT = 1 << 22  #: elements of a work array kept per thread (32 MiB of float64), at most


def _scratch(name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """A work array of this thread's, reused across calls (grown when too small): its contents
    are undefined."""
    need = int(np.prod(shape))
    if need > _SCRATCH_KEPT:  # a big one is not kept for the thread's lifetime
        return np.empty(shape, dtype)
    buf: np.ndarray | None = getattr(_SCRATCH, name, None)
    if buf is None or buf.size < need or buf.dtype != dtype:
        buf = np.empty(need, dtype)
        setattr(_SCRATCH, name, buf)
    return buf[:need].reshape(shape)


def _segments(grid: np.ndarray, cuts: tuple[int, int, int, int]) -> np.ndarray:
    """(B, 5, W): each column's sums over the row ranges between the cuts [0, a, k0, k1, b, H]
    (an empty range sums to 0). Summing whole rows keeps numpy's reductions on contiguous
    memory (a sum over a few columns of every row is several times slower)."""
    b_, h, w = grid.shape
    edges = (0, *cuts, h)
    out = np.zeros((b_, 5, w))
    for j in range(5):
        if edges[j + 1] > edges[j]:
            np.sum(grid[:, edges[j] : edges[j + 1]], axis=1, out=out[:, j])
    return out


def batch_statistics(maps: np.ndarray, regions: Sequence[np.ndarray | None] | None = None) -> MapStats:
    """The statistics of ``maps`` (B, H, W) and their optional ``regions`` (bool (H, W) each).

    Every zone is a rectangle of whole rows and columns, so one pass gives each column's sums
    over the five row ranges between the zones' edges (:func:`_segments`) and another each
    row's sum; the moments and zone energies are sums of those (H + W values per map):
    :math:`\\sum_x c_x x`, :math:`\\sum_y r_y y^2`, the band = its rows' sums + the other rows'
    band columns, a corner = its rows' sums over its columns. The entropy takes one
    logarithm, :math:`H = \\log S - \\frac{1}{S}\\sum M \\log M`. All in float64 (``log M`` in
    float32: numpy's SIMD log; float64's is ~5x slower) with numpy reductions along an axis,
    which sum each map on its own: a map's figures are the same bits whatever batch it came
    in. They equal the direct sums over the zones' pixels up to float64 rounding (relative
    1e-15), well below the float32 of the stored columns.
    """
    maps = np.asarray(maps)
    if maps.ndim != 3 or maps.shape[1] < 1 or maps.shape[2] < 1:
        raise ValueError(f"maps must be (B, H, W) with H, W >= 1, got shape {maps.shape}")
    b, h, w = maps.shape
    grid = _scratch("grid", (b, h, w), np.float64)  # reused: a fresh array per batch costs more than the sums
    np.copyto(grid, maps, casting="unsafe")
    # float32 maps as they are (the usual case) serve the logarithm and the argmax: the same values, half the bytes
    src32 = maps.reshape(b, h * w) if maps.dtype == np.float32 else None
    if not np.isfinite(maps).all() or maps.min(initial=0) < 0:
        np.nan_to_num(grid, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        np.maximum(grid, 0.0, out=grid)
        src32 = None
    flat = grid.reshape(b, h * w)
    zx, zy = _zones(w), _zones(h)
    seg = _segments(grid, zy.cuts)  # (B, 5, W): rows [0, a) [a, k0) [k0, k1) [k1, b) [b, H)
    cols_ = seg.sum(axis=1)  # (B, W)
    rows_ = grid.sum(axis=2)  # (B, H)
    total = cols_.sum(axis=1)
    valid = total > 0
    safe = np.where(valid, total, 1.0)
    xs, ys = zx.centres, zy.centres
    cx, cy = (cols_ * xs).sum(axis=1) / safe, (rows_ * ys).sum(axis=1) / safe
    x2, y2 = (cols_ * (xs * xs)).sum(axis=1) / safe, (rows_ * (ys * ys)).sum(axis=1) / safe
    xa, xk0, xk1, xb = zx.cuts
    band_cols = np.r_[0:xa, xb:w]
    band = cols_[:, band_cols].sum(axis=1) + (seg[:, 0, xa:xb] + seg[:, 4, xa:xb]).sum(axis=1)
    top, bottom = seg[:, 0] + seg[:, 1], seg[:, 3] + seg[:, 4]  # (B, W): the corner rows' column sums
    # log M in float32; 0 log 0 = 0, the map being exactly 0 there
    log32 = _scratch("log32", (b, h * w), np.float32)
    if src32 is not None:
        np.maximum(src32, np.float32(1e-30), out=log32)
    else:
        np.maximum(flat, 1e-30, dtype=np.float32, out=log32)
    np.log(log32, out=log32)
    mlogm64 = _scratch("mlogm", (b, h * w), np.float64)
    np.copyto(mlogm64, log32)
    mlogm = np.einsum("ij,ij->i", flat, mlogm64)  # each row's products summed on their own
    entropy = (np.log(safe) - mlogm / safe) / np.log(h * w) if h * w > 1 else np.zeros(b)
    var = (x2 - cx * cx) + (y2 - cy * cy)
    peak = np.argmax(flat if src32 is None else src32, axis=1)
    nan = np.full(b, np.nan)
    values = {
        "peak_x": ((peak % w) + 0.5) / w,
        "peak_y": ((peak // w) + 0.5) / h,
        "entropy": entropy,
        "spread": np.sqrt(np.maximum(var, 0.0)) / np.hypot(h, w),
        "border_energy": band / safe,
        "corner_tl": top[:, :xk0].sum(axis=1) / safe,
        "corner_tr": top[:, xk1:].sum(axis=1) / safe,
        "corner_bl": bottom[:, :xk0].sum(axis=1) / safe,
        "corner_br": bottom[:, xk1:].sum(axis=1) / safe,
    }
    values = {k: np.where(valid, np.minimum(np.maximum(v, 0.0), 1.0), nan) for k, v in values.items()}
    region_energy, region_area, hit = nan.copy(), nan.copy(), np.full(b, -1, np.int8)
    rows = [i for i, r in enumerate(regions or []) if r is not None]
    if rows:
        cells = np.stack([np.asarray(regions[i], bool).reshape(-1) for i in rows])  # type: ignore[index]
        if cells.shape[1] != h * w:
            raise ValueError(f"the regions must have the maps' shape {(h, w)}")
        area = np.count_nonzero(cells, axis=1) / (h * w)
        energy = np.add.reduce(flat[rows] if len(rows) < b else flat, axis=1, where=cells) / safe[rows]
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
                ry, rx = np.divmod(np.flatnonzero(cells[j]), w)
                d2 = (xs[rx] - xs[k % w]) ** 2 + (ys[ry] - ys[k // w]) ** 2
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
