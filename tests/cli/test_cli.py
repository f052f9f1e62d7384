"""The command line: each command's happy path, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from camcore.cli import main
from camcore.demo import load_demo_meta
from camcore.scenes import generate_batch

DEMO = Path(__import__("camcore").__file__).parent / "data" / "demo_classifier.onnx"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i, scene in enumerate(generate_batch(3, seed=99, size=96)):
        p = folder / f"scene{i}.png"
        cv2.imwrite(str(p), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
        paths.append(str(p))
    return paths


def _one_line_error(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1, f"expected one line, got: {err!r}"
    assert lines[0].startswith("camcore: error: ")
    return lines[0]


def test_layers_marks_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["layers", str(DEMO)]) == 0
    out = capsys.readouterr().out
    marked = [line for line in out.splitlines() if line.startswith("* ")]
    assert len(marked) == 1 and load_demo_meta()["target_layer"] in marked[0]


def test_augment_writes_a_runnable_model(tmp_path: Path) -> None:
    out = tmp_path / "aug.onnx"
    assert main(["augment", str(DEMO), "-o", str(out)]) == 0
    model = onnx.load(str(out))
    names = [o.name for o in model.graph.output]
    assert names[0] == "logits" and "camcore_gradient_0" in names
    assert "camcore_class" in [i.name for i in model.graph.input]


def test_explain_writes_outputs_and_skips_bad_images(
    tmp_path: Path, images: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"definitely not a png")
    meta = load_demo_meta()
    args = [
        "explain",
        str(DEMO),
        images[0],
        str(broken),
        images[1],
        images[2],
        "--out",
        str(tmp_path / "out"),
        "--mean",
        *map(str, meta["mean"]),
        "--std",
        *map(str, meta["std"]),
        "--batch-size",
        "2",
    ]
    assert main(args) == 2  # finished the good images, reported the bad ones
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [Path(r["image"]).name for r in summary["images"]] == ["scene0.png", "scene1.png", "scene2.png"]
    assert {Path(f["image"]).name for f in summary["failures"]} == {"broken.png"}
    for record in summary["images"]:
        cam = np.load(record["map"])
        assert cam.shape == (96, 96) and cam.min() >= 0.0 and cam.max() <= 1.0
        assert cv2.imread(record["overlay"]).shape == (96, 96, 3)
        assert len(record["top_k"]) == 5 and record["explained_class"] == record["top_k"][0]["class"]
    err = capsys.readouterr().err
    assert "skipped" in err and "broken.png" in err


def test_explain_explicit_target(tmp_path: Path, images: list[str]) -> None:
    assert main(["explain", str(DEMO), images[0], "--out", str(tmp_path), "--target", "3"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["images"][0]["explained_class"] == 3


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["layers", "no/such/model.onnx"], "does not exist"),
        (["explain", str(DEMO), "x.png", "--out", "o", "--layer", "/features/features.17/Reluu"], "unknown layer"),
        (["explain", str(DEMO), "x.png", "--out", "o", "--size", "64x64"], "contradicts the model's input"),
        (["explain", str(DEMO), "x.png", "--out", "o", "--target", "99"], "out of range"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    argv: list[str],
    needle: str,
    tmp_path: Path,
    images: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = [images[0] if a == "x.png" else a for a in argv]
    assert main(argv) == 2
    assert needle in _one_line_error(capsys.readouterr().err)


def test_garbage_model_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(bytes(range(256)) * 4)
    assert main(["layers", str(junk)]) == 2
    assert "cannot read" in _one_line_error(capsys.readouterr().err)


def test_info_runs_as_a_module() -> None:
    done = subprocess.run([sys.executable, "-m", "camcore", "info"], capture_output=True, text=True, check=True)
    assert "in use" in done.stdout and "CPUExecutionProvider" in done.stdout
    assert done.stderr == ""  # no error spew from onnxruntime-gpu on a CPU-only machine


@pytest.mark.parametrize(
    ("method", "flags"),
    [("hirescam", ["--target-type", "softmax", "--aug-smooth"]), ("eigencam", ["--eigen-smooth"]),
     ("gradcam++", ["--target", "1", "--target-type", "class"])],
)  # fmt: skip
def test_explain_method_and_target_flags(tmp_path: Path, images: list[str], method: str, flags: list[str]) -> None:
    out = tmp_path / method
    assert main(["explain", str(DEMO), images[0], "--out", str(out), "--method", method, *flags]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == __import__("camcore").METHODS[method].name
    assert summary["aug_smooth"] == ("--aug-smooth" in flags) and summary["eigen_smooth"] == ("--eigen-smooth" in flags)
    cam = np.load(summary["images"][0]["map"])
    assert cam.min() >= 0 and cam.max() <= 1 + 1e-6
