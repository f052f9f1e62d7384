"""DATA as samples: class folders and manifests read as documented, and every mistake refused in
one line that names the culprit and the fix, before any work."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from camcore.audit.dataset import check_labels, load_dataset
from camcore.errors import CamcoreError
from tests.audit.core_data import write_csv

IMG = np.zeros((8, 8, 3), np.uint8)


def _png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), IMG)
    return path


def test_a_folder_of_class_folders(tmp_path: Path) -> None:
    for rel in ("cat/b.png", "cat/a.jpg", "dog/sub/c.png", "loose.png", "cat/.hidden.png", "cat/notes.txt"):
        _png(tmp_path / rel) if rel.endswith((".png", ".jpg")) else (tmp_path / rel).write_text("x")
    data = load_dataset(tmp_path)
    assert data.kind == "folder" and data.groups == ()
    assert [(s.id, s.label) for s in data.samples] == [
        ("cat/a.jpg", "cat"), ("cat/b.png", "cat"), ("dog/sub/c.png", "dog"), ("loose.png", None)]  # fmt: skip
    assert data.samples[0].path == str((tmp_path / "cat/a.jpg").resolve())
    assert data.labels == ["cat", "dog"]


def test_a_csv_manifest_with_groups_boxes_and_masks(tmp_path: Path) -> None:
    write_csv(tmp_path / "m.csv", ["path", "label", "site", "x0", "y0", "x1", "y1", "mask"], [
        ["imgs/a.png", "cat", "north", 1, 2, 5, 6, ""],
        ["imgs\\b.png", "", "", "", "", "", "", "masks/b.png"],
        ["/abs/c.png", "dog", "south", "", "", "", "", ""],
    ])  # fmt: skip
    data = load_dataset(tmp_path / "m.csv", ["site"])
    a, b, c = data.samples
    assert (a.id, a.label, a.groups, a.box, a.mask) == ("imgs/a.png", "cat", {"site": "north"}, (1, 2, 5, 6), None)
    assert a.path == str(tmp_path.resolve() / "imgs/a.png")
    assert (b.id, b.label, b.groups, b.box) == ("imgs/b.png", None, {"site": None}, None)  # posix id, empty -> None
    assert b.mask == str(tmp_path.resolve() / "masks/b.png")
    assert c.path == "/abs/c.png" and c.groups == {"site": "south"}


def test_a_parquet_manifest_with_a_box_column_and_numeric_cells(tmp_path: Path) -> None:
    table = pa.table({"path": ["a.png", "b.png"], "label": [3, None], "camera": [1.0, 2.5],
                      "box": [[0.0, 0.0, 4.0, 4.0], None]})  # fmt: skip
    pq.write_table(table, tmp_path / "m.parquet")
    a, b = load_dataset(tmp_path / "m.parquet", ["camera"]).samples
    assert (a.label, a.groups, a.box) == ("3", {"camera": "1"}, (0.0, 0.0, 4.0, 4.0))  # 3, not "3.0"
    assert (b.label, b.groups, b.box) == (None, {"camera": "2.5"}, None)


@pytest.mark.parametrize(
    ("header", "rows", "groups", "needles"),
    [
        (["file", "label"], [["a.png", "x"]], (), ["no 'path' column", "'file'", "rename"]),
        (["path", "label"], [["a.png", "x"]], ("sites",), ["--groups column 'sites'", "its columns: path, label"]),
        (["path", "site"], [["a.png", "x"]], ("stie",), ["--groups column 'stie'", "closest: site"]),
        (["path"], [["a.png"], ["b.png"], ["./a.png"]], (), ["'./a.png' twice", "line 2 and line 4", "each path once"]),
        (["path", "x0", "y0", "x1", "y1"], [["a.png", 5, 0, 2, 4]], (), ["line 2", "box 5,0,2,4", "x0 < x1"]),
        (["path", "x0", "y0", "x1", "y1"], [["a.png", 0, 0, 2, ""]], (), ["line 2", "misses y1"]),
        (["path", "x0", "y0", "x1", "y1"], [["a.png", 0, 0, 2, "big"]], (), ["not a number"]),
        (["path", "box"], [["a.png", "1,2,3"]], (), ["box '1,2,3' needs four numbers"]),
        (["path", "x0", "y0", "x1", "y1", "mask"], [["a.png", 0, 0, 2, 2, "m.png"]], (), ["both a box and a mask"]),
        (["path"], [[""]], (), ["line 2 has an empty path"]),
        (["path"], [], (), ["has no rows"]),
        (["path", "label"], [["a.png", "x"]], ("label", "label"), ["names a column twice"]),
        (["path", "error"], [["a.png", "x"]], ("error",), ["the audit writes itself"]),
    ],
)
def test_manifest_mistakes_are_one_line_each(tmp_path: Path, header: list[str], rows: list[list[object]],
                                             groups: tuple[str, ...], needles: list[str]) -> None:  # fmt: skip
    write_csv(tmp_path / "m.csv", header, rows)
    with pytest.raises(CamcoreError) as err:
        load_dataset(tmp_path / "m.csv", groups)
    message = str(err.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


def test_data_mistakes(tmp_path: Path) -> None:
    with pytest.raises(CamcoreError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(CamcoreError, match="holds no images"):
        load_dataset(tmp_path)
    (tmp_path / "m.txt").write_text("path\na.png\n")
    with pytest.raises(CamcoreError, match="neither a folder nor a manifest"):
        load_dataset(tmp_path / "m.txt")
    _png(tmp_path / "cat" / "a.png")
    with pytest.raises(CamcoreError, match="--groups site needs a manifest"):
        load_dataset(tmp_path, ["site"])
    (tmp_path / "ragged.csv").write_text("path,label\na.png,cat,extra\n")
    with pytest.raises(CamcoreError, match="more cells than the header"):
        load_dataset(tmp_path / "ragged.csv")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(CamcoreError, match="cannot read manifest"):
        load_dataset(tmp_path / "bad.parquet")


def test_labels_must_be_class_names(tmp_path: Path) -> None:
    write_csv(tmp_path / "m.csv", ["path", "label"], [["a.png", "circle"], ["b.png", "sqare"]])
    samples = load_dataset(tmp_path / "m.csv").samples
    check_labels(samples[:1], ["circle", "square"], "--classes")
    with pytest.raises(CamcoreError) as err:
        check_labels(samples, ["circle", "square", "star"], "model metadata")
    assert str(err.value) == ("label 'sqare' of 'b.png' is not one of the 3 class names from model metadata "
                              "(closest: square, star): fix the label or pass --classes")  # fmt: skip
