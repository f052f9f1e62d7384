"""Scenes with a planted shortcut and subgroups, for auditing a classifier.

The scenes are those of :mod:`camcore.scenes` (one class shape on a cluttered
background, its box and mask known) with two additions:

* **a mark**: a small, distinctive tag (a yellow square with a black rim and a
  magenta centre, :data:`MARK_SIDE` px at 96 px) near the top-left corner, at
  ``MARK_OFFSET +/- MARK_JITTER`` px. A model trained on scenes where one class
  always carries the mark learns the mark as a shortcut for that class
  (``tools/train_audit_model.py``). The object is always placed clear of the
  mark's zone, so the mark never overlaps the object's box, marked or not.
* **group attributes**: ``site`` ``"A"`` (as :mod:`camcore.scenes`) or ``"B"``
  (a washed-out camera: contrast reduced to :data:`SITE_B_CONTRAST` around the
  image mean, a warm tint, a Gaussian blur and stronger sensor noise), and
  ``camera`` ``"x"``/``"y"``, drawn at random and without any effect (a
  control: an audit must not flag it).

:func:`write_audit_dataset` writes scenes as PNG files with a CSV manifest
(``path,label,site,camera,marked,x0,y0,x1,y1`` and optionally ``mask``), the
input of ``camcore audit``.

Only numpy and OpenCV are used; a batch is a pure function of its arguments.

Example:
    >>> scenes = generate_audit_batch(200, seed=5, planted="star", mark_rate=0.6)
    >>> manifest = write_audit_dataset("audit-data", scenes)  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from camcore.errors import CamcoreError
from camcore.files import atomic_write
from camcore.scenes import CLASS_NAMES, OBJECT_SIZE_RANGE, cluttered_background, paint_object

__all__ = [
    "CAMERAS",
    "MANIFEST_COLUMNS",
    "MARK_JITTER",
    "MARK_OFFSET",
    "MARK_SIDE",
    "SITES",
    "SITE_B_CONTRAST",
    "AuditScene",
    "draw_mark",
    "generate_audit_batch",
    "generate_audit_scene",
    "mark_zone",
    "write_audit_dataset",
]

#: Side of the mark in pixels at ``size == 96`` (scaled with the image).
MARK_SIDE = 12
#: Distance of the mark's top-left corner from the image's, pixels at 96 px.
MARK_OFFSET = 4
#: Largest shift of the mark from its spot along each axis, pixels at 96 px.
MARK_JITTER = 2
#: Site values; ``"B"`` is the washed-out camera.
SITES: tuple[str, ...] = ("A", "B")
#: Camera values; they change nothing.
CAMERAS: tuple[str, ...] = ("x", "y")
#: Site B's contrast factor around the image mean.
SITE_B_CONTRAST = 0.55
#: Columns of the manifest written by :func:`write_audit_dataset` (``mask`` only with masks).
MANIFEST_COLUMNS: tuple[str, ...] = ("path", "label", "site", "camera", "marked", "x0", "y0", "x1", "y1")

_YELLOW = (255, 215, 0)
_MAGENTA = (230, 0, 200)


@dataclass(frozen=True)
class AuditScene:
    """One generated audit scene.

    Attributes:
        image: ``uint8`` RGB array ``(size, size, 3)``.
        label: index into :data:`camcore.scenes.CLASS_NAMES`.
        box: the object's tight box ``(x0, y0, x1, y1)``, ``x1``/``y1`` exclusive.
        mask: ``bool`` ``(size, size)``, the object's pixels.
        marked: whether the mark is drawn.
        mark_box: the mark's box ``(x0, y0, x1, y1)`` where it is (or would be) drawn.
        site: one of :data:`SITES`.
        camera: one of :data:`CAMERAS`.
    """

    image: np.ndarray
    label: int
    box: tuple[int, int, int, int]
    mask: np.ndarray
    marked: bool
    mark_box: tuple[int, int, int, int]
    site: str
    camera: str

    @property
    def class_name(self) -> str:
        """The name of :attr:`label`."""
        return CLASS_NAMES[self.label]


def _mark_geometry(size: int) -> tuple[int, int, int]:
    """The mark's ``(side, offset, jitter)`` in pixels at image side ``size`` (the 96 px values scaled, rounded)."""
    s = size / 96.0
    return max(round(MARK_SIDE * s), 4), round(MARK_OFFSET * s), round(MARK_JITTER * s)


