"""The synthetic scenes, the bundled demo classifier and ``camcore demo``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from camcore.demo import (
    DEMO_MODEL,
    POINTING_TOLERANCE,
    format_report,
    load_demo_meta,
    pointing_hits,
    preprocess,
    run_demo,
)
from camcore.scenes import CLASS_NAMES, OBJECT_SIZE_RANGE, generate_batch, generate_scene


def test_scenes_are_deterministic() -> None:
    a = generate_batch(8, seed=5)
    b = generate_batch(8, seed=5)
    c = generate_batch(8, seed=6)
    for s, t in zip(a, b, strict=True):
        assert np.array_equal(s.image, t.image)
        assert (s.label, s.box) == (t.label, t.box)
    assert not all(np.array_equal(s.image, t.image) for s, t in zip(a, c, strict=True))
    # A prefix does not depend on the batch length.
    assert np.array_equal(generate_batch(3, seed=5)[2].image, a[2].image)


@pytest.mark.parametrize("size", [96, 64])
def test_box_is_tight_around_the_object(size: int) -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        s = generate_scene(rng, size)
        assert s.image.shape == (size, size, 3) and s.image.dtype == np.uint8
        assert 0 <= s.label < len(CLASS_NAMES)
        x0, y0, x1, y1 = s.box
        assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
        ys, xs = np.nonzero(s.mask)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == s.box
        lo, hi = (v * size / 96 for v in OBJECT_SIZE_RANGE)
        assert 0.7 * lo <= max(x1 - x0, y1 - y0) <= 1.05 * hi + 4  # + anti-aliased rim


def test_all_classes_occur() -> None:
    labels = [s.label for s in generate_batch(200, seed=1)]
    assert set(labels) == set(range(len(CLASS_NAMES)))


def test_metadata_matches_the_model() -> None:
    meta = load_demo_meta()
    model = onnx.load(str(DEMO_MODEL))
    assert meta["class_names"] == list(CLASS_NAMES)
    assert [i.name for i in model.graph.input] == [meta["input_name"]]
    assert [o.name for o in model.graph.output] == [meta["output_name"]]
    produced = {out for node in model.graph.node for out in node.output}
    assert meta["target_layer"] in produced
    assert DEMO_MODEL.stat().st_size < 300_000
    x = preprocess(np.zeros((2, 96, 96, 3), np.uint8), meta)
    assert x.shape == (2, 3, 96, 96) and x.dtype == np.float32


def test_pointing_hits() -> None:
    maps = np.zeros((3, 20, 20), np.float32)
    maps[0, 5, 5] = 1  # inside
    maps[1, 5, 12 + POINTING_TOLERANCE] = 1  # just outside the grown box
    maps[2, 5, 12 + POINTING_TOLERANCE - 1] = 1  # just inside the grown box
    box = (4, 4, 12, 12)
    assert pointing_hits(maps, [box] * 3).tolist() == [True, False, True]
    assert pointing_hits(maps, [box] * 3, tolerance=0).tolist() == [True, False, False]


def test_demo_localises_the_object(tmp_path: Path) -> None:
    report = run_demo(tmp_path, n=64, seed=2024, progress=False)
    assert report.n == 64
    assert report.classifier_accuracy >= 0.9
    assert report.pointing_accuracy >= 0.9
    assert len(report.overlay_paths) == 16
    assert report.grid_path is not None and report.grid_path.name == "demo_grid.png"
    for path in [*report.overlay_paths, report.grid_path]:
        assert path.is_file() and path.stat().st_size > 0
    text = format_report(report)
    assert "pointing game" in text and f"{report.pointing_accuracy:6.1%}" in text
