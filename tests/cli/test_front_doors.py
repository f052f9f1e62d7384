"""The front doors never lose work: every bad argument is one line and exit code 2 before any
work, no output overwrites an input, SIGTERM and Ctrl-C finish the files, progress bars render
in a terminal, every option has help, and the model's own preprocessing is used and named."""

from __future__ import annotations

import argparse
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from camcore.cli import _parser, main
from camcore.demo import DEMO_MODEL

DEMO = str(DEMO_MODEL)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    for i in range(3):
        cv2.imwrite(str(folder / f"img{i}.png"), np.random.default_rng(i).integers(0, 255, (96, 96, 3), np.uint8))
    return folder


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10, (64, 64))
    for i in range(12):
        writer.write(np.random.default_rng(i).integers(0, 255, (64, 64, 3), np.uint8))
    writer.release()
    return path


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got {lines}"
    assert lines[0].startswith("camcore: error: ")
    return lines[0]


BAD = [
    (["--top-k", "-3"], "--top-k"),
    (["--colormap", "jte"], "did you mean jet"),
    (["--alpha", "0.5x"], "--alpha"),
    (["--batch-size", "0"], "--batch-size"),
    (["--threads", "0"], "--threads"),
    (["--std", "0", "1", "1"], "--std"),
    (["--target", "5"], "out of range for 5 classes"),
    (["--target", "-1"], "out of range"),
    (["--target-type", "binary"], "single-logit"),
    (["--target-type", "raw", "--target", "1"], "takes no --target"),
    (["--layer", "fc.weight"], "is a weight"),
    (["--layer", "/features/features.17/Reluu"], "unknown layer"),
    (["--size", "64x64"], "contradicts the model's input size 96x96"),
    (["--providers", "NoSuchExecutionProvider"], "not available"),
    (["--output", "nope"], "unknown output"),
]


