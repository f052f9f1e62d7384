"""The GradCAM API against a hand-derived Grad-CAM, plus its errors. (The graph surgery under it,
augment(), is tested in tests/graph.)"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import camcore
from camcore.errors import CamcoreError, InputError, ModelError, UnknownLayerError
from tests.models import reference_gradcam, tiny_classifier


@pytest.fixture(scope="module")
def tiny() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    return tiny_classifier()


def _features(model: onnx.ModelProto, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Plain onnxruntime run of the unmodified model, exposing the Relu output too."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.append(onnx.helper.make_tensor_value_info("feat", onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    logits, feat = sess.run(["logits", "feat"], {"x": x})
    return logits, feat


@pytest.mark.parametrize("batch", [1, 3])
def test_gradcam_matches_hand_derived_reference(tiny, batch: int) -> None:
    model, w = tiny
    x = np.random.default_rng(batch).standard_normal((batch, 3, 8, 8)).astype(np.float32)
    cam = camcore.GradCAM(model, target_layers=["feat"])
    maps = cam(x)
    logits, feat = _features(model, x)
    expected = reference_gradcam(feat, w["fc_w"], logits.argmax(1))
    assert maps.shape == (batch, 8, 8) and maps.dtype == np.float32
    np.testing.assert_allclose(maps, expected, atol=2e-5)
    np.testing.assert_array_equal(cam.outputs[0], logits)  # bit for bit
    np.testing.assert_array_equal(cam.activations["feat"], feat)


def test_explicit_target_and_top1(tiny) -> None:
    model, w = tiny
    x = np.random.default_rng(7).standard_normal((2, 3, 8, 8)).astype(np.float32)
    cam = camcore.GradCAM(model, ["feat"])
    top1 = cam(x)
    logits, feat = _features(model, x)
    explicit = cam(x, targets=[camcore.ClassifierOutputTarget(int(k)) for k in logits.argmax(1)])
    np.testing.assert_array_equal(top1, explicit)
    other = (logits.argmin(1)).astype(int)
    maps = cam(x, targets=[camcore.ClassifierOutputTarget(int(k)) for k in other])
    np.testing.assert_allclose(maps, reference_gradcam(feat, w["fc_w"], other), atol=2e-5)
    # the gradient is exactly fc_w[k] / (H W) at every position
    g = cam.gradients["feat"]
    np.testing.assert_allclose(g[0, :, 3, 4], w["fc_w"][other[0]] / 64, rtol=1e-6)


def test_default_layer_is_last_spatial_activation(tiny) -> None:
    cam = camcore.GradCAM(tiny[0])
    assert cam.target_layers == ["feat"]
    cam_by_node = camcore.GradCAM(tiny[0], target_layers=["relu"])  # node names map to outputs
    assert cam_by_node.target_layers == ["feat"]


def test_multiple_layers_average_then_rescale(tiny) -> None:
    """Two layers: each layer's map is scaled, the mean of the two is scaled again."""
    x = np.random.default_rng(3).standard_normal((2, 3, 8, 8)).astype(np.float32)
    both = camcore.GradCAM(tiny[0], ["feat", "conv"])(x)
    feat = camcore.GradCAM(tiny[0], ["feat"])(x)
    conv = camcore.GradCAM(tiny[0], ["conv"])(x)

    def s(m: np.ndarray) -> np.ndarray:
        m = m - m.min(axis=(1, 2), keepdims=True)
        return m / (1e-7 + m.max(axis=(1, 2), keepdims=True))

    np.testing.assert_allclose(both, s((feat + conv) / 2), atol=1e-6)
    assert not np.allclose(feat, conv, atol=1e-3)  # the two layers differ, so the mean is a real test


def test_dynamic_spatial_model_is_fixed_per_call() -> None:
    model, w = tiny_classifier(dynamic_spatial=True)
    cam = camcore.GradCAM(model, ["feat"])
    for size in (8, 12):
        x = np.random.default_rng(size).standard_normal((2, 3, size, size)).astype(np.float32)
        maps = cam(x)
        logits, feat = _features(model, x)
        np.testing.assert_allclose(maps, reference_gradcam(feat, w["fc_w"], logits.argmax(1)), atol=2e-5)


def test_unknown_layer_suggests_close_names(tiny) -> None:
    with pytest.raises(UnknownLayerError, match=r"closest: .*\bfeat\b"):
        camcore.GradCAM(tiny[0], ["faet"])


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.zeros((1, 3, 8, 8), np.float64), "must be float32"),
        (np.zeros((1, 3, 9, 8), np.float32), "needs size 8 on axis 2"),
        (np.zeros((3, 8, 8), np.float32), "must have 4 dims"),
        (np.full((1, 3, 8, 8), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_inputs_fail_clearly(tiny, x: np.ndarray, message: str) -> None:
    with pytest.raises(InputError, match=message):
        camcore.GradCAM(tiny[0], ["feat"])(x)


def test_out_of_range_class(tiny) -> None:
    with pytest.raises(CamcoreError, match="out of range"):
        camcore.GradCAM(tiny[0], ["feat"])(np.zeros((1, 3, 8, 8), np.float32), [camcore.ClassifierOutputTarget(9)])


def test_bad_model_files(tmp_path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        camcore.GradCAM(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a model at all" * 10)
    with pytest.raises(ModelError, match="cannot read"):
        camcore.GradCAM(junk)


def test_model_onnxruntime_cannot_load_is_a_clear_error() -> None:
    from camcore.runtime import Session

    text = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1,4] x) => (float[1,4] y) { y = Relu(x) }"""
    model = onnx.parser.parse_model(text)
    model.graph.node[0].op_type = "NoSuchOp"
    with pytest.raises(ModelError, match="onnxruntime cannot load the model"):
        Session(model)


def test_context_manager_like_pytorch_grad_cam(tiny) -> None:
    x = np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype(np.float32)
    with camcore.GradCAM(model=tiny[0], target_layers=["feat"]) as cam:
        maps = cam(input_tensor=x, targets=None)
        assert cam.engine.sessions()  # compiled while open
    assert cam.engine.sessions() == []  # released on exit, as pytorch-grad-cam releases its hooks
    logits, feat = _features(tiny[0], x)
    np.testing.assert_allclose(maps, reference_gradcam(feat, tiny[1]["fc_w"], logits.argmax(1)), atol=2e-5)
    np.testing.assert_allclose(cam(x), maps, atol=1e-7)  # and still usable: sessions are rebuilt
