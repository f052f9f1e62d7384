"""Control flow on the gradient path is named as such (its subgraphs read the layer by name)."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from camcore.errors import UnsupportedOpError
from camcore.graph import augment


def _if_model() -> onnx.ModelProto:
    """x -> Relu ("feat") -> If(cond) { then: Mul(feat, 2); else: Neg(feat) } -> ReduceSum -> y."""
    then = helper.make_graph(
        [helper.make_node("Mul", ["feat", "two"], ["t_out"])], "then", [],
        [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, None)],
        [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])],
    )  # fmt: skip
    other = helper.make_graph(
        [helper.make_node("Neg", ["feat"], ["e_out"])], "else", [],
        [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, None)],
    )  # fmt: skip
    nodes = [
        helper.make_node("Relu", ["x"], ["feat"], name="relu"),
        helper.make_node("If", ["cond"], ["branch"], name="choose", then_branch=then, else_branch=other),
        helper.make_node("ReduceSum", ["branch"], ["y"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "if", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 3, 3]),
                      helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_if_after_the_layer_is_named() -> None:
    with pytest.raises(UnsupportedOpError, match=r"control flow: op If \(node 'choose'\) is on the gradient path"):
        augment(_if_model(), ["feat"], seed="tensor")


def _shape_decided_if(channels_test: int) -> onnx.ModelProto:
    """As dynamo exports a size check: cond = Shape(feat)[1] == channels_test, from static dims."""
    model = _if_model()
    graph = model.graph
    graph.input.pop()  # cond is no input now: it is computed
    graph.node.insert(1, helper.make_node("Shape", ["feat"], ["shape"]))
    graph.node.insert(2, helper.make_node("Gather", ["shape", "one"], ["c"], axis=0))
    graph.node.insert(3, helper.make_node("Equal", ["c", "want"], ["cond"]))
    graph.initializer.extend(
        [
            helper.make_tensor("one", TensorProto.INT64, [], [1]),
            helper.make_tensor("want", TensorProto.INT64, [], [channels_test]),
        ]
    )
    return model


@pytest.mark.parametrize(("channels_test", "factor"), [(2, 2.0), (5, -1.0)])
def test_an_if_the_static_dims_decide_is_folded(channels_test: int, factor: float) -> None:
    """The branch taken replaces the If; the gradient is the branch's (then: 2, else: -1 on
    the Relu's positive cells), and the original output is unchanged."""
    import numpy as np
    import onnxruntime as ort

    model = _shape_decided_if(channels_test)
    aug = augment(model, ["feat"], seed="tensor")
    assert not any(n.op_type == "If" for n in aug.model.graph.node)
    x = np.random.default_rng(0).standard_normal((2, 2, 3, 3)).astype(np.float32)
    session = ort.InferenceSession(aug.model.SerializeToString(), providers=["CPUExecutionProvider"])
    y, grad = session.run(
        [aug.original_outputs[0], aug.gradient_outputs["feat"]], {"x": x, aug.seed_input: np.ones((), np.float32)}
    )
    plain = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(y, plain)
    np.testing.assert_array_equal(grad, np.full_like(x, factor))
    assert any(n.op_type == "If" for n in model.graph.node)  # the caller's model is left as it was


def test_an_if_on_the_data_stays_and_is_named() -> None:
    model = _if_model()  # cond is an input: nothing decides it before the run
    with pytest.raises(UnsupportedOpError, match=r"op If \(node 'choose'\)"):
        augment(model, ["feat"], seed="tensor")
