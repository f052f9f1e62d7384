"""ruff and mypy (both configured in pyproject.toml) pass on the whole tree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_check_passes() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_passes() -> None:
    # run from the root so mypy reads [tool.mypy] (files, options); its cache is .mypy_cache there
    done = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_compiled_module_matches_its_stub() -> None:
    """mypy's stubtest: camcore/_core.pyi (hand-written) declares what the compiled module has."""
    done = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "camcore._core", "--mypy-config-file", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
