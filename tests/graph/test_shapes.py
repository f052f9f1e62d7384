"""camcore.graph.shapes: what shape inference says about every tensor, fixing input dims, and
probing the shapes inference cannot follow."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from camcore.errors import InputError
from camcore.graph import augment, prepare_model
from camcore.graph.shapes import TensorInfo, fix_input_shapes, free_unset_dims, infer_tensor_info, probe_shapes

MIXED = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N,3,?] x, int64[2] k) => (float[N,?] y) {
  c = Constant<value = float[2,3] {1, 2, 3, 4, 5, 6}>()
  r = Relu(x)
  m = ReduceMean<axes = [2], keepdims = 0>(r)
  y = MatMul(m, w)
}"""

#: ``t``'s length comes from ReduceMax(Shape(Shape(x))), which data propagation does not follow:
#: the Reshape, and everything after it up to the Flatten, has no rank for inference.
UNTYPED = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N,3,4] x) => (float[N,3] y) {
  s = Shape(x)
  ss = Shape(s)
  en = ReduceMax<keepdims = 1>(ss)
  st = Constant<value = int64[1] {0}>()
  t = Slice(s, st, en)
  r = Reshape(x, t)
  a = Relu(r)
  ax = Constant<value = int64[1] {2}>()
  p = ReduceSum<keepdims = 0>(a, ax)
  y = Flatten(p)
}"""


def _mixed() -> onnx.ModelProto:
    model = onnx.parser.parse_model(MIXED)
    w = np.arange(6, dtype=np.float32).reshape(3, 2)
    model.graph.initializer.append(numpy_helper.from_array(w, "w"))
    return model


def test_dims_are_int_str_or_none() -> None:
    info = infer_tensor_info(_mixed())
    assert info["x"].elem_type == TensorProto.FLOAT and info["x"].shape[:2] == ("N", 3)
    assert not isinstance(info["x"].shape[2], int)  # unknown: None, or a name inference made up
    assert info["k"] == TensorInfo(TensorProto.INT64, (2,))
    assert info["r"].shape[:2] == ("N", 3) and not isinstance(info["r"].shape[2], int)
    assert info["m"].shape == ("N", 3)
    assert info["y"].shape == ("N", 2)  # inferred through the MatMul, beyond the declared (N, ?)
    assert info["w"] == TensorInfo(TensorProto.FLOAT, (3, 2))  # initializers
    assert info["c"] == TensorInfo(TensorProto.FLOAT, (2, 3))  # Constant nodes
    assert info["x"].rank == 3 and TensorInfo(TensorProto.FLOAT, None).rank is None
    assert isinstance(info["x"].shape[1], int) and isinstance(info["x"].shape[0], str)


def test_unknown_dims_of_an_op_inference_does_not_know_are_none() -> None:
    text = """<ir_version: 8, opset_import: ["" : 17, "com.example" : 1]>
g (float[N,3] x) => (float[?,3] y) {
  r = Relu(x)
  y = com.example.Mystery(r)
}"""
    info = infer_tensor_info(onnx.parser.parse_model(text))
    assert info["y"] == TensorInfo(TensorProto.FLOAT, (None, 3))  # as declared: nothing inferred
    assert info["r"] == TensorInfo(TensorProto.FLOAT, ("N", 3))


def test_large_initializers_are_typed_without_their_bytes() -> None:
    """Initializers over the small-size limit become typed inputs for inference: their users
    are still typed, and the model itself is not changed."""
    text = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N,64] x) => (float[N,100] y) { y = MatMul(x, big) }"""
    model = onnx.parser.parse_model(text)
    big = np.ones((64, 100), np.float32)  # 25.6 kB
    model.graph.initializer.append(numpy_helper.from_array(big, "big"))
    before = model.SerializeToString()
    info = infer_tensor_info(model)
    assert info["big"] == TensorInfo(TensorProto.FLOAT, (64, 100))
    assert info["y"].shape == ("N", 100)
    assert model.SerializeToString() == before


def test_untyped_tensors_have_no_shape() -> None:
    info = infer_tensor_info(onnx.parser.parse_model(UNTYPED))
    assert info["r"].shape is None and info["a"].shape is None and info["r"].rank is None
    assert info["r"].elem_type == TensorProto.FLOAT


def test_fix_input_shapes_sets_ints_and_names_and_keeps_none() -> None:
    model = _mixed()
    fix_input_shapes(model, {"x": [None, 3, 16], "k": ["two"]})
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and not dims[0].HasField("dim_value")  # None keeps the dim
    assert dims[1].dim_value == 3
    assert dims[2].dim_value == 16 and not dims[2].dim_param
    k = model.graph.input[1].type.tensor_type.shape.dim
    assert k[0].dim_param == "two" and not k[0].HasField("dim_value")  # an int dim becomes named
    info = infer_tensor_info(model)
    assert info["x"].shape == ("N", 3, 16) and info["k"].shape == ("two",)
    fix_input_shapes(model, {"x": [4, None, None]})
    assert infer_tensor_info(model)["r"].shape == (4, 3, 16)


