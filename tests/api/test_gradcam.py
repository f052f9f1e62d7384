"""The GradCAM API against a hand-derived Grad-CAM, plus its errors."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import camcore
from camcore.errors import CamcoreError, InputError, ModelError, UnknownLayerError, UnsupportedOpError
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
    x = np.random.default_rng(3).standard_normal((1, 3, 8, 8)).astype(np.float32)
    both = camcore.GradCAM(tiny[0], ["feat", "conv"])(x)
    assert both.shape == (1, 8, 8)
    assert both.min() >= 0 and abs(float(both.max()) - 1) < 1e-5


def test_dynamic_spatial_model_is_fixed_per_call() -> None:
    model, w = tiny_classifier(dynamic_spatial=True)
    cam = camcore.GradCAM(model, ["feat"])
    for size in (8, 12):
        x = np.random.default_rng(size).standard_normal((2, 3, size, size)).astype(np.float32)
        maps = cam(x)
        logits, feat = _features(model, x)
        np.testing.assert_allclose(maps, reference_gradcam(feat, w["fc_w"], logits.argmax(1)), atol=2e-5)


@pytest.mark.parametrize("opset", [11, 13, 18, 21])
def test_opsets(opset: int) -> None:
    model, w = tiny_classifier(opset=opset)
    x = np.random.default_rng(opset).standard_normal((2, 3, 8, 8)).astype(np.float32)
    maps = camcore.GradCAM(model, ["feat"])(x)
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


def test_unsupported_op_names_op_node_and_path() -> None:
    text = """<ir_version: 8, opset_import: ["" : 17, "com.example" : 1]>
g (float[1,2,4,4] x) => (float[1,3] y) {
  feat = Relu(x)
  odd = com.example.Mystery(feat)
  pooled = GlobalAveragePool(odd)
  flat = Flatten(pooled)
  w = Constant<value = float[2,3] {1,2,3,4,5,6}>()
  y = MatMul(flat, w)
}"""
    model = onnx.parser.parse_model(text)
    with pytest.raises(UnsupportedOpError) as err:
        camcore.augment(model, ["feat"])
    msg = str(err.value)
    assert "com.example::Mystery" in msg and "'odd'" in msg
    assert "feat -> " in msg and "-> y" in msg and "\n" not in msg


def test_augmented_model_is_standard_and_checked(tiny) -> None:
    aug = camcore.augment(tiny[0], ["feat"])
    onnx.checker.check_model(aug.model, full_check=True)
    assert {n.domain for n in aug.model.graph.node} == {""}
    # weights get no gradients: nothing upstream of the target layer is differentiated
    original = {n.name for n in tiny[0].graph.node}
    new_ops = [n.op_type for n in aug.model.graph.node if n.name not in original]
    assert "ConvTranspose" not in new_ops and "Conv" not in new_ops


def test_external_data_model(tmp_path, tiny) -> None:
    model, w = tiny
    path = tmp_path / "ext.onnx"
    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # onnx.save(save_as_external_data=True) rewrites its argument
    onnx.save(
        copy, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="ext.bin", size_threshold=0
    )
    assert (tmp_path / "ext.bin").stat().st_size > 0
    x = np.random.default_rng(5).standard_normal((2, 3, 8, 8)).astype(np.float32)
    maps = camcore.GradCAM(str(path), ["feat"])(x)
    logits, feat = _features(model, x)
    np.testing.assert_allclose(maps, reference_gradcam(feat, w["fc_w"], logits.argmax(1)), atol=2e-5)


def test_dynamic_spatial_needs_fixed_shape_for_pool_gradient() -> None:
    text = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N,2,H,W] x) => (float[N,2] y) {
  feat = Relu(x)
  p = MaxPool<kernel_shape = [2, 2], strides = [2, 2]>(feat)
  g = GlobalAveragePool(p)
  y = Flatten(g)
}"""
    model = onnx.parser.parse_model(text)
    from camcore.errors import ShapeError

    with pytest.raises(ShapeError, match="input_shapes"):
        camcore.augment(model, ["feat"], seed="tensor")
    aug = camcore.augment(model, ["feat"], seed="tensor", input_shapes={"x": [None, 2, 6, 6]})
    sess = ort.InferenceSession(aug.model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((3, 2, 6, 6)).astype(np.float32)
    out = dict(
        zip(
            [o.name for o in aug.model.graph.output],
            sess.run(None, {"x": x, aug.seed_input: np.ones((3, 2), np.float32)}),
        )
    )
    grad = out[aug.gradient_outputs["feat"]]
    # each 2x2 window routes 1/9 (GlobalAveragePool over 3x3) to its first maximum
    windows = np.maximum(x, 0).reshape(3, 2, 3, 2, 3, 2).transpose(0, 1, 2, 4, 3, 5).reshape(3, 2, 3, 3, 4)
    routed = grad.reshape(3, 2, 3, 2, 3, 2).transpose(0, 1, 2, 4, 3, 5).reshape(3, 2, 3, 3, 4)
    hit = windows.argmax(-1)
    np.testing.assert_allclose(np.take_along_axis(routed, hit[..., None], -1)[..., 0], 1 / 9, rtol=1e-6)
    assert np.count_nonzero(routed) == 3 * 2 * 9


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
    assert maps.shape == (1, 8, 8)
