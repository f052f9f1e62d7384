"""``camcore export``: writes the self-contained CAM model; bad input is one line and exit 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import camcore
from camcore.cli import main
from tests.graph.test_export import strided_model


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    onnx.save(strided_model(), str(path))
    return path


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("camcore: error:"), err
    return lines[0]


def test_export_writes_a_model_that_gives_the_apis_map(model_path: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cam.onnx"
    args = ["export", str(model_path), "-o", str(out), "--method", "layercam", "--layer", "feat",
            "--overlay", "--colormap", "turbo", "--alpha", "0.3", "--class-input", "required"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "inputs: x, class, image" in printed and "outputs: logits, cam, overlay" in printed
    x = np.random.default_rng(0).standard_normal((2, 3, 12, 12)).astype(np.float32)
    image = np.random.default_rng(1).integers(0, 256, (2, 12, 12, 3), dtype=np.uint8)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    _, cam, picture = session.run(None, {"x": x, "class": np.array([-1], np.int64), "image": image})
    np.testing.assert_allclose(cam, camcore.LayerCAM(str(model_path), ["feat"])(x), atol=1e-4)
    np.testing.assert_array_equal(picture, camcore.overlay(image, cam, 0.3, "turbo"))


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--method", "scorecam"], "ScoreCAM cannot be exported: needs one forward pass per channel"),
        (["--method", "eigencam"], "EigenCAM cannot be exported: needs an SVD"),
        (["--method", "nope"], "unknown method 'nope'"),
        (["--layer", "nope"], "unknown layer 'nope'"),
        (["--layer", "flat"], "rank 2"),
        (["--overlay", "--colormap", "nope"], "--colormap"),
        (["--alpha", "2"], "--alpha"),
        (["--size", "12"], "--size"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    model_path: Path, tmp_path: Path, capsys, extra: list[str], expected: str
) -> None:
    out = tmp_path / "cam.onnx"
    assert main(["export", str(model_path), "-o", str(out), *extra]) == 2
    assert expected in _one_line(capsys.readouterr().err)
    assert not out.exists()


def test_never_overwrites_its_input(model_path: Path, capsys) -> None:
    before = model_path.read_bytes()
    assert main(["export", str(model_path), "-o", str(model_path)]) == 2
    assert "is an input" in _one_line(capsys.readouterr().err)
    assert model_path.read_bytes() == before


def test_missing_model_is_one_line(tmp_path: Path, capsys) -> None:
    assert main(["export", str(tmp_path / "none.onnx"), "-o", str(tmp_path / "cam.onnx")]) == 2
    assert "does not exist" in _one_line(capsys.readouterr().err)