def test_fix_input_shapes_on_an_input_without_dims() -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    fix_input_shapes(model, {"x": [2, "C"]})
    assert infer_tensor_info(model)["y"].shape == (2, "C")


def test_fix_input_shapes_errors() -> None:
    model = _mixed()
    with pytest.raises(InputError, match=r"names 'z', which is not a model input; inputs are \['k', 'x'\]"):
        fix_input_shapes(model, {"z": [1]})
    with pytest.raises(InputError, match=r"input_shapes\['x'\] has 2 dims but the model input has 3"):
        fix_input_shapes(model, {"x": [1, 3]})


def test_probe_shapes_measures_what_inference_cannot_type() -> None:
    model = onnx.parser.parse_model(UNTYPED)
    info = infer_tensor_info(model)
    found = probe_shapes(model, info, ["r", "a", "p", "s", "missing"])
    # the batch follows the probe (2, then 3) and stays unknown; the other dims are measured
    assert found["r"] == TensorInfo(TensorProto.FLOAT, (None, 3, 4))
    assert found["a"] == TensorInfo(TensorProto.FLOAT, (None, 3, 4))
    assert found["p"] == TensorInfo(TensorProto.FLOAT, (None, 3))
    assert found["s"] == TensorInfo(TensorProto.INT64, (3,))
    assert "missing" not in found
    assert probe_shapes(model, info, []) == {}


def test_probe_shapes_needs_static_non_batch_dims() -> None:
    text = UNTYPED.replace("float[N,3,4] x", "float[N,3,W] x")
    model = onnx.parser.parse_model(text)
    assert probe_shapes(model, infer_tensor_info(model), ["r"]) == {}


def test_augment_probes_the_gradient_path() -> None:
    """The gradient rules need ranks: augment probes them, and the gradient is right."""
    model = onnx.parser.parse_model(UNTYPED)
    aug = augment(model, ["r"], seed="tensor")
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    seed = np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)
    sess = ort.InferenceSession(aug.model.SerializeToString(), providers=["CPUExecutionProvider"])
    out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"x": x, aug.seed_input: seed})))
    np.testing.assert_allclose(out[aug.gradient_outputs["r"]], np.where(x > 0, seed[:, :, None], 0), rtol=1e-6)


# ---------------------------------------------------------------------- -1, 0, unnamed and symbolic dims
@pytest.mark.parametrize("unset", [-1, 0])
def test_a_dim_value_of_minus_one_or_zero_is_unknown(unset: int) -> None:
    """Exporters write -1 or 0 for a dynamic dim (PaddleOCR's batch): it reads as None, and
    prepare_model clears it from inputs, outputs and value_info so nothing takes it as a size."""
    model = _mixed()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = unset
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_value = unset
    model.graph.value_info.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [unset, 3, unset]))
    info = infer_tensor_info(model)
    assert info["x"].shape[:2] == (None, 3) and info["m"].shape == (None, 3) and info["y"].shape == (None, 2)
    prepared, info = prepare_model(model)
    assert free_unset_dims(prepared) == 0  # nothing left to clear
    assert free_unset_dims(model) == 4
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert not dims[0].HasField("dim_value") and not dims[0].dim_param and dims[1].dim_value == 3
    assert info["x"].shape[:2] == (None, 3) and info["y"].shape == (None, 2)


def test_fix_input_shapes_takes_minus_one_or_zero_as_dynamic() -> None:
    model = _mixed()
    fix_input_shapes(model, {"x": [-1, 0, 16]})
    assert infer_tensor_info(model)["x"].shape == (None, None, 16)


