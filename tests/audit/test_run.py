"""``camcore audit`` end to end on the demo model: the rows, bad samples as rows, the class names'
source, one-line refusals before any work, and resumption after SIGKILL, SIGTERM and Ctrl-C with
the same rows as an uninterrupted run."""

from __future__ import annotations

import json
import os
import pty
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import camcore.audit
from camcore.audit.store import PARTS, load_samples
from camcore.cli import main
from camcore.scenes import CLASS_NAMES
from tests.audit.core_data import MODEL, write_csv, write_scenes

N_SIGNALLED = 160  # images of the interrupted runs: enough that a signal lands mid-run


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    got = capsys.readouterr()
    return rc, got.out, got.err


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_scenes(tmp_path_factory.mktemp("scenes"), 24, seed=3)


def test_an_audit_with_bad_samples(scenes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [line.split(",") for line in (scenes / "manifest.csv").read_text().splitlines()[1:]]
    rows = [[str(scenes / r[0]), *r[1:]] for r in rows]  # absolute paths: kept as they are
    (tmp_path / "broken.png").write_bytes(b"not a png")
    shutil.copy(rows[0][0], tmp_path / "copy.png")
    rows += [["broken.png", "star", "north", "", "", "", ""], ["gone.png", "", "south", "", "", "", ""],
             ["copy.png", rows[0][1], "north", "0", "0", "97", "10"]]  # a box past the image's 96 px  # fmt: skip
    data = write_csv(tmp_path / "m.csv", ["path", "label", "site", "x0", "y0", "x1", "y1"], rows)
    out = tmp_path / "out"
    rc, stdout, stderr = _cli(["audit", MODEL, str(data), "--out", str(out), "--groups", "site"], capsys)
    assert rc == 2, stderr
    assert re.fullmatch(rf"audited 27 samples into {out}: 27 rows, 3 errors, \d+ flags.*\nreport: .*\n", stdout)
    table = load_samples(out)
    assert table.num_rows == 27 and table.column("id").to_pylist() == sorted(table.column("id").to_pylist())
    bad = {r["id"]: r for r in table.to_pylist() if r["error"] is not None}
    assert "cannot decode image" in bad["broken.png"]["error"] and "does not exist" in bad["gone.png"]["error"]
    assert "reaches beyond the image (96x96 pixels)" in bad["copy.png"]["error"]
    assert bad["broken.png"]["label"] == "star" and bad["gone.png"]["site"] == "south"
    assert all(r["prediction"] is None and r["map"] is None and r["entropy"] is None for r in bad.values())
    good = [r for r in table.to_pylist() if r["error"] is None]
    assert len(good) == 24
    for r in good:
        assert r["prediction"] in CLASS_NAMES and r["explained"] == r["prediction"] and len(r["map"]) == 32 * 32
        assert r["top_k_classes"][0] == r["prediction"] and r["top_k_scores"][0] == r["confidence"]
        assert r["correct"] == (r["label"] == r["prediction"]) and 0 <= r["region_energy"] <= 1
        assert r["method"] == "gradcam" and r["layer"] == "/features/features.17/Relu_output_0"
        assert len(r["model_sha256"]) == 64 and r["site"] in ("north", "south")
    assert sum(r["correct"] for r in good) >= 20  # the demo classifier knows its scenes
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["errors"] == 3 and summary["counts"]["samples"] == 27
    assert summary["class_names_source"] == "model metadata" and summary["class_names"] == list(CLASS_NAMES)
    assert Path(summary["report"]).is_file() and summary["engine"]["engine"] == "local"
    assert json.loads(table.schema.metadata[b"camcore.groups"]) == ["site"]

    parts = sorted((out / PARTS).iterdir())
    rc, stdout, _ = _cli(["audit", MODEL, str(data), "--out", str(out), "--groups", "site"], capsys)
    assert rc == 2 and sorted((out / PARTS).iterdir()) == parts  # resumed: nothing left to do, no new part
    assert load_samples(out).equals(table)


def test_another_method_refuses_to_mix_unless_restart(scenes: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    out = tmp_path / "out"
    first, _ = camcore.audit.run(MODEL, scenes / "manifest.csv", out, progress=False)
    rc, _, err = _cli(["audit", MODEL, str(scenes / "manifest.csv"), "--out", str(out), "--method", "hirescam"],
                      capsys)  # fmt: skip
    assert rc == 2 and err.count("\n") == 1 and 'method was "gradcam", now "hirescam"; pass --restart' in err
    table, summary = camcore.audit.run(MODEL, scenes / "manifest.csv", out, method="hirescam", restart=True,
                                       progress=False)  # fmt: skip
    assert table.num_rows == first.num_rows and set(table.column("method").to_pylist()) == {"hirescam"}
    assert summary["method"] == "hirescam"


def test_where_the_class_names_come_from(scenes: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare.onnx"  # the demo model without its JSON sidecar: no names in its metadata
    shutil.copy(MODEL, bare)
    folder = tmp_path / "folder"
    shutil.copytree(scenes, folder, ignore=shutil.ignore_patterns("*.csv"))
    assert len({p.parent.name for p in folder.rglob("*.png")}) == 5
    _, summary = camcore.audit.run(bare, folder, tmp_path / "a", progress=False)
    assert summary["class_names_source"] == "labels" and summary["class_names"] == sorted(CLASS_NAMES)
    names = tmp_path / "names.txt"
    names.write_text("\n".join(CLASS_NAMES) + "\n\n")
    _, summary = camcore.audit.run(bare, folder, tmp_path / "b", classes=str(names), progress=False)
    assert summary["class_names_source"] == "--classes" and summary["class_names"] == list(CLASS_NAMES)
    one = tmp_path / "one"
    shutil.copytree(folder / "star", one / "star")
    _, summary = camcore.audit.run(bare, one, tmp_path / "c", classes="a,b,c,d,star", progress=False)
    assert summary["class_names_source"] == "--classes"
    shutil.rmtree(one / "star")
    shutil.copytree(folder / "star", one / "unlabelled")
    with pytest.raises(camcore.CamcoreError, match=r"labelled .* but the class names are unknown .* pass --classes"):
        camcore.audit.run(bare, one, tmp_path / "d", progress=False)


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("no_path", "has no 'path' column (is 'file' it? rename it to 'path')"),
        ("unknown_group", "--groups column 'sit' is not in manifest"),
        ("duplicate", "twice (line 2 and line 3): each path once"),
        ("bad_box", "box 9,0,2,4 needs 0 <= x0 < x1"),
        ("bad_label", "label 'sqare' of 'a.png' is not one of the 5 class names from model metadata (closest: square"),
        ("class_count", "--classes gives 2 names but the model has 5 outputs"),
        ("out_inside", "lies inside DATA"),
        ("out_is_input", "would overwrite the input"),
        ("ray_address", "--ray-address needs --engine ray"),
        ("classes_twice", "--classes names 'a' twice"),
        ("no_model", "does not exist: give the .onnx file"),
    ],
)
def test_bad_input_is_one_line_before_any_work(case: str, needle: str, scenes: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    img = str(next(scenes.rglob("*.png")))
    csv_rows = {
        "no_path": (["file", "label"], [[img, "star"]]),
        "unknown_group": (["path", "site"], [[img, "x"]]),
        "duplicate": (["path"], [[img], [img]]),
        "bad_box": (["path", "x0", "y0", "x1", "y1"], [[img, 9, 0, 2, 4]]),
        "bad_label": (["path", "label"], [["a.png", "sqare"]]),
    }
    data = str(scenes / "manifest.csv")
    extra: list[str] = []
    out = str(tmp_path / "out")
    if case in csv_rows:
        data = str(write_csv(tmp_path / "m.csv", *csv_rows[case]))
        extra = ["--groups", "sit"] if case == "unknown_group" else []
    elif case == "class_count":
        extra = ["--classes", "a,b"]
    elif case == "classes_twice":
        extra = ["--classes", "a,b,a,c,d"]
    elif case == "out_inside":
        data, out = str(scenes), str(scenes / "audit")
    elif case == "out_is_input":
        (tmp_path / "summary.json").write_bytes(b"")
        data = str(write_csv(tmp_path / "m.csv", ["path"], [["summary.json"]]))
        out = str(tmp_path)
    elif case == "ray_address":
        extra = ["--ray-address", "auto"]
    model = str(tmp_path / "none.onnx") if case == "no_model" else MODEL
    rc, stdout, err = _cli(["audit", model, data, "--out", out, *extra], capsys)
    assert rc == 2 and stdout == ""
    assert err.count("\n") == 1 and err.startswith("camcore: error: ") and needle in err, err
    assert not (Path(out) / PARTS).exists()


# ---------------------------------------------------------------------- interrupted runs
@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pa.Table]:
    """A folder of scenes and its uninterrupted audit's rows."""
    root = tmp_path_factory.mktemp("many")
    data = write_scenes(root / "data", N_SIGNALLED, seed=11, manifest=False)
    table, _ = camcore.audit.run(MODEL, data, root / "reference", progress=False)
    return data, table


def _start(data: Path, out: Path, stderr: int | None = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "camcore", "audit", MODEL, str(data), "--out", str(out),
                             "--batch-size", "2"], stdout=subprocess.DEVNULL, stderr=stderr,
                            stdin=subprocess.DEVNULL)  # fmt: skip


