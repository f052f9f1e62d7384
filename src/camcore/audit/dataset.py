"""An audit's DATA: a folder of class sub-folders, or a CSV/Parquet manifest, as :class:`Sample` s.

* A **folder**: each sub-folder is a class (its name is the label) holding images, found
  recursively (:data:`camcore.files.IMAGE_SUFFIXES`); images directly in DATA are unlabelled.
  The sample's ``id`` is its path relative to DATA (posix separators).
* A **manifest** (``.csv``, ``.parquet``/``.pq``): one row per sample. Columns: ``path``
  (relative to the manifest's folder; absolute paths are kept), optional ``label``, the group
  columns named by ``--groups``, and an optional object region: the box columns ``x0, y0, x1,
  y1`` (or one ``box`` column ``"x0,y0,x1,y1"``) in image pixels, x1/y1 exclusive, or a ``mask``
  column (an image path, relative as ``path``; non-zero pixels are the object). The ``id`` is
  ``path`` as written.

Everything that can be checked without decoding an image is checked by :func:`load_dataset`
and :func:`check_labels` before any work, each with a one-line :class:`CamcoreError` naming
the culprit (the row, the column) and the fix. A missing or unreadable image is not refused
here: it becomes a row with an ``error`` (it must not stop an audit of 100,000 images).

Example:
    >>> data = load_dataset("shapes/", groups=())              # doctest: +SKIP
    >>> data.samples[0].id, data.samples[0].label               # doctest: +SKIP
    ('circle/0001.png', 'circle')
"""

from __future__ import annotations

import csv
import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from camcore.errors import CamcoreError
from camcore.files import IMAGE_SUFFIXES

__all__ = ["BOX_COLUMNS", "MANIFEST_SUFFIXES", "Dataset", "Sample", "check_labels", "load_dataset"]

#: the columns of a box region, in image pixels
BOX_COLUMNS = ("x0", "y0", "x1", "y1")
MANIFEST_SUFFIXES = (".csv", ".parquet", ".pq")
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Sample:
    """One sample to audit.

    Attributes:
        id: the unique key (path relative to DATA, or the manifest's ``path`` as written).
        path: the absolute image path to read.
        label: the class name, or None.
        groups: the group columns' values (strings or None), by column name.
        box: the object's box (x0, y0, x1, y1) in image pixels, or None.
        mask: the absolute path of the object's mask image, or None.
    """

    id: str
    path: str
    label: str | None = None
    groups: dict[str, str | None] = field(default_factory=dict)
    box: Box | None = None
    mask: str | None = None


@dataclass(frozen=True)
class Dataset:
    """The samples of DATA, what DATA was and the files it names (for ``--out`` checks)."""

    samples: list[Sample]
    kind: str  # "folder" or "manifest"
    root: Path  # the folder, or the manifest's folder
    source: Path  # DATA as given
    groups: tuple[str, ...] = ()

    @property
    def labels(self) -> list[str]:
        """The distinct labels, sorted."""
        return sorted({s.label for s in self.samples if s.label is not None})


def load_dataset(data: str | Path, groups: Sequence[str] = ()) -> Dataset:
    """The :class:`Dataset` of ``data`` (a folder of class sub-folders or a manifest).

    Raises:
        CamcoreError: DATA missing or of another kind, an empty dataset, a manifest without
            ``path``, an unknown group column, a duplicated path, an incomplete or bad box.
    """
    source = Path(data)
    groups = tuple(groups)
    if len(set(groups)) != len(groups):
        raise CamcoreError(f"--groups names a column twice ({','.join(groups)}): name each once")
    if not source.exists():
        raise CamcoreError(f"DATA {str(source)!r} does not exist: give a folder of class sub-folders or a manifest")
    if source.is_dir():
        if groups:
            raise CamcoreError(f"--groups {','.join(groups)} needs a manifest (CSV or Parquet) with those columns; "
                               f"{str(source)!r} is a folder")  # fmt: skip
        return Dataset(_folder_samples(source), "folder", source.resolve(), source)
    if source.suffix.lower() not in MANIFEST_SUFFIXES:
        raise CamcoreError(f"DATA {str(source)!r} is neither a folder nor a manifest ({', '.join(MANIFEST_SUFFIXES)})")
    rows, columns = _read_manifest(source)
    samples = _manifest_samples(source, rows, columns, groups)
    return Dataset(samples, "manifest", source.resolve().parent, source, groups)


