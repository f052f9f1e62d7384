"""Output files: checked before work, never an input, written atomically."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from camcore.errors import CamcoreError
from camcore.files import AtomicFile, atomic_write, image_files, output_file, output_folder


def test_output_folder_refusals(tmp_path: Path) -> None:
    a_file = tmp_path / "a.txt"
    a_file.write_text("x")
    for path, inputs, message in ((a_file, [], "is a file"), (a_file / "sub", [], "lies under"),
                                  (tmp_path / "in", [tmp_path / "in"], "is an input")):  # fmt: skip
        with pytest.raises(CamcoreError, match=message):
            output_folder(path, inputs)
    assert output_folder(tmp_path / "new" / "deep").is_dir()


def test_output_file_refusals(tmp_path: Path) -> None:
    src = tmp_path / "model.onnx"
    src.write_text("m")
    link = tmp_path / "link.onnx"
    link.symlink_to(src)
    for path, message in ((src, "is an input"), (link, "is an input"), (tmp_path, "is a folder")):
        with pytest.raises(CamcoreError, match=message):
            output_file(path, [src])
    assert output_file(tmp_path / "out" / "m.onnx", [src]).parent.is_dir()


def test_unwritable_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only filesystem (or missing permissions; root ignores those, so it is simulated)."""
    import tempfile

    def read_only(*args: object, **kwargs: object) -> tuple[int, str]:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(CamcoreError, match=r"cannot write in --out folder .*Read-only file system"):
        output_folder(tmp_path)
    with pytest.raises(CamcoreError, match="cannot write in -o folder"):
        output_file(tmp_path / "x.onnx", option="-o")


def test_a_failed_write_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "summary.json"
    target.write_text("old")

    def half(tmp: Path) -> None:
        tmp.write_text("half of the new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
    atomic_write(target, lambda tmp: tmp.write_text("new"))
    assert target.read_text() == "new"
    f = AtomicFile(target)
    f.temporary.write_text("newer")
    assert target.read_text() == "new"
    f.commit()
    assert target.read_text() == "newer" and not f.temporary.exists()


def test_image_files(tmp_path: Path) -> None:
    for name in ("b.PNG", "a.jpg", "notes.txt"):
        (tmp_path / name).write_text("")
    assert [Path(p).name for p in image_files(tmp_path)] == ["a.jpg", "b.PNG"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(CamcoreError, match="holds no images"):
        image_files(tmp_path / "empty")


def test_an_interrupt_during_nested_writes_comes_out_at_the_end(tmp_path: Path) -> None:
    """SIGTERM while a file is put in place (inside nested blocks) is raised once all are done."""
    import signal

    from camcore.files import Terminated, terminate_as_interrupt, uninterrupted

    done = []
    with pytest.raises(Terminated), terminate_as_interrupt():
        with uninterrupted():
            with uninterrupted():
                signal.raise_signal(signal.SIGTERM)
                done.append("inner")
            done.append("outer")  # still runs: the interrupt waits for the outermost block
        done.append("after")  # never: the interrupt comes out when the outer block ends
    assert done == ["inner", "outer"]


def test_written_files_have_an_ordinary_mode(tmp_path: Path) -> None:
    """Reports and videos are shared: a file put in place atomically is as readable as any new file
    (mkstemp's temporaries are 0600)."""
    from camcore.files import NEW_FILE_MODE

    atomic_write(tmp_path / "summary.json", lambda tmp: tmp.write_text("{}"))
    f = AtomicFile(tmp_path / "video.mp4")
    f.temporary.write_bytes(b"x")
    f.commit()
    mask = os.umask(0)
    os.umask(mask)
    for name in ("summary.json", "video.mp4"):
        assert (tmp_path / name).stat().st_mode & 0o777 == NEW_FILE_MODE == 0o666 & ~mask