def mark_zone(size: int) -> tuple[int, int, int, int]:
    """The box ``(x0, y0, x1, y1)`` every jittered mark lies in, at image side ``size``.

    ``x0 = y0 = offset - jitter`` and ``x1 = y1 = offset + jitter + side``, with
    :data:`MARK_OFFSET`, :data:`MARK_JITTER` and :data:`MARK_SIDE` scaled by
    ``size / 96`` and rounded: ``(2, 2, 18, 18)`` at 96 px.
    """
    side, offset, jitter = _mark_geometry(size)
    return (offset - jitter, offset - jitter, offset + jitter + side, offset + jitter + side)


def draw_mark(canvas: np.ndarray, x0: int, y0: int, side: int) -> None:
    """Draw the mark (yellow square, black 1-px rim, magenta centre) with its top-left at ``(x0, y0)``, in place."""
    cv2.rectangle(canvas, (x0, y0), (x0 + side - 1, y0 + side - 1), _YELLOW, cv2.FILLED)
    cv2.rectangle(canvas, (x0, y0), (x0 + side - 1, y0 + side - 1), (0, 0, 0), 1)
    q = max(side // 3, 1)
    cv2.rectangle(canvas, (x0 + q, y0 + q), (x0 + side - 1 - q, y0 + side - 1 - q), _MAGENTA, cv2.FILLED)


def _site_b(img: np.ndarray, mean: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """The washed-out camera: contrast around ``mean`` (per channel), warm tint, blur (float32 in and out)."""
    img = mean + SITE_B_CONTRAST * (img - mean)
    img = img * np.array([1.08, 0.98, 0.8], np.float32) + np.array([12.0, 6.0, 0.0], np.float32)
    sigma = float(rng.uniform(0.8, 1.2)) * size / 96.0
    return cv2.GaussianBlur(img, (0, 0), sigma)


def generate_audit_scene(
    rng: np.random.Generator, size: int = 96, *, label: int, marked: bool, site: str = "A", camera: str = "x"
) -> AuditScene:
    """One scene of class ``label``, optionally marked, shot by ``site``'s camera.

    The object is drawn as in :func:`camcore.scenes.generate_scene` (diameter in
    :data:`camcore.scenes.OBJECT_SIZE_RANGE` scaled by ``size / 96``, a colour far
    from the background under it), at a random place whose enclosing circle
    keeps 2 px clear of :func:`mark_zone`, whether or not the mark is drawn.

    Args:
        rng: the random generator; the scene is a pure function of its state and the other arguments.
        size: side of the square image, pixels (at least 48).
        label: index into :data:`camcore.scenes.CLASS_NAMES`.
        marked: draw the mark.
        site: ``"A"`` (plain) or ``"B"`` (washed out: see the module docstring).
        camera: a label only, stored on the scene.
    """
    if site not in SITES:
        raise CamcoreError(f"site {site!r} is not one of {', '.join(SITES)}")
    if size < 48:
        raise CamcoreError(f"size {size} is too small for an audit scene; use at least 48 px")
    canvas = cluttered_background(rng, size)
    scale = size / 96.0
    r = rng.uniform(*OBJECT_SIZE_RANGE) * scale / 2.0
    margin = r + 1.0
    zx0, zy0, zx1, zy1 = mark_zone(size)
    while True:  # keep the object's circle 2 px clear of the mark's zone
        cx = rng.uniform(margin, size - margin)
        cy = rng.uniform(margin, size - margin)
        dx = max(zx0 - cx, 0.0, cx - zx1)
        dy = max(zy0 - cy, 0.0, cy - zy1)
        if np.hypot(dx, dy) > r + 3.0:
            break
    angle = rng.uniform(0, 2 * np.pi)
    img, cover = paint_object(canvas, label, cx, cy, r, angle, rng)

    mean = img.mean(axis=(0, 1), keepdims=True)  # site B's contrast pivot, taken before the mark
    mean = img.mean(axis=(0, 1), keepdims=True)  # site B's contrast pivot, taken before the mark
    side, offset, jitter = _mark_geometry(size)
    mx, my = (offset + int(v) for v in rng.integers(-jitter, jitter + 1, 2))
    if marked:  # drawn on a uint8 copy, then only its box is taken: the rest of the scene stays as it was
        marks = np.ascontiguousarray(np.clip(img, 0, 255).astype(np.uint8))
        draw_mark(marks, mx, my, side)
        img[my : my + side, mx : mx + side] = marks[my : my + side, mx : mx + side]
    noise_sigma = 6.0
    if site == "B":
        img = _site_b(img, mean, rng, size)
        noise_sigma = 12.0
    img += rng.normal(0, noise_sigma, img.shape).astype(np.float32)
    image = np.clip(np.round(img), 0, 255).astype(np.uint8)
    mask = cover > 0
    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return AuditScene(
        image=image,
        label=label,
        box=box,
        mask=mask,
        marked=marked,
        mark_box=(mx, my, mx + side, my + side),
        site=site,
        camera=camera,
    )


def generate_audit_batch(
    n: int,
    seed: int,
    size: int = 96,
    *,
    planted: str | None = "star",
    mark_rate: float = 1.0,
    site_b_rate: float = 0.0,
    classes: Sequence[str] = CLASS_NAMES,
) -> list[AuditScene]:
    """``n`` scenes from ``numpy.random.default_rng(seed)``.

    Per scene, in this order: the label (uniform over ``classes``), whether it is
    marked (only the ``planted`` class, with probability ``mark_rate``), the site
    (``"B"`` with probability ``site_b_rate``), the camera (uniform), then the
    scene. The first ``k`` scenes do not depend on ``n``.

    Args:
        n: number of scenes.
        seed: the seed.
        size: image side, pixels.
        planted: the class that carries the mark, or ``None`` for no mark at all (clean data).
        mark_rate: probability that a ``planted`` scene carries the mark (1.0 for training
            a shortcut; between 0 and 1 to mix clean and marked scenes of the class).
        site_b_rate: probability of site ``"B"``.
        classes: the class names to draw from (a subset of :data:`camcore.scenes.CLASS_NAMES`).
    """
    unknown = [c for c in [*classes, *([] if planted is None else [planted])] if c not in CLASS_NAMES]
    if unknown:
        raise CamcoreError(f"unknown class {unknown[0]!r}; the scenes' classes are {', '.join(CLASS_NAMES)}")
    for name, rate in (("mark_rate", mark_rate), ("site_b_rate", site_b_rate)):
        if not 0.0 <= rate <= 1.0:
            raise CamcoreError(f"{name} {rate} is not a probability; give a value in [0, 1]")
    indices = [CLASS_NAMES.index(c) for c in classes]
    rng = np.random.default_rng(seed)
    scenes = []
    for _ in range(n):
        label = indices[int(rng.integers(len(indices)))]
        marked = bool(rng.random() < mark_rate) and planted is not None and CLASS_NAMES[label] == planted
        site = "B" if rng.random() < site_b_rate else "A"
        camera = CAMERAS[int(rng.integers(len(CAMERAS)))]
        scenes.append(generate_audit_scene(rng, size, label=label, marked=marked, site=site, camera=camera))
    return scenes


def write_audit_dataset(folder: str | Path, scenes: Sequence[AuditScene], masks: bool = False) -> Path:
    """Write ``scenes`` as ``images/NNNNN.png`` and a manifest ``manifest.csv``; return the manifest's path.

    The manifest has the columns :data:`MANIFEST_COLUMNS` (``path`` relative to
    ``folder``, ``label`` the class name, ``marked`` ``0``/``1``, the object box
    in image pixels with ``x1``/``y1`` exclusive) and, with ``masks``, ``mask``:
    ``masks/NNNNN.png``, the object's pixels as 255 on 0. The manifest is
    written last and atomically, so its presence means the dataset is whole.
    Existing files of the same names are replaced; nothing else is touched.
    """
    root = Path(folder)
    (root / "images").mkdir(parents=True, exist_ok=True)
    if masks:
        (root / "masks").mkdir(exist_ok=True)
    columns = [*MANIFEST_COLUMNS, *(["mask"] if masks else [])]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns)
    for i, s in enumerate(scenes):
        rel = f"images/{i:05d}.png"
        if not cv2.imwrite(str(root / rel), cv2.cvtColor(s.image, cv2.COLOR_RGB2BGR)):
            raise CamcoreError(f"cannot write {str(root / rel)!r}; check the folder is writable")
        row: list[object] = [rel, s.class_name, s.site, s.camera, int(s.marked), *s.box]
        if masks:
            mrel = f"masks/{i:05d}.png"
            if not cv2.imwrite(str(root / mrel), s.mask.astype(np.uint8) * 255):
                raise CamcoreError(f"cannot write {str(root / mrel)!r}; check the folder is writable")
            row.append(mrel)
        writer.writerow(row)
    manifest = root / "manifest.csv"
    atomic_write(manifest, lambda p: p.write_text(text.getvalue()))
    return manifest