# ---------------------------------------------------------------------- folder
def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def _folder_samples(root: Path) -> list[Sample]:
    samples = []
    for p in sorted(root.rglob("*")):
        if not _is_image(p):
            continue
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        label = rel.parts[0] if len(rel.parts) > 1 else None
        samples.append(Sample(rel.as_posix(), str(p.resolve()), label))
    if not samples:
        raise CamcoreError(f"folder {str(root)!r} holds no images ({', '.join(IMAGE_SUFFIXES)}), neither directly "
                           "nor in class sub-folders")  # fmt: skip
    return samples


# ---------------------------------------------------------------------- manifest
def _text(value: Any) -> str | None:
    """A cell as text; None for an empty or missing cell (a float NaN too)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a Parquet float column of whole numbers: "3", not "3.0"
    text = str(value).strip()
    return text or None


def _read_manifest(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The manifest's rows (as dicts) and its column names, in order."""
    try:
        if path.suffix.lower() == ".csv":
            with path.open(newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                columns = [c.strip() for c in (reader.fieldnames or [])]
                rows = [{k.strip() if isinstance(k, str) else k: v for k, v in row.items()} for row in reader]
            if any(None in row for row in rows):
                bad = next(i for i, row in enumerate(rows) if None in row)
                raise CamcoreError(f"manifest {str(path)!r} row {bad + 2} has more cells than the header's "
                                   f"{len(columns)} columns: quote cells that hold commas")  # fmt: skip
        else:
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            columns = list(table.column_names)
            rows = table.to_pylist()
    except (OSError, UnicodeDecodeError) as exc:
        raise CamcoreError(f"cannot read manifest {str(path)!r}: {getattr(exc, 'strerror', None) or exc}") from None
    except CamcoreError:
        raise
    except Exception as exc:  # pyarrow's own errors (a file that is not Parquet)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CamcoreError(f"cannot read manifest {str(path)!r}: {first[:200]}") from None
    if len(set(columns)) != len(columns):
        dup = next(c for c in columns if columns.count(c) > 1)
        raise CamcoreError(f"manifest {str(path)!r} has two columns named {dup!r}: rename one")
    return rows, columns


def _row_name(path: Path, i: int) -> str:
    """How a row is named in an error: CSV rows by their line (the header is line 1)."""
    return f"line {i + 2}" if path.suffix.lower() == ".csv" else f"row {i}"


def _number(value: Any) -> float | None:
    text = _text(value)
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return math.nan


def _box(path: Path, i: int, row: dict[str, Any], columns: list[str]) -> Box | None:
    where = f"manifest {str(path)!r} {_row_name(path, i)}"
    if "box" in columns:
        raw = row.get("box")
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
        parts = list(raw) if isinstance(raw, (list, tuple)) else str(raw).strip("[]() ").split(",")
        values = [_number(v) for v in parts]
        if len(values) != 4 or any(v is None for v in values):
            raise CamcoreError(f"{where}: box {raw!r} needs four numbers x0,y0,x1,y1 (image pixels)")
    elif any(c in columns for c in BOX_COLUMNS):
        values = [_number(row.get(c)) for c in BOX_COLUMNS]
        if all(v is None for v in values):
            return None
        if any(v is None for v in values):
            missing = [c for c, v in zip(BOX_COLUMNS, values) if v is None]
            raise CamcoreError(f"{where}: the box misses {', '.join(missing)}: give all of x0, y0, x1, y1 or none")
    else:
        return None
    x0, y0, x1, y1 = (float(v) for v in values)  # type: ignore[arg-type]
    shown = ",".join(f"{v:g}" for v in (x0, y0, x1, y1))
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise CamcoreError(f"{where}: box {shown} holds a value that is not a number: x0,y0,x1,y1 in image pixels")
    if min(x0, y0) < 0 or not (x1 > x0 and y1 > y0):
        raise CamcoreError(f"{where}: box {shown} needs 0 <= x0 < x1 and 0 <= y0 < y1 (image pixels, x1/y1 "
                           "exclusive)")  # fmt: skip
    return (x0, y0, x1, y1)


def _manifest_samples(path: Path, rows: list[dict[str, Any]], columns: list[str], groups: tuple[str, ...]) -> list[
        Sample]:  # fmt: skip
    if "path" not in columns:
        usual = {"path", "file", "filename", "file_name", "filepath", "image", "image_path", "img", "img_path"}
        close = [c for c in columns if c.lower() in usual] or difflib.get_close_matches("path", columns, cutoff=0.5)
        hint = f" (is {close[0]!r} it? rename it to 'path')" if close else ""
        raise CamcoreError(f"manifest {str(path)!r} has no 'path' column{hint}; its columns: {', '.join(columns)}")
    for g in groups:
        if g not in columns:
            close = difflib.get_close_matches(g, columns, n=3, cutoff=0.5)
            hint = f"; closest: {', '.join(close)}" if close else f"; its columns: {', '.join(columns)}"
            raise CamcoreError(f"--groups column {g!r} is not in manifest {str(path)!r}{hint}")
    reserved = {"id", "path", "label", "error", "map"}
    clash = [g for g in groups if g in reserved]
    if clash:
        raise CamcoreError(f"--groups {clash[0]!r} is a column the audit writes itself: name another column")
    if not rows:
        raise CamcoreError(f"manifest {str(path)!r} has no rows")
    root = path.resolve().parent
    seen: dict[str, int] = {}
    samples = []
    for i, row in enumerate(rows):
        written = _text(row.get("path"))
        if written is None:
            raise CamcoreError(f"manifest {str(path)!r} {_row_name(path, i)} has an empty path: fill it or drop "
                               "the row")  # fmt: skip
        key = PurePosixPath(written.replace("\\", "/")).as_posix()
        if key in seen:
            raise CamcoreError(f"manifest {str(path)!r} lists {written!r} twice ({_row_name(path, seen[key])} and "
                               f"{_row_name(path, i)}): each path once")  # fmt: skip
        seen[key] = i
        mask = _text(row.get("mask")) if "mask" in columns else None
        box = _box(path, i, row, columns)
        if box is not None and mask is not None:
            raise CamcoreError(f"manifest {str(path)!r} {_row_name(path, i)} has both a box and a mask: give one "
                               "region")  # fmt: skip
        samples.append(Sample(
            id=key,
            path=str(root / key),
            label=_text(row.get("label")) if "label" in columns else None,
            groups={g: _text(row.get(g)) for g in groups},
            box=box,
            mask=None if mask is None else str(root / mask.replace("\\", "/")),
        ))  # fmt: skip
    return samples


def check_labels(samples: Sequence[Sample], class_names: Sequence[str], source: str) -> None:
    """Every label is one of ``class_names`` (which came from ``source``).

    Raises:
        CamcoreError: the first label that is not, with its sample and the closest names.
    """
    names = set(class_names)
    for s in samples:
        if s.label is not None and s.label not in names:
            close = difflib.get_close_matches(s.label, list(class_names), n=3, cutoff=0.5)
            more = ", ..." if len(class_names) > 10 else ""
            hint = f"closest: {', '.join(close)}" if close else f"the classes: {', '.join(class_names[:10])}{more}"
            raise CamcoreError(f"label {s.label!r} of {s.id!r} is not one of the {len(class_names)} class names from "
                               f"{source} ({hint}): fix the label or pass --classes")  # fmt: skip
