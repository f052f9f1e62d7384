"""camcore explain on models whose dims are -1, 0, unnamed or symbolic."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from camcore.cli import main
from tests.detector_models import tiny_detector
from tests.models import tiny_classifier


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("images") / "img.png"
    pixels = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    cv2.imwrite(str(path), pixels)
    return str(path)


@pytest.mark.parametrize("batch", [-1, 0])
def test_explain_a_classifier_whose_batch_is_minus_one(tmp_path: Path, image: str, batch: int) -> None:
    """PaddleOCR's text-direction classifier declares its batch as -1: explain runs."""
    model, _ = tiny_classifier(size=8)
    for vi in (model.graph.input[0], model.graph.output[0]):
        vi.type.tensor_type.shape.dim[0].dim_value = batch
    path = tmp_path / "cls.onnx"
    onnx.save(model, str(path))
    out = tmp_path / "out"
    assert main(["explain", str(path), image, "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["input_size"] == [8, 8] and np.load(summary["images"][0]["map"]).shape == (8, 8)


def test_explain_a_yolo_like_detector_with_a_dynamic_batch_and_size(tmp_path: Path, image: str) -> None:
    """--size fixes H and W; the anchors the head computes from Shape ops follow, the batch stays dynamic."""
    path = tmp_path / "det.onnx"
    onnx.save(tiny_detector(batch="batch", size=("height", "width")), str(path))
    out = tmp_path / "out"
    assert main(["explain", str(path), image, "--out", str(out), "--size", "16x16", "--layer", "feat",
                 "--target-type", "raw"]) == 0  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["input_size"] == [16, 16] and np.load(summary["images"][0]["map"]).shape == (16, 16)