#: ``f`` is (N, 12) only through Shape -> Gather -> Concat with a -1, which ONNX inference cannot
#: size while the batch is symbolic; ``g`` has a dim that truly follows the batch (N·12)
HIDDEN = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N,3,4] x) => (float[N,12] f, float[?] g) {
  s = Shape(x)
  i0 = Constant<value = int64 {0}>()
  n = Gather<axis = 0>(s, i0)
  ax = Constant<value = int64[1] {0}>()
  n1 = Unsqueeze(n, ax)
  m1 = Constant<value = int64[1] {-1}>()
  t = Concat<axis = 0>(n1, m1)
  f = Reshape(x, t)
  g = Reshape(x, m1)
}"""


@pytest.mark.parametrize("batch", ["N", "-1", "0", "?"])
def test_a_dynamic_batch_does_not_hide_the_dims_that_do_not_follow_it(batch: str) -> None:
    """Inference is run again with the batch fixed: f's -1 becomes 12, the batch stays
    dynamic (its name, or None), and a dim that follows the batch stays unknown."""
    text = HIDDEN.replace("float[N,3,4] x", f"float[{batch},3,4] x")
    model = onnx.parser.parse_model(text)
    if batch in ("-1", "0"):  # the parser reads them as names: write them as exporters do
        model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = int(batch)
    info = infer_tensor_info(model)
    n = "N" if batch == "N" else None
    assert info["f"].shape == (n, 12) and info["t"].shape == (2,)
    assert info["g"].rank == 1 and not isinstance(info["g"].shape[0], int)  # None, or a name inference made up
    assert info["x"].shape == (n, 3, 4)


def test_a_static_batch_infers_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import camcore.graph.shapes as shapes

    calls: list[int] = []
    real = shapes._infer
    monkeypatch.setattr(shapes, "_infer", lambda m: calls.append(1) or real(m))
    model = onnx.parser.parse_model(HIDDEN.replace("float[N,3,4] x", "float[2,3,4] x"))
    assert infer_tensor_info(model)["f"].shape == (2, 12) and len(calls) == 1
    infer_tensor_info(onnx.parser.parse_model(HIDDEN))
    assert len(calls) == 4  # a symbolic batch and a dim left unknown: twice more


@pytest.mark.parametrize("batch", ["N", -1, 0, None])
@pytest.mark.parametrize("fixed", [False, True], ids=["as-declared", "input_shapes"])
def test_a_yolo_like_head_is_differentiated_whatever_the_batch_dim(batch: int | str | None, fixed: bool) -> None:
    """YOLOv8's head (Reshapes sized from Shape ops, a -1 for the anchors, the DFL Conv) with a
    dynamic batch: the DFL Conv's input (N, 16, 4, A) gets a static A, and the gradient of the
    first layer matches finite differences (the cut after it run in float64), batch 1 and 2."""
    from camcore.graph.parts import downstream_model
    from tests.detector_models import BINS, tiny_detector
    from tests.graph.fd import PRECISE_OPS, to_double

    model = tiny_detector(batch=batch)
    shapes = {"x": [None, 3, 16, 16]} if fixed else None
    aug = augment(model, ["feat"], seed="tensor", input_shapes=shapes)
    info = infer_tensor_info(aug.model)
    assert info["/model.22/dfl/sm"].shape[1:] == (BINS, 4, 80)
    assert not isinstance(info["x"].shape[0], int)  # the batch stays dynamic
    sess = ort.InferenceSession(aug.model.SerializeToString(), providers=["CPUExecutionProvider"])
    prepared, prepared_info = prepare_model(model)
    cut, _ = downstream_model(prepared, prepared_info, "feat", "boxes")
    ref = onnx.reference.ReferenceEvaluator(to_double(cut), new_ops=PRECISE_OPS)
    rng = np.random.default_rng(3)
    for n in (1, 2):
        x = rng.standard_normal((n, 3, 16, 16)).astype(np.float32)
        seed = rng.standard_normal((n, 7, 80)).astype(np.float32)
        out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"x": x, aug.seed_input: seed})))
        feat, grad = out[aug.activation_outputs["feat"]], out[aug.gradient_outputs["feat"]]
        assert grad.shape == feat.shape == (n, 4, 8, 8)

        def f(a: np.ndarray, seed: np.ndarray = seed) -> float:
            return float(np.sum(ref.run(["boxes"], {"feat": a})[0] * seed))

        base, eps = feat.astype(np.float64), 1e-6
        for _ in range(6):
            v = rng.standard_normal(base.shape)
            fd = (f(base + eps * v) - f(base - eps * v)) / (2 * eps)
            np.testing.assert_allclose(float(np.sum(grad * v)), fd, rtol=1e-4, atol=1e-4 * max(1.0, abs(fd)))


def test_shape_values_follow_the_static_dims_only() -> None:
    """Shape -> Gather picks a static dim out of a shape with a dynamic batch; values that need
    the batch, or that would be large tensors, stay unknown."""
    import numpy as np
    import onnx.parser

    from camcore.graph.autodiff import constant_values
    from camcore.graph.shapes import infer_tensor_info, shape_values

    text = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N,4,6] x) => (float[N,4,6] y) {
  s = Shape(x)
  one = Constant<value = int64[1] {1}>()
  zero = Constant<value = int64[1] {0}>()
  c = Gather<axis = 0>(s, one)
  n = Gather<axis = 0>(s, zero)
  two = Constant<value = int64[1] {2}>()
  three = Constant<value = int64[1] {3}>()
  wide = Constant<value = int64[2] {1000, 1000}>()
  half = Div(c, two)
  tail = Slice(s, one, three)
  big = ConstantOfShape(wide)
  y = Identity(x)
}"""
    model = onnx.parser.parse_model(text)
    values = shape_values(model.graph, infer_tensor_info(model), 17, constant_values(model.graph))
    assert values["c"].tolist() == [4] and values["half"].tolist() == [2] and values["tail"].tolist() == [4, 6]
    assert "n" not in values and "s" not in values  # the batch is dynamic
    assert "big" not in values
    assert np.asarray(values["one"]).tolist() == [1]