def _parts(out: Path) -> list[Path]:
    return sorted((out / PARTS).glob("part-*.parquet")) if (out / PARTS).is_dir() else []


def _wait_for_parts(proc: subprocess.Popen[bytes], out: Path, more_than: int, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while len(_parts(out)) <= more_than and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.005)


def _drain(fd: int) -> bytes:
    """What is left to read on ``fd`` (the pseudo-terminal of a process that ended)."""
    seen = b""
    while select.select([fd], [], [], 0.2)[0]:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        seen += chunk
    return seen


def _read_until(proc: subprocess.Popen[bytes], fd: int, needle: bytes, timeout: float = 60.0) -> bytes:
    seen = b""
    end = time.monotonic() + timeout
    while not re.search(needle, seen) and time.monotonic() < end and proc.poll() is None:
        if select.select([fd], [], [], 0.1)[0]:
            try:
                seen += os.read(fd, 4096)
            except OSError:
                break
    return seen


def test_killed_terminated_interrupted_and_rerun_gives_the_same_rows(many: tuple[Path, pa.Table],
                                                                     tmp_path: Path) -> None:  # fmt: skip
    """SIGKILL at random points (no clean-up at all) twice, then SIGTERM (143) and Ctrl-C (130) under
    a pseudo-terminal, where the progress bar shows the rate and the ETA and the signals store the
    rows done as a last part, leaving no temporary; the rerun that completes holds the rows of an
    uninterrupted run (made with another batch size), none twice."""
    data, reference = many
    out = tmp_path / "out"
    rng = random.Random(0)
    for _ in range(2):
        proc = _start(data, out)
        _wait_for_parts(proc, out, len(_parts(out)))
        time.sleep(rng.uniform(0.0, 0.05))
        proc.kill()
        proc.wait(timeout=60)
        assert 0 < pq.read_table(out / PARTS).num_rows < N_SIGNALLED, "the run ended before it was killed"
    for sig, code, word in ((signal.SIGTERM, 143, b"terminated"), (signal.SIGINT, 130, b"interrupted")):
        leader, follower = pty.openpty()
        proc = _start(data, out, stderr=follower)
        os.close(follower)
        try:
            before = len(_parts(out))
            seen = _read_until(proc, leader, rb"\d+/\d+ \[[\d:]+<[\d:?]+, +[\d.]+(?:img/s|s/img)\]")
            assert re.search(rb"camcore audit: +\d+%\|", seen), seen[-300:]
            _wait_for_parts(proc, out, before)
            proc.send_signal(sig)
            assert proc.wait(timeout=60) == code
            assert word in seen + _drain(leader)
        finally:
            os.close(leader)
            if proc.poll() is None:
                proc.kill()
        assert 0 < pq.read_table(out / PARTS).num_rows < N_SIGNALLED
        assert not [p.name for p in out.rglob(".*part*")]
    proc = _start(data, out)
    assert proc.wait(timeout=120) == 0
    raw = pq.read_table(out / PARTS).column("id").to_pylist()
    assert len(raw) == len(set(raw)) == N_SIGNALLED, "duplicated or missing rows"
    assert load_samples(out).equals(reference)


