"""camcore.graph.builder: fresh names, shared constants and the op forms each opset expects.

Each opset-dependent form is checked twice: the node the builder emits (attribute or input) and
what onnxruntime computes when the node runs in a model of that opset (a wrong form fails the
checker or the session, a wrong value the comparison).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper, shape_inference

from camcore.graph.builder import GraphBuilder

_IR = {11: 7, 12: 7, 13: 7, 17: 8, 18: 8, 21: 10}


def _run(b: GraphBuilder, inputs: dict[str, np.ndarray], outputs: list[str]) -> list[np.ndarray]:
    """Run the builder's nodes as a model of opset ``b.opset`` (strict shape inference and the
    checker first: a form the opset does not know fails there)."""
    graph = helper.make_graph(
        [],
        "g",
        [
            helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
            for k, v in inputs.items()
        ],
        [],
    )
    b.add_to(graph)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", b.opset)])
    model.ir_version = _IR[b.opset]
    typed = {v.name: v for v in shape_inference.infer_shapes(model, strict_mode=True).graph.value_info}
    model.graph.output.extend(typed[o] for o in outputs)
    onnx.checker.check_model(model, full_check=True)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(outputs, inputs)


def _node(b: GraphBuilder) -> onnx.NodeProto:
    return b.nodes[-1]


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


X = np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 7


# ------------------------------------------------------------------------------ names


def test_fresh_names_are_unique_and_avoid_taken_names() -> None:
    b = GraphBuilder(17, taken={"camcore/t_1", "camcore/t_3"})
    names = [b.fresh() for _ in range(3)]
    assert names == ["camcore/t_2", "camcore/t_4", "camcore/t_5"]
    assert b.fresh("grad") == "camcore/grad_6"
    custom = GraphBuilder(17, prefix="camcore_hvp0")
    assert custom.fresh("x") == "camcore_hvp0/x_1"


def test_op_names_and_inputs() -> None:
    b = GraphBuilder(17, taken={"camcore/mul_1"})
    out = b.op("Mul", "a", "b")
    node = _node(b)
    assert out == node.output[0] and out != "camcore/mul_1"
    assert node.name not in (out, "camcore/mul_1") and node.name.startswith("camcore/Mul_")
    # trailing missing inputs are dropped, inner ones kept as "", None attributes left out
    b.op("Clip", "x", None, "hi")
    assert list(_node(b).input) == ["x", "", "hi"]
    b.op("Clip", "x", None, None, hint="clip", alpha=None)
    assert list(_node(b).input) == ["x"] and not _node(b).attribute and _node(b).output[0].startswith("camcore/clip_")
    outs = b.op("Split", "x", outputs=3, axis=0)
    assert isinstance(outs, list) and len(set(outs)) == 3 and list(_node(b).output) == outs
    all_names = [t for n in b.nodes for t in (n.name, *n.output)]
    assert len(all_names) == len(set(all_names))


def test_constants_are_shared_and_typed() -> None:
    b = GraphBuilder(17)
    a = b.const([1, 2, 3], np.int64)
    assert b.ints([1, 2, 3]) == a  # same value and dtype: one initializer
    assert b.const([1, 2, 3], np.int32) != a
    assert b.const([1, 2, 4], np.int64) != a
    s = b.scalar(0.5, TensorProto.FLOAT)
    assert b.scalar(0.5, TensorProto.FLOAT) == s and b.scalar(0.5, TensorProto.DOUBLE) != s
    assert len(b.initializers) == 5
    arrays = {i.name: numpy_helper.to_array(i) for i in b.initializers}
    assert arrays[a].dtype == np.int64 and arrays[a].tolist() == [1, 2, 3]
    assert arrays[s].shape == () and arrays[s].dtype == np.float32 and float(arrays[s]) == 0.5
    assert b.elem_types[a] == TensorProto.INT64 and b.elem_types[s] == TensorProto.FLOAT


def test_add_to_appends_nodes_and_initializers() -> None:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["r"])], "g", [], [])
    b = GraphBuilder(17)
    b.Mul("r", b.scalar(2.0, TensorProto.FLOAT))
    b.add_to(graph)
    assert [n.op_type for n in graph.node] == ["Relu", "Mul"]
    assert [i.name for i in graph.initializer] == [b.initializers[0].name]


# ------------------------------------------------------------------------------ opset forms


@pytest.mark.parametrize(
    ("op", "since", "ref"),
    [("ReduceSum", 13, np.sum), ("ReduceMean", 18, np.mean), ("ReduceMax", 18, np.max)],
)
@pytest.mark.parametrize("opset", [11, 13, 17, 18, 21])
@pytest.mark.parametrize("keepdims", [True, False])
def test_reductions_axes_as_attribute_or_input(op: str, since: int, ref, opset: int, keepdims: bool) -> None:
    b = GraphBuilder(opset)
    y = getattr(b, op)("x", [0, 2], keepdims=keepdims)
    node = _node(b)
    assert node.op_type == op and _attrs(node)["keepdims"] == int(keepdims)
    if opset >= since:
        assert len(node.input) == 2 and "axes" not in _attrs(node)
        assert numpy_helper.to_array(b.initializers[0]).tolist() == [0, 2]
    else:
        assert list(node.input) == ["x"] and _attrs(node)["axes"] == [0, 2]
    (got,) = _run(b, {"x": X}, [y])
    np.testing.assert_allclose(got, ref(X, axis=(0, 2), keepdims=keepdims), rtol=1e-6)


@pytest.mark.parametrize("opset", [11, 13, 18])
def test_reduce_without_axes_reduces_everything(opset: int) -> None:
    b = GraphBuilder(opset)
    y = b.ReduceSum("x", None, keepdims=False)
    assert list(_node(b).input) == ["x"] and "axes" not in _attrs(_node(b))
    (got,) = _run(b, {"x": X}, [y])
    np.testing.assert_allclose(got, X.sum())


@pytest.mark.parametrize("opset", [11, 12, 13, 21])
def test_squeeze_and_unsqueeze_forms(opset: int) -> None:
    b = GraphBuilder(opset)
    u = b.Unsqueeze("x", [0, 3])
    unsq = _node(b)
    s = b.Squeeze(u, [3])
    sq = _node(b)
    for node in (unsq, sq):
        if opset >= 13:
            assert len(node.input) == 2 and not node.attribute
        else:
            assert len(node.input) == 1 and "axes" in _attrs(node)
    assert _attrs(unsq).get("axes", [0, 3]) == [0, 3]
    got_u, got_s = _run(b, {"x": X[0]}, [u, s])
    assert got_u.shape == (1, 3, 4, 1) and got_s.shape == (1, 3, 4)
    np.testing.assert_array_equal(got_s[0], X[0])


@pytest.mark.parametrize("opset", [11, 13, 18])
def test_split_sizes_as_attribute_or_input(opset: int) -> None:
    b = GraphBuilder(opset)
    parts = b.Split("x", [1, 3], axis=2)
    node = _node(b)
    if opset >= 13:
        assert len(node.input) == 2 and "split" not in _attrs(node)
    else:
        assert _attrs(node)["split"] == [1, 3] and len(node.input) == 1
    got = _run(b, {"x": X}, parts)
    np.testing.assert_array_equal(got[0], X[:, :, :1])
    np.testing.assert_array_equal(got[1], X[:, :, 1:])


def test_reduce_sum_dynamic_needs_opset_13() -> None:
    with pytest.raises(NotImplementedError, match="opset >= 13"):
        GraphBuilder(12).ReduceSumDynamic("x", "axes")
    b = GraphBuilder(13)
    axes = b.ints([1])
    y = b.ReduceSumDynamic("x", axes, keepdims=True)
    assert _attrs(_node(b))["noop_with_empty_axes"] == 1
    (got,) = _run(b, {"x": X}, [y])
    np.testing.assert_array_equal(got, X.sum(axis=1, keepdims=True))
    b2 = GraphBuilder(13)
    y2 = b2.ReduceSumDynamic("x", b2.const(np.zeros(0, np.int64)))  # empty axes: no-op
    (same,) = _run(b2, {"x": X}, [y2])
    np.testing.assert_array_equal(same, X)


@pytest.mark.parametrize("opset", [11, 17])
def test_slice_pad_concat_range_and_zeros(opset: int) -> None:
    b = GraphBuilder(opset)
    sl = b.Slice("x", [1, 3], [2, 0], [1, 2], [1, -1])
    padded = b.Pad("x", [0, 1, 0, 0, 0, 2], value=1.5, elem_type=TensorProto.FLOAT)
    cropped = b.Pad("x", [0, 0, -1, 0, 0, -1])  # negative pads crop, no fill constant
    assert len(_node(b).input) == 2
    cat = b.Concat(["x", "x"], axis=1)
    rng = b.Range(b.scalar(0.0, TensorProto.FLOAT), b.scalar(3.0, TensorProto.FLOAT), b.scalar(1.0, TensorProto.FLOAT))
    zeros = b.ZerosLike("x", TensorProto.FLOAT)
    got = _run(b, {"x": X}, [sl, padded, cropped, cat, rng, zeros])
    np.testing.assert_array_equal(got[0], X[:, 1:2, 3:0:-1])
    np.testing.assert_array_equal(got[1], np.pad(X, [(0, 0), (1, 0), (0, 2)], constant_values=1.5))
    np.testing.assert_array_equal(got[2], X[:, :, 1:-1])
    np.testing.assert_array_equal(got[3], np.concatenate([X, X], axis=1))
    np.testing.assert_array_equal(got[4], [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(got[5], np.zeros_like(X))


def test_elementwise_helpers_compute_what_they_name() -> None:
    b = GraphBuilder(17)
    two = b.scalar(2.0, TensorProto.FLOAT)
    outs = [
        b.Add("x", two),
        b.Sub("x", two),
        b.Mul("x", two),
        b.Div("x", two),
        b.Neg("x"),
        b.Where(b.op("Greater", "x", two), "x", two),
        b.Cast(b.Cast("x", TensorProto.INT64), TensorProto.FLOAT),
        b.MatMul("x", b.const(np.eye(4, dtype=np.float32) * 3)),
        b.Transpose("x", [2, 0, 1]),
        b.Reshape("x", b.ints([4, -1])),
        b.Expand(b.scalar(1.0, TensorProto.FLOAT), b.Shape("x")),
        b.Identity("x"),
    ]
    got = _run(b, {"x": X}, outs)
    want = [X + 2, X - 2, X * 2, X / 2, -X, np.maximum(X, 2), X, X * 3, X.transpose(2, 0, 1), X.reshape(4, -1),
            np.ones_like(X), X]  # fmt: skip
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
