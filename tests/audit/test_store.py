"""samples.parquet as part files: atomic parts, resume by id, one writer, and no mixing of rows
from another model, layer, method or preprocessing unless told to restart."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from camcore.audit.store import PARTS, SampleStore, load_samples, provenance_of
from camcore.audit.worker import row_schema
from camcore.errors import CamcoreError

PROV = {"model_sha256": "ab" * 32, "layer": "conv", "method": "gradcam", "camcore_version": "0.1.0", "groups": ["site"]}


def _rows(schema: pa.Schema, ids: list[str]) -> pa.Table:
    cols = {f.name: pa.nulls(len(ids), f.type) for f in schema}
    cols["id"] = pa.array(ids, pa.string())
    if "site" in schema.names:
        cols["site"] = pa.array(["north"] * len(ids), pa.string())
    cols["method"] = pa.array([PROV["method"]] * len(ids), pa.string())
    return pa.Table.from_arrays(list(cols.values()), schema=schema)


def test_parts_append_and_load_sorted_by_id(tmp_path: Path) -> None:
    schema = row_schema(["site"], PROV)
    with SampleStore(tmp_path, schema) as store:
        assert store.done_ids() == set() and store.append(_rows(schema, [])) is None
        first = store.append(_rows(schema, ["c", "a"]))
        second = store.append(_rows(schema, ["b"]))
        assert store.done_ids() == {"a", "b", "c"}
    assert first is not None and first.name.startswith("part-000000000-") and first.suffix == ".parquet"
    assert second is not None and second.name.startswith("part-000000002-")
    table = load_samples(tmp_path)
    assert table.column("id").to_pylist() == ["a", "b", "c"]
    assert provenance_of(table.schema) == PROV
    assert pq.read_table(tmp_path / PARTS).num_rows == 3  # the folder reads whole as one Parquet dataset
    with SampleStore(tmp_path, schema) as again:  # a rerun: the same ids, more parts after them
        assert again.done_ids() == {"a", "b", "c"} and again.rows == 3


def test_a_killed_write_leaves_no_half_part(tmp_path: Path) -> None:
    schema = row_schema([], PROV)
    with SampleStore(tmp_path, schema) as store:
        store.append(_rows(schema, ["a"]))
    stale = tmp_path / PARTS / ".part-000000001-dead.part.parquet"  # what SIGKILL in atomic_write leaves
    stale.write_bytes(b"half a file")
    assert load_samples(tmp_path).num_rows == 1  # readers skip hidden files
    with SampleStore(tmp_path, schema):
        assert not stale.exists()  # the next run removes it


def test_a_changed_provenance_refuses_to_mix_unless_restart(tmp_path: Path) -> None:
    schema = row_schema(["site"], PROV)
    with SampleStore(tmp_path, schema) as store:
        store.append(_rows(schema, ["a"]))
    other = row_schema(["site"], {**PROV, "method": "hirescam"})
    with pytest.raises(CamcoreError) as err:
        SampleStore(tmp_path, other)
    assert str(err.value).endswith('method was "gradcam", now "hirescam"; pass --restart to discard them, or '
                                   "choose another --out")  # fmt: skip
    moved = row_schema(["site"], {**PROV, "layer": "conv2", "model_sha256": "cd" * 32})
    with pytest.raises(CamcoreError, match=r"model_sha256 was .* \(and layer\)"):
        SampleStore(tmp_path, moved)
    with SampleStore(tmp_path, other, restart=True) as store:
        assert store.done_ids() == set() and store.rows == 0
    with SampleStore(tmp_path, row_schema(["site"], {**PROV, "camcore_version": "0.2.0"})):
        pass  # a new camcore version alone does not refuse (the rows' figures do not change with it)


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    schema = row_schema([], PROV)
    with SampleStore(tmp_path, schema), pytest.raises(CamcoreError, match="another audit is writing into"):
        SampleStore(tmp_path, schema)
    with SampleStore(tmp_path, schema):  # released on close
        pass


def test_store_mistakes(tmp_path: Path) -> None:
    (tmp_path / PARTS).write_text("not a folder")
    with pytest.raises(CamcoreError, match="is a file; the audit keeps its rows in a folder"):
        SampleStore(tmp_path, row_schema([], PROV))
    with pytest.raises(CamcoreError, match="holds no rows"):
        load_samples(tmp_path / "empty")
    with SampleStore(tmp_path / "o", row_schema([], PROV)) as store, pytest.raises(CamcoreError, match="another"):
        store.append(_rows(row_schema(["site"], PROV), ["a"]))
