"""camcore.graph.augment: the augmented model's contract (outputs bit for bit, names, seed modes,
input shapes, errors) and its gradients against hand-derived ones.

The tiny classifier is ``x -> Conv -> Relu ("feat") -> GlobalAveragePool -> Flatten -> Gemm``,
so ``d logits[n, k] / d feat[n, c, h, w] = fc_w[k, c] / (H·W)`` at every position, and
``d logits[n, k] / d conv = fc_w[k, c] / (H·W) · [conv > 0]``: an oracle that needs no autodiff.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from camcore.errors import CamcoreError, InputError, ModelError, ShapeError, UnknownLayerError
from camcore.graph import SEED_CLASS_INPUT, SEED_TENSOR_INPUT, augment, load_model, prepare_model
from tests.models import tiny_classifier

CLASSES = 6
TOP = 2  # the biased head makes this the top-1 class of every image


def _biased_classifier(opset: int = 17) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The tiny classifier whose bias makes class ``TOP`` win for every input: any class but
    ``TOP`` that is silently replaced by the top-1 class shows in the gradient."""
    model, w = tiny_classifier(opset=opset, classes=CLASSES)
    w["fc_b"] = w["fc_b"].copy()
    w["fc_b"][TOP] += 50.0
    for i, init in enumerate(model.graph.initializer):
        if init.name == "fc_b":
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(w["fc_b"], "fc_b"))
    return model, w


@pytest.fixture(scope="module")
def biased() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    return _biased_classifier()


