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