@pytest.mark.parametrize(("argv", "needle"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_explain_bad_arguments(argv: list[str], needle: str, images: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["explain", DEMO, str(images), "--out", str(out), *argv]) == 2
    assert needle in _one_line(capsys.readouterr().err)
    assert not out.exists() or not any(out.iterdir()), "work was done before the argument was refused"


def test_outputs_never_overwrite_inputs(images: Path, clip: Path, tmp_path: Path, capsys) -> None:
    images_before = sorted(images.iterdir())
    model = tmp_path / "model.onnx"
    model.write_bytes(Path(DEMO).read_bytes())
    img = images / "img0.png"
    before = {p: p.read_bytes() for p in (model, img, clip)}
    cases = [
        (["augment", str(model), "-o", str(model)], "is an input"),
        (["explain", str(model), str(img), "--out", str(img)], "is an input"),
        (["explain", str(model), str(images), "--out", str(images)], "is an input"),
        (["video", str(model), str(clip), "-o", str(clip)], "is an input"),
        (["video", str(model), str(clip), "-o", str(model)], "is an input"),
        (["augment", str(model), "-o", str(tmp_path)], "is a folder"),
        (["augment", str(model), "-o", str(img / "x.onnx")], "which is a file"),
        (["explain", str(model), str(img), "--out", str(model)], "is an input"),
        (["demo", "--out", str(img)], "is a file"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        assert needle in _one_line(capsys.readouterr().err), argv
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(images.iterdir()) == images_before


def test_wrong_words_are_fixed(images: Path, tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for argv, needle in (
        (["layers", str(images)], "is a folder, not an ONNX file"),
        (["explain", DEMO, str(tmp_path / "missing.png"), "--out", str(tmp_path / "o")], "does not exist"),
        (["explain", DEMO, str(tmp_path / "nothing_here"), "--out", str(tmp_path / "o")], "does not exist"),
    ):
        assert main(argv) == 2
        assert needle in _one_line(capsys.readouterr().err)
    (tmp_path / "no_images").mkdir()
    assert main(["explain", DEMO, str(tmp_path / "no_images"), "--out", str(tmp_path / "o")]) == 2
    assert "holds no images" in _one_line(capsys.readouterr().err)
    # an image that cannot be decoded is reported and skipped; the run finishes the rest
    assert main(["explain", DEMO, str(empty), str(images / "img1.png"), "--out", str(tmp_path / "o2")]) == 2
    summary = json.loads((tmp_path / "o2" / "summary.json").read_text())
    assert summary["done"] == 1 and "cannot decode" in summary["failures"][0]["error"]


def test_augmenting_twice_is_refused(tmp_path: Path, capsys) -> None:
    once = tmp_path / "once.onnx"
    assert main(["augment", DEMO, "-o", str(once)]) == 0
    capsys.readouterr()
    assert main(["augment", str(once), "-o", str(tmp_path / "twice.onnx")]) == 2
    assert "already augmented" in _one_line(capsys.readouterr().err)


def test_explain_reads_preprocessing_from_the_model_and_says_so(images: Path, tmp_path: Path, capsys) -> None:
    assert main(["explain", DEMO, str(images / "img0.png"), "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "mean (0.5, 0.5, 0.5), std (0.25, 0.25, 0.25) from demo_classifier.json" in err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["mean"] == [0.5] * 3 and summary["std"] == [0.25] * 3
    assert summary["images"][0]["top_k"][0]["name"] in {"circle", "square", "triangle", "star", "cross"}
    assert main(["explain", DEMO, str(images / "img0.png"), "--out", str(tmp_path), "--mean", "0", "0", "0"]) == 0
    assert "from --mean/--std" in capsys.readouterr().err


def test_sigterm_while_the_summary_is_written_waits_for_it(images: Path, tmp_path: Path, monkeypatch) -> None:
    import camcore.cli as cli

    dumps = json.dumps

    def terminated_meanwhile(*args, **kwargs):  # type: ignore[no-untyped-def]
        os.kill(os.getpid(), signal.SIGTERM)  # handled at once, in this (the main) thread
        return dumps(*args, **kwargs)

    monkeypatch.setattr(cli.json, "dumps", terminated_meanwhile)
    out = tmp_path / "out"
    assert main(["explain", DEMO, str(images), "--out", str(out)]) == 143
    monkeypatch.setattr(cli.json, "dumps", dumps)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["done"] == summary["total"] == 3 and summary["interrupted"] is False


def test_ctrl_c_during_explain_keeps_what_was_done(images: Path, tmp_path: Path, monkeypatch) -> None:
    import camcore.cli as cli

    written = cli._write_explained
    calls = []

    def interrupt_after_one(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return written(*args, **kwargs)

    monkeypatch.setattr(cli, "_write_explained", interrupt_after_one)
    out = tmp_path / "out"
    assert main(["explain", DEMO, str(images), "--out", str(out), "--batch-size", "1"]) == 130
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] == "interrupted" and summary["done"] == 1 and summary["total"] == 3
    assert Path(summary["images"][0]["overlay"]).is_file() and Path(summary["images"][0]["map"]).is_file()


def _wait_for(proc: subprocess.Popen[bytes], fd: int, needle: bytes, timeout: float = 60.0) -> bytes:
    """Read ``fd`` until the regular expression ``needle`` matches (or the process ends)."""
    seen = b""
    end = time.monotonic() + timeout
    while not re.search(needle, seen) and time.monotonic() < end and proc.poll() is None:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                seen += os.read(fd, 4096)
            except OSError:
                break
    return seen


def _long_inputs(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "many"
    folder.mkdir()
    tile = np.random.default_rng(0).integers(0, 255, (96, 96, 3), np.uint8)
    for i in range(3000):
        cv2.imwrite(str(folder / f"m{i:04d}.png"), np.roll(tile, i, axis=1))
    video = tmp_path / "long.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"mp4v"), 25, (96, 96))
    for i in range(6000):
        writer.write(np.roll(tile, i, axis=1))
    writer.release()
    return folder, video


@pytest.mark.slow
def test_sigterm_finishes_the_files_and_the_progress_bar_renders(tmp_path: Path) -> None:
    """Under a pseudo-terminal (0 x 0, as a fresh pty is) the bar is drawn; SIGTERM then leaves a
    complete summary (explain) and a playable video with its JSON (video), exit code 143."""
    folder, video = _long_inputs(tmp_path)
    runs = {
        "explain": ["explain", DEMO, str(folder), "--out", str(tmp_path / "out")],
        "video": ["video", DEMO, str(video), "-o", str(tmp_path / "out.mp4")],
    }
    for name, argv in runs.items():
        leader, follower = pty.openpty()
        proc = subprocess.Popen([sys.executable, "-m", "camcore", *argv], stdout=subprocess.DEVNULL,
                                stderr=follower, stdin=subprocess.DEVNULL)  # fmt: skip
        os.close(follower)
        try:
            seen = _wait_for(proc, leader, rb"%\|.*\b[1-9]\d*/\d+")  # the bar, and some work done
            assert re.search(rb"%\|.*\b[1-9]\d*/\d+", seen), f"{name}: no progress bar: {seen[-300:]!r}"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 143, name
        finally:
            os.close(leader)
            if proc.poll() is None:
                proc.kill()
        if name == "explain":
            summary = json.loads((tmp_path / "out" / "summary.json").read_text())
            assert summary["interrupted"] == "terminated" and 0 < summary["done"] < summary["total"]
            assert all(Path(r["map"]).is_file() for r in summary["images"])
        else:
            result = json.loads((tmp_path / "out.json").read_text())["result"]
            cap = cv2.VideoCapture(str(tmp_path / "out.mp4"))
            ok, _ = cap.read()
            assert ok and result["interrupted"] == "terminated" and 0 < result["frames"] < 6000
            assert abs(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) - result["frames"]) <= 1
        leftovers = [p.name for p in tmp_path.rglob(".*part*")]
        assert not leftovers, leftovers


def test_every_option_has_help() -> None:
    def walk(parser: argparse.ArgumentParser, path: str) -> list[str]:
        missing = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    missing += walk(sub, f"{path} {name}")
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
        return missing

    assert walk(_parser(), "camcore") == []


def test_method_choices_are_the_registry_in_one_order() -> None:
    from camcore.methods import METHODS

    parser = _parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for command in ("explain", "video"):
        method = next(a for a in subs[command]._actions if a.dest == "method")
        assert list(method.choices) == list(METHODS)


def test_explain_reads_an_nhwc_input_from_the_graph(images: Path, tmp_path: Path, capsys) -> None:
    """A Keras-style NHWC model: explain feeds it NHWC without --nhwc and writes maps at its height x width."""
    import onnx

    from tests.models import tiny_nhwc_classifier

    model, _ = tiny_nhwc_classifier(height=10, width=8)
    path = tmp_path / "nhwc.onnx"
    onnx.save(model, str(path))
    out = tmp_path / "out"
    assert main(["explain", str(path), str(images / "img0.png"), "--out", str(out), "--layer", "feat"]) == 0
    assert "NHWC (from the graph)" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert np.load(summary["images"][0]["map"]).shape == (10, 8) and summary["input_size"] == [10, 8]


def test_target_takes_a_class_name_from_the_metadata(images: Path, tmp_path: Path, capsys) -> None:
    image = str(images / "img0.png")
    assert main(["explain", DEMO, image, "--out", str(tmp_path / "a"), "--target", "Triangle"]) == 0
    record = json.loads((tmp_path / "a" / "summary.json").read_text())["images"][0]
    assert record["explained_class"] == 2 and record["explained_name"] == "triangle"
    by_index = np.load(record["map"])
    assert main(["explain", DEMO, image, "--out", str(tmp_path / "b"), "--target", "2"]) == 0
    again = json.loads((tmp_path / "b" / "summary.json").read_text())["images"][0]
    np.testing.assert_array_equal(np.load(again["map"]), by_index)
    capsys.readouterr()
    assert main(["explain", DEMO, image, "--out", str(tmp_path / "c"), "--target", "triangel"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["camcore: error: --target 'triangel' is not one of the model's 5 class names; closest: triangle"]
    assert not (tmp_path / "c" / "summary.json").exists()


def test_a_class_name_needs_names_in_the_metadata(images: Path, tmp_path: Path, capsys) -> None:
    model = Path(__file__).resolve().parent.parent / "reach" / "paddle_cnn_op11.onnx"
    assert main(["explain", str(model), str(images / "img0.png"), "--out", str(tmp_path), "--target", "cat"]) == 2
    assert "lists no class names: give the index" in capsys.readouterr().err
