"""``DIR/samples.parquet``: a Parquet dataset directory of part files, appended as work proceeds.

* Each part (``part-<start>-<uuid>.parquet``, ``start`` the rows stored before it) is written to a
  hidden temporary name and renamed into place (:func:`camcore.files.atomic_write`): a killed run
  (SIGKILL included) leaves whole parts only. Readers skip hidden files, and the next run removes
  the temporaries a kill left behind. Parts are never rewritten.
* **Resume**: :meth:`SampleStore.done_ids` gives the ids stored; the run skips them.
* **Provenance**: every part carries the run's provenance (schema metadata ``camcore.provenance``).
  Opening a store whose parts came from another model, layer, method or preprocessing refuses
  to mix them, naming what changed, unless ``restart`` (then the old parts are removed).
* One writer at a time: a lock file (``DIR/.camcore-audit.lock``, ``flock``) refuses a second
  audit into the same folder while one runs; the system drops it when a run dies.

``pyarrow.parquet.read_table(DIR / "samples.parquet")`` reads it whole; :func:`load_samples`
returns it sorted by ``id``.

Example:
    >>> store = SampleStore(out, schema, restart=False)        # doctest: +SKIP
    >>> todo = [s for s in samples if s.id not in store.done_ids()]
    >>> store.append(worker(todo[:64])); store.close()
"""

from __future__ import annotations

import contextlib
import json
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from camcore.errors import CamcoreError
from camcore.files import atomic_write

__all__ = ["CHECKED", "PARTS", "SampleStore", "load_samples", "provenance_of"]

PARTS = "samples.parquet"
LOCK = ".camcore-audit.lock"
#: the provenance keys that must match for rows to mix (what makes two rows comparable)
CHECKED = ("model_sha256", "layer", "method", "output", "task", "input_size", "mean", "std", "bgr", "nhwc",
           "class_names", "groups", "map_side")  # fmt: skip


def provenance_of(schema: pa.Schema) -> dict[str, Any]:
    """The ``camcore.provenance`` metadata of a part's schema ({} when absent)."""
    raw = (schema.metadata or {}).get(b"camcore.provenance")
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _parts(folder: Path) -> list[Path]:
    return sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []


class SampleStore:
    """The part files of one audit's ``samples.parquet``, opened for appending.

    Args:
        out: the audit's output folder (``samples.parquet`` is made inside it).
        schema: the rows' schema (:func:`camcore.audit.worker.row_schema`), whose provenance
            the stored parts must share.
        restart: remove the stored parts instead of refusing a changed provenance.

    Raises:
        CamcoreError: another audit writes into ``out``, ``samples.parquet`` is a file, or the
            stored rows come from another model, layer, method or preprocessing.
    """

    def __init__(self, out: str | Path, schema: pa.Schema, *, restart: bool = False) -> None:
        self.out = Path(out)
        self.folder = self.out / PARTS
        self.schema = schema
        self._lock = self._acquire()
        try:
            if self.folder.exists() and not self.folder.is_dir():
                raise CamcoreError(f"{str(self.folder)!r} is a file; the audit keeps its rows in a folder of that "
                                   "name: move the file away or choose another --out")  # fmt: skip
            self.folder.mkdir(parents=True, exist_ok=True)
            for stale in self.folder.glob(".part-*"):  # temporaries of a killed run
                with contextlib.suppress(OSError):
                    stale.unlink()
            if restart:
                for part in _parts(self.folder):
                    part.unlink()
            else:
                self._check_provenance()
            self.rows = self._count()
        except BaseException:
            self.close()
            raise

    def _acquire(self) -> Any:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no lock
            return None
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            f = (self.out / LOCK).open("a+")
        except OSError as exc:
            raise CamcoreError(f"cannot write in --out folder {str(self.out)!r}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise CamcoreError(f"another audit is writing into {str(self.out)!r}: wait for it to end, or choose "
                               "another --out") from None  # fmt: skip
        return f

    def _check_provenance(self) -> None:
        parts = _parts(self.folder)
        if not parts:
            return
        want = provenance_of(self.schema)
        try:
            have = provenance_of(pq.read_schema(parts[0]))
        except Exception:
            have = {}
        changed = [k for k in CHECKED if have.get(k) != want.get(k)]
        if changed:
            k = changed[0]

            def shown(v: Any) -> str:
                text = json.dumps(v)
                return text if len(text) <= 60 else text[:57] + "..."

            also = f" (and {', '.join(changed[1:])})" if len(changed) > 1 else ""
            raise CamcoreError(f"{str(self.folder)!r} holds rows of another audit: {k} was {shown(have.get(k))}, now "
                               f"{shown(want.get(k))}{also}; pass --restart to discard them, or choose another "
                               "--out")  # fmt: skip

    def _count(self) -> int:
        return sum(pq.ParquetFile(p).metadata.num_rows for p in _parts(self.folder))

    def done_ids(self) -> set[str]:
        """The ids of the stored rows."""
        if not _parts(self.folder):
            return set()
        return set(pq.read_table(self.folder, columns=["id"]).column("id").to_pylist())

    def append(self, table: pa.Table) -> Path | None:
        """Store ``table`` (rows of :attr:`schema`) as one new part, atomically; None when empty."""
        if table.num_rows == 0:
            return None
        if not table.schema.equals(self.schema, check_metadata=False):
            raise CamcoreError("rows of another schema cannot join this audit's samples.parquet")
        table = table.replace_schema_metadata(self.schema.metadata)
        path = self.folder / f"part-{self.rows:09d}-{uuid.uuid4().hex[:12]}.parquet"
        try:
            atomic_write(path, lambda tmp: pq.write_table(table, tmp))
        except OSError as exc:
            raise CamcoreError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None
        self.rows += table.num_rows
        return path

    def close(self) -> None:
        """Release the lock (idempotent)."""
        if self._lock is not None:
            with contextlib.suppress(OSError):
                self._lock.close()
            self._lock = None

    def __enter__(self) -> SampleStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_samples(out: str | Path) -> pa.Table:
    """The rows of an audit's output folder ``out``, sorted by ``id``.

    Raises:
        CamcoreError: ``out`` holds no ``samples.parquet`` rows.
    """
    folder = Path(out) / PARTS
    if not _parts(folder):
        raise CamcoreError(f"{str(folder)!r} holds no rows: run `camcore audit MODEL DATA --out {out}` first")
    table = pq.read_table(folder)
    return table.sort_by("id")

