"""The built-in colour tables are OpenCV's, and the generated header is current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import matplotlib  # a test dependency (the `test` extra): the mpl_* tables are checked, never skipped
import numpy as np
import pytest

from camcore.postprocess import COLORMAPS, colorize, colormap_table

ROOT = Path(__file__).resolve().parents[2]
RAMP = np.arange(256, dtype=np.uint8).reshape(1, 256)


def _cv2(name: str, image: np.ndarray) -> np.ndarray:
    return cv2.applyColorMap(image, getattr(cv2, f"COLORMAP_{name.upper()}"))


OPENCV_MAPS = tuple(n for n in COLORMAPS if not n.startswith("mpl_"))
MATPLOTLIB_MAPS = tuple(n for n in COLORMAPS if n.startswith("mpl_"))


def test_names():
    required = ("jet", "turbo", "hot", "inferno", "magma", "plasma", "viridis", "cividis", "parula", "bone")
    assert COLORMAPS[: len(required)] == required
    assert {"mpl_viridis", "mpl_plasma", "mpl_inferno", "mpl_magma", "mpl_cividis"} <= set(MATPLOTLIB_MAPS)
    assert len(set(COLORMAPS)) == len(COLORMAPS)


@pytest.mark.parametrize("name", OPENCV_MAPS)
def test_table_identical_to_opencv(name):
    bgr = _cv2(name, RAMP)[0]
    np.testing.assert_array_equal(colormap_table(name, rgb=False), bgr)
    np.testing.assert_array_equal(colormap_table(name), bgr[:, ::-1])


@pytest.mark.parametrize("name", OPENCV_MAPS)
def test_colorize_matches_apply_color_map(name):
    rng = np.random.default_rng(0)
    levels = rng.integers(0, 256, (37, 53), dtype=np.uint8)
    bgr = _cv2(name, levels)
    np.testing.assert_array_equal(colorize(levels, name, rgb=False), bgr)
    np.testing.assert_array_equal(colorize(levels, name), bgr[..., ::-1])
    values = rng.random((37, 53), dtype=np.float32) * np.float32(1.4) - np.float32(0.2)
    quantized = np.uint8(255 * np.clip(values, 0, 1))
    np.testing.assert_array_equal(colorize(values, name, rgb=False), _cv2(name, quantized))


@pytest.mark.parametrize("name", MATPLOTLIB_MAPS)
def test_matplotlib_tables_match_matplotlib(name):
    cmap = matplotlib.colormaps[name.removeprefix("mpl_")].resampled(256)
    want = cmap(np.arange(256), bytes=True)[:, :3]
    np.testing.assert_array_equal(colormap_table(name), want)
    np.testing.assert_array_equal(colormap_table(name, rgb=False), want[:, ::-1])
    # The float path agrees with matplotlib's own mapping of [0, 1] values onto the table.
    values = np.linspace(0, 1, 1001, dtype=np.float32)[None]
    np.testing.assert_array_equal(colorize(values, name)[0], want[np.uint8(255 * values[0])])


def test_colorize_quantization_edges():
    values = np.array([[np.nan, -np.inf, -1.0, 0.0, 0.5, 1.0, 2.0, np.inf]], np.float32)
    levels = colorize(values, "bone")[0, :, 0]
    table = colormap_table("bone")[:, 0]
    assert levels.tolist() == table[[0, 0, 0, 0, 127, 255, 255, 255]].tolist()


@pytest.mark.slow
def test_generated_header_is_current():
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "make_colormaps.py"), "--check"],
        check=False,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
