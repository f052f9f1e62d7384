"""The Ray Data engine gives the local engine's rows, resumes what either engine began, and names an
unreachable cluster in one line. One local 2-CPU Ray serves the module (its start costs seconds)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

ray = pytest.importorskip("ray")

import camcore.audit  # noqa: E402
from camcore.audit.store import PARTS  # noqa: E402
from camcore.errors import CamcoreError  # noqa: E402
from tests.audit.core_data import MODEL, write_scenes  # noqa: E402

N = 30


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray for the module; run_ray uses the Ray it finds initialised and leaves it up."""
    import logging

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_scenes(tmp_path_factory.mktemp("ray_data"), N, seed=5)
    (root / "circle" / "broken.png").write_bytes(b"not a png")  # a bad sample: an error row on both engines
    manifest = root / "manifest.csv"
    manifest.write_text(manifest.read_text() + "circle/broken.png,circle,north,0,0,4,4\n")
    return manifest


@pytest.fixture(scope="module")
def local_rows(data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[pa.Table, Path]:
    out = tmp_path_factory.mktemp("audit_local")
    table, _ = camcore.audit.run(MODEL, data, out, groups="site", batch_size=4, progress=False)
    return table, out


def _same_rows(a: pa.Table, b: pa.Table) -> None:
    assert a.schema.equals(b.schema, check_metadata=True)
    assert a.column("id").to_pylist() == b.column("id").to_pylist()
    for name in a.column_names:
        assert a.column(name).to_pylist() == b.column(name).to_pylist(), name


def test_ray_rows_equal_local_rows(local_ray: None, data: Path, local_rows: tuple[pa.Table, Path],
                                   tmp_path: Path) -> None:  # fmt: skip
    table, summary = camcore.audit.run(MODEL, data, tmp_path / "ray", groups="site", batch_size=4, progress=False,
                                       engine="ray")  # fmt: skip
    assert table.num_rows == N + 1 and table.column("error").null_count == N
    assert summary["engine"]["engine"] == "ray" and summary["engine"]["rows"] == N + 1
    _same_rows(local_rows[0], table)
    assert len(set(table.column("id").to_pylist())) == N + 1


def test_ray_finishes_what_the_local_engine_began(local_ray: None, data: Path, local_rows: tuple[pa.Table, Path],
                                                  tmp_path: Path) -> None:  # fmt: skip
    out = tmp_path / "half"
    shutil.copytree(local_rows[1], out)
    parts = sorted((out / PARTS).glob("part-*.parquet"))
    assert len(parts) >= 2
    for part in parts[len(parts) // 2 :]:  # as if killed halfway
        part.unlink()
    kept = sum(pa.parquet.read_metadata(p).num_rows for p in parts[: len(parts) // 2])
    table, summary = camcore.audit.run(MODEL, data, out, groups="site", batch_size=4, progress=False, engine="ray")
    assert summary["engine"]["rows"] == N + 1 - kept
    _same_rows(local_rows[0], table)


def test_an_unreachable_cluster_is_one_line(data: Path, tmp_path: Path) -> None:
    with pytest.raises(CamcoreError, match=r"no Ray cluster answers at --ray-address '127\.0\.0\.1:9'") as err:
        camcore.audit.run(MODEL, data, tmp_path / "x", groups="site", progress=False, engine="ray",
                          ray_address="127.0.0.1:9")  # fmt: skip
    assert "\n" not in str(err.value)
