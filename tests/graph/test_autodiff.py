"""camcore.graph.autodiff: which nodes are differentiated, the gradient graph it emits, and the
errors for ops it cannot differentiate."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort
import pytest

from camcore.errors import CamcoreError, UnsupportedOpError
from camcore.graph import augment
from camcore.graph.autodiff import backward_reach, build_gradients, constant_values, forward_reach, path_nodes
from camcore.graph.builder import GraphBuilder
from camcore.graph.shapes import infer_tensor_info

#: a diamond (a and b both from x, joined in c), an int branch, a branch that leaves by another
#: output, and a weight-only computation
BRANCHY = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N,3] x, float[N,3] z) => (float[N,3] y, float[N,3] side) <float[3] w = {1.0, 2.0, 3.0}> {
  a = Relu(x)
  b = Neg(x)
  c = Add(a, b)
  k = Shape(c)
  side = Exp(b)
  w2 = Mul(w, w)
  d = Mul(c, w2)
  y = Add(d, z)
}"""


@pytest.fixture(scope="module")
def branchy() -> tuple[onnx.ModelProto, dict]:
    model = onnx.parser.parse_model(BRANCHY)
    for node in model.graph.node:
        node.name = node.output[0]
    return model, infer_tensor_info(model)


def _names(nodes) -> list[str]:
    return [n.name for n in nodes]


def test_forward_reach_follows_float_tensors_only(branchy) -> None:
    model, info = branchy
    nodes = list(model.graph.node)
    assert forward_reach(nodes, ["x"], info) == {"x", "a", "b", "c", "side", "d", "y"}  # not the int64 k
    assert forward_reach(nodes, ["z"], info) == {"z", "y"}
    assert forward_reach(nodes, ["w"], info) == {"w", "w2", "d", "y"}
    # a stop tensor counts as a constant: nothing flows through it
    assert forward_reach(nodes, ["x"], info, stop=frozenset({"a", "b"})) == {"x"}
    assert forward_reach(nodes, ["x"], info, stop=frozenset({"b"})) == {"x", "a", "c", "d", "y"}


def test_backward_reach_finds_everything_an_output_depends_on(branchy) -> None:
    model, _ = branchy
    nodes = list(model.graph.node)
    assert backward_reach(nodes, ["y"]) == {"y", "d", "z", "c", "w2", "w", "a", "b", "x"}
    assert backward_reach(nodes, ["side"]) == {"side", "b", "x"}
    assert backward_reach(nodes, ["k"]) == {"k", "c", "a", "b", "x"}


def test_path_nodes_from_a_layer_to_an_output(branchy) -> None:
    model, info = branchy
    nodes = list(model.graph.node)
    on_path, fwd = path_nodes(nodes, ["x"], ["y"], info)
    assert _names(on_path) == ["a", "b", "c", "d", "y"]  # graph order; not Shape, Exp or the weight's Mul
    assert fwd == forward_reach(nodes, ["x"], info)
    assert _names(path_nodes(nodes, ["a"], ["y"], info)[0]) == ["c", "d", "y"]
    assert _names(path_nodes(nodes, ["x"], ["side"], info)[0]) == ["b", "side"]
    assert path_nodes(nodes, ["side"], ["y"], info)[0] == []  # side does not reach y
    assert _names(path_nodes(nodes, ["x"], ["y"], info, stop=frozenset({"a"}))[0]) == ["b", "c", "d", "y"]


def test_constant_values_reads_initializers_and_constant_nodes() -> None:
    text = """<ir_version: 8, opset_import: ["" : 17]>
g (float[2] x) => (float[2] y) <float[2] w = {1.5, -2.0}> {
  c = Constant<value = int64[2] {3, 4}>()
  f = Constant<value_float = 0.5>()
  i = Constant<value_ints = [1, 2, 3]>()
  t = Mul(x, w)
  u = Mul(t, f)
  y = Identity(u)
}"""
    values = constant_values(onnx.parser.parse_model(text).graph)
    assert values["w"].tolist() == [1.5, -2.0]
    assert values["c"].tolist() == [3, 4] and values["c"].dtype == np.int64
    assert float(values["f"]) == 0.5 and values["i"].tolist() == [1, 2, 3]
    assert set(values) == {"w", "c", "f", "i"}


