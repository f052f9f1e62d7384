"""camcore.video.smoothing.TemporalSmoother against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from camcore.errors import CamcoreError
from camcore.video.smoothing import TemporalSmoother

A = np.array([[0.0, 2.0], [1.0, 4.0]], np.float32)
B = np.array([[4.0, 0.0], [2.0, 1.0]], np.float32)


def test_ema_of_the_maps() -> None:
    """m_1 = A, m_2 = s·A + (1 - s)·B, m_3 = s·m_2 + (1 - s)·B; fixed range (0, 10)."""
    s = TemporalSmoother(smooth=0.75, normalize=(0.0, 10.0))
    np.testing.assert_allclose(s.update(A), A / 10)
    m2 = 0.75 * A + 0.25 * B
    np.testing.assert_allclose(s.update(B), m2 / 10, rtol=1e-6)
    last = s.update(B)
    np.testing.assert_allclose(last, (0.75 * m2 + 0.25 * B) / 10, rtol=1e-6)
    assert s.current is last and last.dtype == np.float32


def test_no_smoothing_and_a_new_size_restart_the_average() -> None:
    s = TemporalSmoother(smooth=0.0, normalize=(0.0, 4.0))
    s.update(A)
    np.testing.assert_allclose(s.update(B), B / 4)
    e = TemporalSmoother(smooth=0.5, normalize=(0.0, 4.0))
    e.update(A)
    big = np.ones((3, 3), np.float32)
    np.testing.assert_allclose(e.update(big), big / 4)  # another shape: no average with A


def test_running_range_decays_per_frame() -> None:
    """hi_t = max(max m_t, decay·hi_{t-1}); out = clip(m_t / hi_t, 0, 1)."""
    s = TemporalSmoother(smooth=0.0, normalize="running", decay=0.5)
    np.testing.assert_allclose(s.update(A), A / 4)  # hi = 4
    weak = A / 8  # max 0.5
    np.testing.assert_allclose(s.update(weak), weak / 2)  # hi = max(0.5, 0.5·4) = 2
    np.testing.assert_allclose(s.update(weak), weak / 1)  # hi = max(0.5, 0.5·2) = 1
    np.testing.assert_allclose(s.update(weak), weak / 0.5)  # hi = max(0.5, 0.5·1) = 0.5
    np.testing.assert_allclose(s.update(A), A / 4)  # a stronger frame raises the range at once


def test_running_range_without_decay_holds() -> None:
    s = TemporalSmoother(smooth=0.0, normalize="running", decay=1.0)
    assert s.update(A).max() == 1.0
    np.testing.assert_allclose(s.update(A / 4), A / 16)
    zeros = TemporalSmoother(normalize="running")
    np.testing.assert_array_equal(zeros.update(np.zeros((2, 2), np.float32)), 0)  # no range yet: zeros


def test_running_range_with_smoothing() -> None:
    s = TemporalSmoother(smooth=0.5, normalize="running", decay=0.9)
    s.update(A)  # hi = 4
    m2 = 0.5 * A + 0.5 * (A / 10)
    np.testing.assert_allclose(s.update(A / 10), m2 / max(m2.max(), 0.9 * 4), rtol=1e-6)


def test_frame_normalization_is_min_max() -> None:
    s = TemporalSmoother(smooth=0.0, normalize="frame")
    np.testing.assert_allclose(s.update(B + 3), B / (4 + 1e-7), rtol=1e-6)  # min 3, max 7
    flat = s.update(np.full((2, 2), 5.0, np.float32))
    np.testing.assert_array_equal(flat, 0)


def test_fixed_range_clips() -> None:
    s = TemporalSmoother(smooth=0.0, normalize=(1.0, 3.0))
    np.testing.assert_allclose(s.update(A), [[0.0, 0.5], [0.0, 1.0]])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"smooth": 1.0}, "smooth must be in"),
        ({"smooth": -0.1}, "smooth must be in"),
        ({"decay": 0.0}, "decay must be in"),
        ({"decay": 1.5}, "decay must be in"),
        ({"normalize": "minmax"}, "normalize must be"),
        ({"normalize": (1.0, 1.0)}, "needs hi > lo"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(CamcoreError, match=message):
        TemporalSmoother(**kwargs)
