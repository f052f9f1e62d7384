"""GradCAM on a YOLOv8-like detector whatever its batch and size dims say (a name, -1, 0, no
value): the layer gradient against finite differences of the box score."""

from __future__ import annotations

import numpy as np
import pytest
from onnx.reference import ReferenceEvaluator

import camcore
from camcore.graph import prepare_model
from camcore.graph.parts import downstream_model
from tests.detector_models import tiny_detector
from tests.graph.fd import PRECISE_OPS, to_double

LABEL = 1


@pytest.mark.parametrize("batch", ["N", -1, 0, None])
@pytest.mark.parametrize("size", [(16, 16), ("H", "W")], ids=["fixed-size", "dynamic-size"])
def test_gradcam_on_a_yolo_like_head_matches_finite_differences(batch, size) -> None:
    """The layer before the head; the DFL Conv needs static dims: with a dynamic batch they come
    from inference with the batch fixed, with a dynamic size from each call's feed."""
    model = tiny_detector(batch=batch, size=size)
    cam = camcore.GradCAM(model, target_layers=["feat"])
    prepared, info = prepare_model(model, {"x": [None, 3, 16, 16]})
    cut, _ = downstream_model(prepared, info, "feat", "boxes")
    ref = ReferenceEvaluator(to_double(cut), new_ops=PRECISE_OPS)
    rng = np.random.default_rng(5)
    for n in (2, 1):
        x = rng.standard_normal((n, 3, 16, 16)).astype(np.float32)
        target = camcore.DetectionBoxTarget(label=LABEL, layout="channels_first")
        maps = cam(x, targets=[target])
        assert maps.shape == (n, 16, 16) and np.isfinite(maps).all()
        feat, grad = cam.activations["feat"].astype(np.float64), cam.gradients["feat"]
        assert grad.shape == feat.shape == (n, 4, 8, 8) and np.abs(grad).sum() > 0
        boxes = cam.outputs[0]
        picked = [target.select(row) for row in boxes]  # the box each image explains

        def score(a: np.ndarray, picked: list[int] = picked) -> float:
            out = ref.run(["boxes"], {"feat": a})[0]
            return float(sum(out[i, 4 + LABEL, j] for i, j in enumerate(picked)))

        eps = 1e-6
        for _ in range(4):
            v = rng.standard_normal(feat.shape)
            fd = (score(feat + eps * v) - score(feat - eps * v)) / (2 * eps)
            np.testing.assert_allclose(float(np.sum(grad * v)), fd, rtol=1e-4, atol=1e-5)


def test_gradcam_on_a_yolo_like_head_with_a_linear_target() -> None:
    """A linear target on a static output row seeds the whole augmented model in one run."""
    model = tiny_detector(batch=-1)
    cam = camcore.GradCAM(model, target_layers=["feat"])
    assert cam.engine.output_shape() == (None, 7, 80)
    x = np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32)
    maps = cam(x, targets=[camcore.RawScoresOutputTarget()])
    assert maps.shape == (3, 16, 16)
    assert [k for k, _ in cam.engine.sessions()] == ["augmented"]
    one = cam(x[:1], targets=[camcore.RawScoresOutputTarget()])
    np.testing.assert_allclose(one[0], maps[0], atol=1e-5)
