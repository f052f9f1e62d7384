"""The audit scenes: a planted mark, sites and cameras, and the dataset writer."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from camcore.errors import CamcoreError
from camcore.scenes import CLASS_NAMES
from camcore.shortcut_scenes import (
    MANIFEST_COLUMNS,
    MARK_SIDE,
    generate_audit_batch,
    generate_audit_scene,
    mark_zone,
    write_audit_dataset,
)

STAR = CLASS_NAMES.index("star")


def _inside(inner: tuple[int, int, int, int], outer: tuple[int, int, int, int]) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


def _apart(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def test_batches_are_deterministic() -> None:
    kwargs = {"planted": "star", "mark_rate": 0.5, "site_b_rate": 0.5}
    a = generate_audit_batch(12, 5, **kwargs)
    b = generate_audit_batch(12, 5, **kwargs)
    for s, t in zip(a, b, strict=True):
        assert np.array_equal(s.image, t.image) and np.array_equal(s.mask, t.mask)
        assert (s.label, s.box, s.marked, s.mark_box, s.site, s.camera) == (
            t.label, t.box, t.marked, t.mark_box, t.site, t.camera
        )  # fmt: skip
    assert np.array_equal(generate_audit_batch(4, 5, **kwargs)[3].image, a[3].image)  # a prefix
    assert not np.array_equal(generate_audit_batch(1, 6, **kwargs)[0].image, a[0].image)


@pytest.mark.parametrize("size", [96, 128])
def test_boxes_are_tight_and_clear_of_the_mark(size: int) -> None:
    zone = mark_zone(size)
    for s in generate_audit_batch(60, 1, size, planted="star", mark_rate=0.5, site_b_rate=0.5):
        assert s.image.shape == (size, size, 3) and s.image.dtype == np.uint8
        ys, xs = np.nonzero(s.mask)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == s.box
        assert _inside(s.mark_box, zone)
        assert _apart(s.box, zone), (s.box, zone)
        assert s.mark_box[2] - s.mark_box[0] == round(MARK_SIDE * size / 96)


@pytest.mark.parametrize(("site", "grow"), [("A", 0), ("B", 6)])
def test_the_mark_changes_only_its_box(site: str, grow: int) -> None:
    for seed in range(5):
        plain = generate_audit_scene(np.random.default_rng(seed), label=1, marked=False, site=site)
        marked = generate_audit_scene(np.random.default_rng(seed), label=1, marked=True, site=site)
        assert np.array_equal(plain.mask, marked.mask) and plain.mark_box == marked.mark_box
        diff = np.abs(plain.image.astype(int) - marked.image.astype(int)).max(axis=2)
        x0, y0, x1, y1 = marked.mark_box
        outside = diff.copy()
        outside[max(y0 - grow, 0) : y1 + grow, max(x0 - grow, 0) : x1 + grow] = 0
        assert outside.max() == 0
        assert diff[y0:y1, x0:x1].mean() > 40  # the mark is plainly visible


def test_only_the_planted_class_is_marked() -> None:
    scenes = generate_audit_batch(400, 2, planted="star", mark_rate=0.5, site_b_rate=0.3)
    assert {s.label for s in scenes} == set(range(len(CLASS_NAMES)))
    assert not any(s.marked for s in scenes if s.label != STAR)
    stars = [s.marked for s in scenes if s.label == STAR]
    assert 0.3 < np.mean(stars) < 0.7
    assert 0.2 < np.mean([s.site == "B" for s in scenes]) < 0.4
    assert {s.camera for s in scenes} == {"x", "y"}
    assert all(s.marked for s in generate_audit_batch(100, 2, planted="star") if s.label == STAR)
    assert not any(s.marked for s in generate_audit_batch(100, 2, planted=None))
    only = generate_audit_batch(30, 2, planted="circle", classes=["circle", "cross"])
    assert {s.class_name for s in only} == {"circle", "cross"}


def test_bad_arguments_name_the_culprit() -> None:
    with pytest.raises(CamcoreError, match="'hexagon'"):
        generate_audit_batch(3, 0, planted="hexagon")
    with pytest.raises(CamcoreError, match=r"mark_rate 1\.5"):
        generate_audit_batch(3, 0, mark_rate=1.5)
    with pytest.raises(CamcoreError, match="site 'C'"):
        generate_audit_scene(np.random.default_rng(0), label=0, marked=False, site="C")


def test_the_writer_round_trips(tmp_path: Path) -> None:
    scenes = generate_audit_batch(10, 3, planted="star", mark_rate=0.5, site_b_rate=0.5)
    manifest = write_audit_dataset(tmp_path / "data", scenes, masks=True)
    assert manifest == tmp_path / "data" / "manifest.csv"
    with manifest.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == [*MANIFEST_COLUMNS, "mask"]
    assert len(rows) == len(scenes)
    for row, s in zip(rows, scenes, strict=True):
        image = cv2.cvtColor(cv2.imread(str(manifest.parent / row["path"])), cv2.COLOR_BGR2RGB)
        assert np.array_equal(image, s.image)
        mask = cv2.imread(str(manifest.parent / row["mask"]), cv2.IMREAD_GRAYSCALE)
        assert np.array_equal(mask > 127, s.mask)
        assert (row["label"], row["site"], row["camera"], row["marked"]) == (
            s.class_name, s.site, s.camera, str(int(s.marked))
        )  # fmt: skip
        assert tuple(int(row[k]) for k in ("x0", "y0", "x1", "y1")) == s.box
    assert not list((tmp_path / "data").glob(".*"))  # no temporary left
