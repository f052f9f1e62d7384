"""Small generated datasets for the audit core's tests: scenes of :mod:`camcore.scenes` written as
PNGs under class folders, with a manifest (path, label, site, box) beside them."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2

from camcore.demo import DEMO_MODEL
from camcore.scenes import generate_batch

MODEL = str(DEMO_MODEL)


def write_scenes(root: Path, n: int, seed: int = 0, manifest: bool = True) -> Path:
    """``n`` scenes as ``root/<class>/<i>.png`` and, with ``manifest``, ``root/manifest.csv``
    (columns path, label, site, x0, y0, x1, y1). Returns ``root``."""
    rows = []
    for i, scene in enumerate(generate_batch(n, seed)):
        rel = f"{scene.class_name}/{i:04d}.png"
        (root / scene.class_name).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / rel), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
        rows.append([rel, scene.class_name, "north" if i % 3 else "south", *scene.box])
    if manifest:
        with (root / "manifest.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "site", "x0", "y0", "x1", "y1"])
            w.writerows(rows)
    return root


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    """A CSV file of ``header`` and ``rows``."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path