def _x(seed: int, n: int = 3, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def _plain(model: onnx.ModelProto, x: np.ndarray, extra: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The unmodified model run by onnxruntime, exposing ``extra`` intermediate tensors."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.extend(helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in extra)
    return _run(m, {"x": x})


def _hand_gradient(w: dict[str, np.ndarray], classes: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """d logits[n, classes[n]] / d feat: fc_w[k, c] / (H·W) everywhere."""
    h, wd = shape[2:]
    return np.broadcast_to((w["fc_w"][classes] / (h * wd))[:, :, None, None], shape).astype(np.float32)


# ------------------------------------------------------------------------------ class seeds


def test_top1_explains_a_class_other_than_most() -> None:
    """The premise of the explicit-class tests: the top-1 class is TOP for every row."""
    model, _ = _biased_classifier()
    assert set(_plain(model, _x(0, n=4))["logits"].argmax(1).tolist()) == {TOP}


@pytest.mark.parametrize("cls", range(CLASSES))
def test_explicit_class_gradient_for_every_class(biased, cls: int) -> None:
    """Class ``cls`` for every row: the gradient is that class's row of the head, not the top-1's;
    it equals the tensor-seed run with the one-hot seed, and the activation is the Relu output."""
    model, w = biased
    x = _x(1, n=3)
    aug = augment(model, ["feat"])
    classes = np.full(3, cls, np.int64)
    got = _run(aug.model, {"x": x, SEED_CLASS_INPUT: classes})
    plain = _plain(model, x, ("feat",))
    act, grad = got[aug.activation_outputs["feat"]], got[aug.gradient_outputs["feat"]]
    np.testing.assert_array_equal(act, plain["feat"])
    np.testing.assert_allclose(grad, _hand_gradient(w, classes, act.shape), rtol=1e-6, atol=1e-8)
    # the same gradient from the tensor seed: a one-hot row per image
    tensor = augment(model, ["feat"], seed="tensor")
    one_hot = np.eye(CLASSES, dtype=np.float32)[classes]
    via_seed = _run(tensor.model, {"x": x, SEED_TENSOR_INPUT: one_hot})[tensor.gradient_outputs["feat"]]
    np.testing.assert_allclose(grad, via_seed, rtol=1e-6, atol=1e-8)
    if cls != TOP:  # the explicit class is not silently replaced by the top-1 class
        top = _hand_gradient(w, np.full(3, TOP), act.shape)
        assert np.abs(grad - top).max() > 1e-3


def test_explicit_class_per_row_and_top1_mixed(biased) -> None:
    """Each row has its own class; -1 is the row's top-1 class."""
    model, w = biased
    x = _x(2, n=5)
    aug = augment(model, ["feat", "conv"])
    classes = np.array([0, CLASSES - 1, -1, 3, 0], np.int64)
    got = _run(aug.model, {"x": x, SEED_CLASS_INPUT: classes})
    plain = _plain(model, x, ("feat", "conv"))
    resolved = np.where(classes < 0, plain["logits"].argmax(1), classes)
    assert resolved.tolist() == [0, CLASSES - 1, TOP, 3, 0]
    want_feat = _hand_gradient(w, resolved, plain["feat"].shape)
    np.testing.assert_allclose(got[aug.gradient_outputs["feat"]], want_feat, rtol=1e-6, atol=1e-8)
    # through the Relu: the same gradient where conv > 0, zero elsewhere
    want_conv = np.where(plain["conv"] > 0, want_feat, 0)
    np.testing.assert_allclose(got[aug.gradient_outputs["conv"]], want_conv, rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(got[aug.activation_outputs["conv"]], plain["conv"])


def test_top1_is_the_argmax_of_each_row() -> None:
    """A head where rows have different top-1 classes: -1 follows each row's own argmax."""
    model, w = tiny_classifier(classes=CLASSES, seed=3)
    x = _x(4, n=8)
    top = _plain(model, x)["logits"].argmax(1)
    assert len(set(top.tolist())) > 1
    aug = augment(model, ["feat"])
    got = _run(aug.model, {"x": x, SEED_CLASS_INPUT: np.full(8, -1, np.int64)})[aug.gradient_outputs["feat"]]
    np.testing.assert_allclose(got, _hand_gradient(w, top, got.shape), rtol=1e-6, atol=1e-8)


def test_tensor_seed_is_any_linear_target(biased) -> None:
    """A dense seed s: the gradient of <s, logits> is (s @ fc_w) / (H·W)."""
    model, w = biased
    x = _x(5, n=2)
    seed = np.random.default_rng(6).standard_normal((2, CLASSES)).astype(np.float32)
    aug = augment(model, ["feat"], seed="tensor")
    grad = _run(aug.model, {"x": x, SEED_TENSOR_INPUT: seed})[aug.gradient_outputs["feat"]]
    want = np.broadcast_to((seed @ w["fc_w"] / 64)[:, :, None, None], grad.shape)
    np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-7)


def test_guided_relu_keeps_positive_gradients_only(biased) -> None:
    model, w = biased
    x = _x(7, n=2)
    aug = augment(model, ["conv"], guided_relu=True)
    classes = np.array([1, 4], np.int64)
    grad = _run(aug.model, {"x": x, SEED_CLASS_INPUT: classes})[aug.gradient_outputs["conv"]]
    conv = _plain(model, x, ("conv",))["conv"]
    g = _hand_gradient(w, classes, conv.shape)
    np.testing.assert_allclose(grad, np.where((conv > 0) & (g > 0), g, 0), rtol=1e-6, atol=1e-8)
    assert (g < 0).any() and (grad != 0).any()  # the guided rule had something to drop, and kept the rest


# ------------------------------------------------------------------------------ the contract


@pytest.mark.parametrize("seed", ["class", "tensor"])
def test_original_outputs_are_bit_identical(biased, seed: str) -> None:
    model, _ = biased
    x = _x(8, n=4)
    aug = augment(model, ["feat", "conv"], seed=seed)  # type: ignore[arg-type]
    feed = np.full(4, 3, np.int64) if seed == "class" else np.ones((4, CLASSES), np.float32)
    got = _run(aug.model, {"x": x, aug.seed_input: feed})
    np.testing.assert_array_equal(got["logits"], _plain(model, x)["logits"])


def test_names_signature_and_output_order(biased) -> None:
    model, _ = biased
    aug = augment(model, ["feat", "conv"])
    assert aug.output == "logits" and aug.original_outputs == ["logits"]
    assert aug.target_layers == ["feat", "conv"] and aug.seed_mode == "class"
    assert aug.seed_input == SEED_CLASS_INPUT == "camcore_class"
    assert aug.activation_outputs == {"feat": "camcore_activation_0", "conv": "camcore_activation_1"}
    assert aug.gradient_outputs == {"feat": "camcore_gradient_0", "conv": "camcore_gradient_1"}
    assert aug.hvp_outputs == {}
    outputs = [o.name for o in aug.model.graph.output]
    assert outputs == ["logits", "camcore_activation_0", "camcore_gradient_0", "camcore_activation_1",
                       "camcore_gradient_1"]  # fmt: skip
    seed_in = next(i for i in aug.model.graph.input if i.name == SEED_CLASS_INPUT)
    tt = seed_in.type.tensor_type
    assert tt.elem_type == onnx.TensorProto.INT64 and [d.dim_param for d in tt.shape.dim] == ["N"]
    # activations and gradients are declared float with the layer's shape
    by_name = {o.name: o.type.tensor_type for o in aug.model.graph.output}
    for name in ("camcore_activation_0", "camcore_gradient_0"):
        dims = [d.dim_param or d.dim_value for d in by_name[name].shape.dim]
        assert by_name[name].elem_type == onnx.TensorProto.FLOAT and dims == ["N", 4, 8, 8]
    # the new nodes and tensors never reuse a name of the model
    names = [n.name for n in aug.model.graph.node]
    assert len(names) == len(set(names))
    produced = [o for n in aug.model.graph.node for o in n.output]
    assert len(produced) == len(set(produced))


def test_tensor_seed_input_keeps_rank_and_batch_only(biased) -> None:
    aug = augment(biased[0], ["feat"], seed="tensor")
    assert aug.seed_input == SEED_TENSOR_INPUT == "camcore_seed" and aug.seed_mode == "tensor"
    seed_in = next(i for i in aug.model.graph.input if i.name == SEED_TENSOR_INPUT).type.tensor_type
    assert seed_in.elem_type == onnx.TensorProto.FLOAT
    dims = seed_in.shape.dim
    assert len(dims) == 2 and dims[0].dim_param == "N"
    assert not dims[1].HasField("dim_value") and not dims[1].dim_param  # left free


def test_input_model_is_left_untouched(biased) -> None:
    model, _ = biased
    before = model.SerializeToString()
    augment(model, ["feat"], hvp=True)
    assert model.SerializeToString() == before


def test_layers_by_node_name_single_string_and_default(biased) -> None:
    model, _ = biased
    assert augment(model, ["relu"]).target_layers == ["feat"]  # node name -> its output
    assert augment(model, "feat").target_layers == ["feat"]
    assert augment(model).target_layers == ["feat"]  # the last spatial activation
    assert augment(model, ["x"], seed="tensor").target_layers == ["x"]  # input gradients


def test_second_output_can_be_explained() -> None:
    text = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N,2] x) => (float[N,2] a, float[N,3] y) {
  w = Constant<value = float[2,3] {1, 2, 3, -1, -2, -3}>()
  a = Relu(x)
  y = MatMul(a, w)
}"""
    model = onnx.parser.parse_model(text)
    aug = augment(model, ["x"], output="y")
    assert aug.output == "y" and aug.original_outputs == ["a", "y"]
    x = np.array([[1.0, -1.0], [2.0, 3.0]], np.float32)
    got = _run(aug.model, {"x": x, SEED_CLASS_INPUT: np.array([2, 0], np.int64)})
    np.testing.assert_array_equal(got["a"], np.maximum(x, 0))
    w = np.array([[1, 2, 3], [-1, -2, -3]], np.float32)
    want = np.stack([w[:, 2], w[:, 0]]) * (x > 0)
    np.testing.assert_allclose(got[aug.gradient_outputs["x"]], want)


@pytest.mark.parametrize("opset", [11, 13, 18, 21])
def test_opsets(opset: int) -> None:
    """The same gradients at every tested opset (the builder picks each opset's op forms)."""
    model, w = _biased_classifier(opset=opset)
    aug = augment(model, ["feat", "conv"])
    onnx.checker.check_model(aug.model, full_check=True)
    assert next(i.version for i in aug.model.opset_import if i.domain in ("", "ai.onnx")) == opset
    x = _x(opset, n=2)
    classes = np.array([0, CLASSES - 1], np.int64)
    got = _run(aug.model, {"x": x, SEED_CLASS_INPUT: classes})
    plain = _plain(model, x, ("conv",))
    np.testing.assert_array_equal(got["logits"], plain["logits"])
    g = _hand_gradient(w, classes, plain["conv"].shape)
    np.testing.assert_allclose(got[aug.gradient_outputs["feat"]], g, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(got[aug.gradient_outputs["conv"]], np.where(plain["conv"] > 0, g, 0), rtol=1e-6,
                               atol=1e-8)  # fmt: skip


def test_old_opset_is_upgraded_to_11() -> None:
    model, w = tiny_classifier(opset=9, classes=CLASSES)
    aug = augment(model, ["feat"])
    assert next(i.version for i in aug.model.opset_import if i.domain in ("", "ai.onnx")) == 11
    x = _x(9, n=2)
    got = _run(aug.model, {"x": x, SEED_CLASS_INPUT: np.array([4, 1], np.int64)})
    np.testing.assert_allclose(got[aug.gradient_outputs["feat"]], _hand_gradient(w, np.array([4, 1]), (2, 4, 8, 8)),
                               rtol=1e-6)  # fmt: skip


def test_local_functions_are_inlined() -> None:
    text = """<ir_version: 8, opset_import: ["" : 17, "local" : 1]>
g (float[N,3] x) => (float[N,3] y) {
  y = local.Twice(x)
}
<domain: "local", opset_import: ["" : 17]>
Twice (a) => (b) {
  two = Constant<value = float {2.0}>()
  b = Mul(a, two)
}"""
    model = onnx.parser.parse_model(text)
    aug = augment(model, ["x"], seed="tensor")
    assert {n.domain for n in aug.model.graph.node} == {""} and not aug.model.functions
    seed = np.array([[1.0, -2.0, 0.5]], np.float32)
    got = _run(aug.model, {"x": np.ones((1, 3), np.float32), SEED_TENSOR_INPUT: seed})
    np.testing.assert_allclose(got[aug.gradient_outputs["x"]], 2 * seed)


def test_augmented_model_is_standard_and_checked() -> None:
    model, _ = tiny_classifier()
    aug = augment(model, ["feat"])
    onnx.checker.check_model(aug.model, full_check=True)
    assert {n.domain for n in aug.model.graph.node} == {""}
    # weights get no gradients: nothing upstream of the target layer is differentiated
    original = {n.name for n in model.graph.node}
    new_ops = [n.op_type for n in aug.model.graph.node if n.name not in original]
    assert "ConvTranspose" not in new_ops and "Conv" not in new_ops
    assert len(new_ops) > 0


def test_external_data_model(tmp_path, biased) -> None:
    model, w = biased
    path = tmp_path / "ext.onnx"
    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # onnx.save(save_as_external_data=True) rewrites its argument
    onnx.save(
        copy, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="ext.bin", size_threshold=0
    )
    assert (tmp_path / "ext.bin").stat().st_size > 0
    loaded = load_model(str(path))
    assert all(not i.external_data for i in loaded.graph.initializer)
    aug = augment(str(path), ["feat"])
    x = _x(10, n=2)
    got = _run(aug.model, {"x": x, SEED_CLASS_INPUT: np.array([0, 5], np.int64)})
    np.testing.assert_array_equal(got["logits"], _plain(model, x)["logits"])
    np.testing.assert_allclose(got[aug.gradient_outputs["feat"]], _hand_gradient(w, np.array([0, 5]), (2, 4, 8, 8)),
                               rtol=1e-6)  # fmt: skip


def test_load_model_copies_a_proto(biased) -> None:
    model, _ = biased
    loaded = load_model(model)
    assert loaded is not model and loaded.SerializeToString() == model.SerializeToString()


def test_in_memory_model_with_external_data_needs_base_dir(tmp_path, biased) -> None:
    model, w = biased
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    onnx.save(copy, str(tmp_path / "m.onnx"), save_as_external_data=True, location="w.bin", size_threshold=0)
    proto = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    with pytest.raises(ModelError, match=r"external data \(e.g. 'w.bin'\); pass base_dir="):
        load_model(proto)
    with pytest.raises(ModelError, match="is not a folder"):
        load_model(proto, tmp_path / "nowhere")
    loaded = load_model(proto, tmp_path)
    fc_w = next(i for i in loaded.graph.initializer if i.name == "fc_w")
    np.testing.assert_array_equal(numpy_helper.to_array(fc_w), w["fc_w"])
    with pytest.raises(ModelError, match="is a folder, not an ONNX file"):
        load_model(tmp_path)


# ------------------------------------------------------------------------------ input shapes


def test_input_shapes_fix_dims() -> None:
    model, w = tiny_classifier(dynamic_spatial=True, classes=CLASSES)
    _, info = prepare_model(model, {"x": [None, 3, 8, 8]})
    assert info["x"].shape == ("N", 3, 8, 8)
    assert info["feat"].shape == ("N", 4, 8, 8)
    aug = augment(model, ["feat"], input_shapes={"x": [None, 3, 8, 8]})
    x_in = next(i for i in aug.model.graph.input if i.name == "x").type.tensor_type
    assert [d.dim_param or d.dim_value for d in x_in.shape.dim] == ["N", 3, 8, 8]
    assert [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == ["N", 3, "H", "W"]
    x = _x(11, n=2)
    got = _run(aug.model, {"x": x, SEED_CLASS_INPUT: np.array([3, 0], np.int64)})
    np.testing.assert_allclose(got[aug.gradient_outputs["feat"]], _hand_gradient(w, np.array([3, 0]), (2, 4, 8, 8)),
                               rtol=1e-6)  # fmt: skip


def test_input_shapes_errors(biased) -> None:
    with pytest.raises(InputError, match=r"'y', which is not a model input.*\['x'\]"):
        augment(biased[0], ["feat"], input_shapes={"y": [1, 3, 8, 8]})
    with pytest.raises(InputError, match="has 3 dims but the model input has 4"):
        augment(biased[0], ["feat"], input_shapes={"x": [1, 3, 8]})


def test_dynamic_spatial_needs_fixed_shape_for_pool_gradient() -> None:
    text = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N,2,H,W] x) => (float[N,2] y) {
  feat = Relu(x)
  p = MaxPool<kernel_shape = [2, 2], strides = [2, 2]>(feat)
  g = GlobalAveragePool(p)
  y = Flatten(g)
}"""
    model = onnx.parser.parse_model(text)
    with pytest.raises(ShapeError, match="input_shapes"):
        augment(model, ["feat"], seed="tensor")
    aug = augment(model, ["feat"], seed="tensor", input_shapes={"x": [None, 2, 6, 6]})
    x = np.random.default_rng(0).standard_normal((3, 2, 6, 6)).astype(np.float32)
    grad = _run(aug.model, {"x": x, aug.seed_input: np.ones((3, 2), np.float32)})[aug.gradient_outputs["feat"]]
    # each 2x2 window routes 1/9 (GlobalAveragePool over 3x3) to its first maximum
    windows = np.maximum(x, 0).reshape(3, 2, 3, 2, 3, 2).transpose(0, 1, 2, 4, 3, 5).reshape(3, 2, 3, 3, 4)
    routed = grad.reshape(3, 2, 3, 2, 3, 2).transpose(0, 1, 2, 4, 3, 5).reshape(3, 2, 3, 3, 4)
    hit = windows.argmax(-1)
    np.testing.assert_allclose(np.take_along_axis(routed, hit[..., None], -1)[..., 0], 1 / 9, rtol=1e-6)
    assert np.count_nonzero(routed) == 3 * 2 * 9


# ------------------------------------------------------------------------------ errors


def test_errors(biased, tmp_path) -> None:
    model, _ = biased
    with pytest.raises(CamcoreError, match="seed must be 'class' or 'tensor', not 'onehot'"):
        augment(model, ["feat"], seed="onehot")  # type: ignore[arg-type]
    with pytest.raises(CamcoreError, match="repeat a tensor"):
        augment(model, ["feat", "relu"])  # the node name resolves to the same tensor
    with pytest.raises(CamcoreError, match=r"unknown output 'nope'.*\['logits'\]"):
        augment(model, ["feat"], output="nope")
    with pytest.raises(UnknownLayerError, match=r"closest: .*feat"):
        augment(model, ["faet"])
    with pytest.raises(ModelError, match="does not exist"):
        augment(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a model at all" * 10)
    with pytest.raises(ModelError, match="cannot read"):
        augment(junk)


def test_an_augmented_model_is_not_augmented_again(biased) -> None:
    aug = augment(biased[0], ["feat"])
    with pytest.raises(ModelError, match="already augmented by camcore"):
        augment(aug.model, ["feat"])


def test_empty_target_layers_is_an_error(biased) -> None:
    with pytest.raises(CamcoreError, match="target_layers is empty"):
        augment(biased[0], [])


def test_class_seed_needs_a_2d_output() -> None:
    text = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N,2,4,4] x) => (float[N,2,4] y) {
  feat = Relu(x)
  y = ReduceMean<axes = [3], keepdims = 0>(feat)
}"""
    model = onnx.parser.parse_model(text)
    with pytest.raises(CamcoreError, match=r"needs an \(N, classes\) output.*\['N', 2, 4\]; use seed='tensor'"):
        augment(model, ["feat"])
    assert augment(model, ["feat"], seed="tensor").gradient_outputs == {"feat": "camcore_gradient_0"}


def test_layer_that_does_not_influence_the_output() -> None:
    text = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N,3] x) => (float[N,3] y, float[N,3] side) {
  a = Relu(x)
  side = Neg(x)
  y = Exp(a)
}"""
    model = onnx.parser.parse_model(text)
    with pytest.raises(CamcoreError, match="layer 'side' does not influence output 'y'"):
        augment(model, ["side"])
    assert augment(model, ["side"], output="side", seed="tensor").target_layers == ["side"]


def test_no_default_layer_and_empty_model() -> None:
    text = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N,3] x) => (float[N,3] y) { y = Relu(x) }"""
    with pytest.raises(CamcoreError, match="no default target layer"):
        augment(onnx.parser.parse_model(text))
    empty = helper.make_model(
        helper.make_graph([], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])], []),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    with pytest.raises(ModelError, match="has no nodes"):
        augment(empty, ["x"])
