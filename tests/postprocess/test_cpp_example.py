"""The C++ library builds on its own (no Python), its C++ tests pass, and it agrees with the binding."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from camcore.postprocess import overlay

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ctest") is None, reason="needs cmake, ctest and a C++ compiler")
def test_cpp_example_builds_runs_and_matches_python(tmp_path):
    build = tmp_path / "build"
    subprocess.run(
        ["cmake", "-S", str(ROOT / "cpp"), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release"],
        check=True,
        capture_output=True,
    )
    subprocess.run(["cmake", "--build", str(build), "--parallel", "2"], check=True, capture_output=True)
    # The C++ tests (cpp/tests/, no Python) pass.
    tests = subprocess.run(
        ["ctest", "--test-dir", str(build), "--output-on-failure"], check=False, capture_output=True, text=True
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    exe = next(p for p in build.rglob("camcore_overlay_example*") if p.is_file() and p.suffix in ("", ".exe"))
    ppm = tmp_path / "out.ppm"
    width, height = 96, 64
    subprocess.run([str(exe), str(ppm), str(width), str(height)], check=True, capture_output=True)

    header = f"P6\n{width} {height}\n255\n".encode()
    data = ppm.read_bytes()
    assert data.startswith(header)
    got = np.frombuffer(data[len(header) :], np.uint8).reshape(height, width, 3)

    # The same synthetic inputs as cpp/examples/overlay_example.cpp.
    x = np.arange(width)
    y = np.arange(height)
    frame = np.empty((height, width, 3), np.uint8)
    frame[..., 0] = (255 * x // width)[None, :]
    frame[..., 1] = (255 * y // height)[:, None]
    frame[..., 2] = 128
    i, j = np.meshgrid(np.arange(7), np.arange(7), indexing="ij")
    cam = ((i * j) % 7).astype(np.float32) / np.float32(6)
    np.testing.assert_array_equal(got, overlay(frame, cam, 0.4, "turbo"))