def _gradients(model: onnx.ModelProto, wrt: list[str], seed: np.ndarray, feeds: dict) -> dict[str, np.ndarray]:
    """build_gradients on the bare graph: every target's gradient as an extra output."""
    info = infer_tensor_info(model)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    b = GraphBuilder(17, {t for n in m.graph.node for t in (*n.input, *n.output)})
    grads = build_gradients(m.graph, info, b, wrt, {"y": "seed"})
    b.add_to(m.graph)
    m.graph.input.append(onnx.helper.make_tensor_value_info("seed", onnx.TensorProto.FLOAT, seed.shape))
    names = {t: g for t, g in grads.items() if g is not None}
    m.graph.output.extend(onnx.helper.make_tensor_value_info(g, onnx.TensorProto.FLOAT, None) for g in names.values())
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    out = sess.run(list(names.values()), {**feeds, "seed": seed})
    return {t: v for t, v in zip(names, out)} | {t: None for t, g in grads.items() if g is None}


def test_build_gradients_sums_the_paths_of_a_diamond(branchy) -> None:
    """y = (relu(x) - x)·w² + z: dy/dx = ([x > 0] - 1)·w², both paths added."""
    model, _ = branchy
    x = np.array([[1.0, -2.0, 0.5], [-0.1, 3.0, -4.0]], np.float32)
    z = np.zeros_like(x)
    seed = np.array([[1.0, 2.0, -1.0], [0.5, -3.0, 2.0]], np.float32)
    got = _gradients(model, ["x", "a", "z"], seed, {"x": x, "z": z})
    w2 = np.array([1.0, 4.0, 9.0], np.float32)
    np.testing.assert_allclose(got["x"], seed * w2 * ((x > 0) - 1.0))
    np.testing.assert_allclose(got["a"], seed * w2)
    np.testing.assert_allclose(got["z"], seed)


def test_a_tensor_used_twice_gets_both_contributions() -> None:
    text = """<ir_version: 8, opset_import: ["" : 17]>
g (float[2] x) => (float[2] y) { s = Mul(x, x) y = Add(s, x) }"""
    x = np.array([1.5, -2.0], np.float32)
    got = _gradients(onnx.parser.parse_model(text), ["x"], np.ones(2, np.float32), {"x": x})
    np.testing.assert_allclose(got["x"], 2 * x + 1)


def test_a_target_that_does_not_reach_the_output_gets_none(branchy) -> None:
    model, _ = branchy
    info = infer_tensor_info(model)
    b = GraphBuilder(17, {t for n in model.graph.node for t in (*n.input, *n.output)})
    grads = build_gradients(model.graph, info, b, ["side", "a"], {"y": "seed"})
    assert grads["side"] is None and grads["a"] is not None
    with pytest.raises(CamcoreError, match="layer 'side' does not influence output 'y'"):
        augment(model, ["side"], seed="tensor")


def test_weights_get_no_gradient(branchy) -> None:
    """Only nodes on a path from the target are differentiated: w's Mul gets no backward node."""
    model, info = branchy
    b = GraphBuilder(17, {t for n in model.graph.node for t in (*n.input, *n.output)})
    build_gradients(model.graph, info, b, ["a"], {"y": "seed"})
    read = {i for n in b.nodes for i in n.input}
    assert "w" not in read and "x" not in read  # upstream of the target: not even read


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
        augment(model, ["feat"])
    msg = str(err.value)
    assert "no gradient rule for op com.example::Mystery" in msg and "'odd'" in msg
    assert "feat -> " in msg and "-> y" in msg and "\n" not in msg
    assert "supported ops: " in msg and "Relu" in msg


def test_unsupported_standard_op_on_the_path() -> None:
    text = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N,4] x) => (float[N,4] y) {
  a = Relu(x)
  b = Cos(a)
  y = Neg(b)
}"""
    with pytest.raises(
        UnsupportedOpError, match=r"no gradient rule for op Cos \(node 'b'\).*a -> Cos\(b\) -> Neg\(y\) -> y"
    ):
        augment(onnx.parser.parse_model(text), ["a"], seed="tensor")


def test_control_flow_reading_a_layer_by_name_is_on_the_path() -> None:
    """If's branches read ``a`` from the outer graph (an implicit input): the If is on the gradient
    path and is reported, although ``a`` is not among its node inputs."""
    from onnx import TensorProto, helper

    def branch(name: str, op: str) -> onnx.GraphProto:
        return helper.make_graph(
            [helper.make_node(op, ["a"], [f"{name}_out"])],
            name,
            [],
            [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [2, 3])],
        )

    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["a"], name="relu"),
            helper.make_node(
                "If",
                ["flag"],
                ["y"],
                name="choose",
                then_branch=branch("then", "Neg"),
                else_branch=branch("else", "Identity"),
            ),
        ],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    info = infer_tensor_info(model)
    assert _names(path_nodes(list(model.graph.node), ["a"], ["y"], info)[0]) == ["choose"]
    assert "a" in backward_reach(list(model.graph.node), ["y"])
    with pytest.raises(UnsupportedOpError, match=r"control flow: op If \(node 'choose'\).*a -> If\(choose\) -> y"):
        augment(model, ["a"], seed="tensor")
