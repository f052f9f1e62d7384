"""Map statistics against figures computed by hand, on maps small enough to count pixels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from camcore.audit.stats import batch_statistics, box_region, compact_map, map_statistics, mask_region


def test_one_pixel_in_the_top_left_corner() -> None:
    m = np.zeros((10, 10), np.float32)
    m[0, 0] = 0.7
    s = map_statistics(m)
    assert s == {"peak_x": 0.05, "peak_y": 0.05, "entropy": 0.0, "spread": 0.0, "border_energy": 1.0,
                 "corner_tl": 1.0, "corner_tr": 0.0, "corner_bl": 0.0, "corner_br": 0.0, "region_energy": None,
                 "region_area": None, "pointing_hit": None}  # fmt: skip


def test_a_uniform_map() -> None:
    s = map_statistics(np.ones((10, 10)))
    # centres 0.5 .. 9.5: variance (10² - 1) / 12 = 8.25 per axis; diagonal sqrt(200)
    assert s["spread"] == pytest.approx(math.sqrt(2 * 8.25) / math.sqrt(200), abs=1e-12)
    assert s["entropy"] == pytest.approx(1.0, abs=1e-6)
    # band: centres x < 1 or x > 9 (columns 0 and 9), same in y: 100 - 8 x 8 = 36 pixels
    assert s["border_energy"] == pytest.approx(0.36, abs=1e-12)
    # corners: centres x < 2.5 (columns 0, 1) or x > 7.5 (8, 9): 2 x 2 pixels each
    for c in ("corner_tl", "corner_tr", "corner_bl", "corner_br"):
        assert s[c] == pytest.approx(0.04, abs=1e-12)
    assert (s["peak_x"], s["peak_y"]) == (0.05, 0.05)  # the first maximum, row-major


def test_two_equal_pixels() -> None:
    m = np.zeros((4, 4))
    m[1, 1] = m[1, 3] = 2.0  # centres (1.5, 1.5) and (3.5, 1.5); centroid (2.5, 1.5)
    region = np.zeros((4, 4), bool)
    region[:, 3] = True
    s = map_statistics(m, region)
    assert s["entropy"] == pytest.approx(math.log(2) / math.log(16), abs=1e-6)
    assert s["spread"] == pytest.approx(1 / math.sqrt(32), abs=1e-12)
    assert (s["peak_x"], s["peak_y"]) == (0.375, 0.375)
    assert s["region_energy"] == pytest.approx(0.5) and s["region_area"] == 0.25
    # the peak (1, 1) is 2 px from the region's nearest centre: beyond 1.5% of the diagonal (0.085 px)
    assert s["pointing_hit"] is False
    assert s["border_energy"] == 0.0  # band: centres x < 0.4 or x > 3.6: none of 0.5 .. 3.5
    assert s["corner_tr"] == 0.0 and s["corner_tl"] == 0.0  # corners: x > 3 is column 3, but y < 1 is row 0


def test_the_pointing_tolerance_is_one_and_a_half_percent_of_the_diagonal() -> None:
    m = np.zeros((100, 100))
    m[50, 50] = 1.0
    near, far = np.zeros((100, 100), bool), np.zeros((100, 100), bool)
    near[:, 52:] = True  # 2 px away: within 1.5% of 141.4 = 2.12 px
    far[:, 53:] = True  # 3 px away
    s = batch_statistics(np.stack([m, m, m]), [near, far, None])
    assert s.row(0)["pointing_hit"] is True and s.row(1)["pointing_hit"] is False
    assert s.row(2)["pointing_hit"] is None and s.row(0)["region_energy"] == 0.0
    inside = np.zeros((100, 100), bool)
    inside[50, 50] = True
    assert map_statistics(m, inside)["pointing_hit"] is True


def test_an_all_zero_map_has_no_figures_but_its_region_area() -> None:
    region = np.zeros((5, 5), bool)
    region[:2] = True
    s = map_statistics(np.zeros((5, 5)), region)
    assert s["region_area"] == pytest.approx(0.4)
    assert all(v is None for k, v in s.items() if k != "region_area")


def test_negative_and_nan_values_count_as_zero() -> None:
    m = np.zeros((10, 10))
    m[0, 0] = 1.0
    bad = m.copy()
    bad[5, 5], bad[6, 6] = -3.0, np.nan
    assert map_statistics(bad) == map_statistics(m)


def test_a_map_has_the_same_figures_in_any_batch() -> None:
    rng = np.random.default_rng(0)
    maps = rng.random((13, 24, 40)) ** 4
    regions = [rng.random((24, 40)) > 0.7 if i % 2 else None for i in range(13)]
    whole = batch_statistics(maps, regions)
    part = batch_statistics(maps[3:9], regions[3:9])
    for i in range(13):
        assert whole.row(i) == map_statistics(maps[i], regions[i])
    for i in range(6):
        assert part.row(i) == whole.row(i + 3)


def test_compact_map() -> None:
    assert compact_map(np.full((96, 96), 0.5, np.float32)).tolist() == [[128] * 32] * 32  # rint(127.5)
    small = compact_map(np.ones((96, 48), np.float32))
    assert small.shape == (32, 16) and small.dtype == np.uint8 and small.min() == 255
    m = np.zeros((64, 64), np.float32)
    m[:2, :2] = 1.0  # one 2 x 2 block of the 32 x 32 grid: INTER_AREA averages it
    assert compact_map(m)[0, 0] == 255 and compact_map(m).sum() == 255
    assert compact_map(np.ones((10, 30), np.float32)).shape == (11, 32)


def test_regions_at_the_model_input() -> None:
    r = box_region((2, 3, 5, 7), (10, 10), (10, 10))  # x1, y1 exclusive
    assert np.argwhere(r).min(0).tolist() == [3, 2] and np.argwhere(r).max(0).tolist() == [6, 4]
    half = box_region((0, 0, 10, 4), (20, 20), (10, 10))  # the resize halves it: columns 0-4, rows 0-1
    assert half.sum() == 10 and half[:2, :5].all()
    tiny = box_region((3.1, 3.1, 3.2, 3.2), (10, 10), (10, 10))
    assert tiny.sum() == 1 and tiny[3, 3]  # at least the pixel under its centre
    mask = np.zeros((20, 20, 3), np.uint8)
    mask[:10, :10] = 255
    assert mask_region(mask, (10, 10)).sum() == 25 and mask_region(mask[..., 0], (20, 20)).sum() == 100


def test_work_arrays_kept_or_not_give_the_same_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    from camcore.audit import stats

    rng = np.random.default_rng(1)
    maps = rng.random((5, 30, 20)) ** 3
    regions = [rng.random((30, 20)) > 0.5 for _ in range(5)]
    kept = batch_statistics(maps, regions)
    batch_statistics(maps[:2] * 0 + 7, regions[:2])  # the same thread's work arrays, reused with other contents
    monkeypatch.setattr(stats, "_SCRATCH_KEPT", 10)  # every work array fresh
    fresh = batch_statistics(maps, regions)
    assert [kept.row(i) for i in range(5)] == [fresh.row(i) for i in range(5)]