def test_engine_ray_without_its_module_is_one_line(scenes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    import importlib

    real = importlib.import_module

    def missing(name: str, package: str | None = None) -> object:
        if name == "camcore.audit.ray_engine":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", missing)
    rc, _, err = _cli(["audit", MODEL, str(scenes), "--out", str(tmp_path / "out"), "--engine", "ray"], capsys)
    assert rc == 2 and err == ("camcore: error: --engine ray is not available in this camcore yet "
                                "(camcore.audit.ray_engine is missing): use --engine local\n")  # fmt: skip


def test_a_model_of_any_input_size_audits_each_image_at_its_own_size(tmp_path: Path) -> None:
    """No resize applies: each image keeps its size (batched with its like), its box maps 1:1, its
    stored map keeps its aspect (long side 32)."""
    import cv2
    import numpy as np
    import onnx

    from tests.models import tiny_classifier

    model, _ = tiny_classifier(dynamic_spatial=True)
    onnx.save(model, str(tmp_path / "any.onnx"))
    rng = np.random.default_rng(0)
    rows = []
    for i, (h, w) in enumerate([(20, 30), (16, 16), (30, 20), (20, 30)]):
        cv2.imwrite(str(tmp_path / f"{i}.png"), rng.integers(0, 256, (h, w, 3), np.uint8))
        rows.append([f"{i}.png", 0, 0, w // 2, h // 2])
    data = write_csv(tmp_path / "m.csv", ["path", "x0", "y0", "x1", "y1"], rows)
    table, summary = camcore.audit.run(tmp_path / "any.onnx", data, tmp_path / "out", progress=False)
    assert summary["class_names_source"] == "indices" and summary["counts"]["errors"] == 0
    shapes = [(r["map_height"], r["map_width"]) for r in table.to_pylist()]
    assert shapes == [(21, 32), (32, 32), (32, 21), (21, 32)]
    assert table.column("region_area").to_pylist() == [0.25] * 4
    assert set(table.column("prediction").to_pylist()) <= {"0", "1", "2", "3", "4"}


def test_the_row_function_pickles_and_gives_the_same_rows_in_any_batch(scenes: Path) -> None:
    """What the Ray engine relies on: ``AuditWorker(config)`` pickles as its config, takes samples as a
    list or as their table (or its columns), and a sample's row does not depend on its batch."""
    import pickle

    from camcore.audit.dataset import load_dataset
    from camcore.audit.worker import AuditConfig, AuditWorker, samples_table

    samples = load_dataset(scenes / "manifest.csv", ["site"]).samples[:10]
    config = AuditConfig(MODEL, size=(96, 96), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), batch_size=16,
                         class_names=CLASS_NAMES, groups=("site",), provenance={"method": "gradcam"})  # fmt: skip
    whole = AuditWorker(config)(samples)
    assert whole.column("id").to_pylist() == [s.id for s in samples] and whole.column("error").null_count == 10
    twin = pickle.loads(pickle.dumps(AuditWorker(AuditConfig(**{**config.__dict__, "batch_size": 3}))))
    table = samples_table(samples, ["site"])
    assert twin(table).equals(whole)
    assert twin(table.slice(4, 3).to_pydict()).equals(whole.slice(4, 3))


def test_a_long_run_in_chunks_of_several_batches_gives_the_same_rows(
    many: tuple[Path, pa.Table], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run long enough for chunks of several model batches (CHUNK_ROWS lowered to 6 rows: 3 batches
    of 2, 160 images >= 8 chunks a thread) stores the rows of the reference run (batches of 16)."""
    import camcore.audit.local as local

    data, reference = many
    seen: list[int] = []
    rows = local.AuditWorker.rows

    def counted(self: local.AuditWorker, prepared: list[local.Prepared]) -> pa.Table:
        seen.append(len(prepared))
        return rows(self, prepared)

    monkeypatch.setattr(local, "CHUNK_ROWS", 6)
    monkeypatch.setattr(local.AuditWorker, "rows", counted)
    table, _ = camcore.audit.run(MODEL, data, tmp_path / "out", batch_size=2, progress=False)
    assert max(seen) == 6 and sum(seen) == N_SIGNALLED
    assert table.equals(reference)
