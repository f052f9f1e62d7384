"""Control flow that the static dims decide, taken out of the graph.

Exporters guard shape-dependent code with ``If`` (torch's dynamo exporter for a size check,
paddle2onnx and tf2onnx for padding or resizing choices). Where the condition is a constant,
or follows from constants and the static dims (:func:`~camcore.graph.shapes.shape_values`),
:func:`fold_constant_ifs` replaces the ``If`` by the nodes of the branch it takes: the graph
computes the same values and has no control flow left on the way to the gradient. An ``If``
whose condition depends on the data or the dynamic batch stays, and the gradient's check names
it (:data:`~camcore.graph.autodiff.CONTROL_FLOW`).
"""

from __future__ import annotations

import onnx
from onnx import helper

from camcore.graph.autodiff import constant_values
from camcore.graph.shapes import TensorInfo, shape_values

__all__ = ["fold_constant_ifs"]


def fold_constant_ifs(model: onnx.ModelProto, info: dict[str, TensorInfo], opset: int) -> int:
    """Inline, in place, every top-level ``If`` whose condition the constants and static dims
    decide; returns how many were folded (re-infer the shapes when any was).

    Example:
        >>> fold_constant_ifs(model, info, 17)  # doctest: +SKIP
        1
    """
    folded = 0
    while True:
        graph = model.graph
        values = shape_values(graph, info, opset, constant_values(graph))
        at = next((k for k, n in enumerate(graph.node) if n.op_type == "If" and n.input[0] in values), None)
        if at is None:
            return folded
        node = graph.node[at]
        taken = bool(values[node.input[0]].reshape(-1)[0])
        branch = next(a.g for a in node.attribute if a.name == ("then_branch" if taken else "else_branch"))
        nodes = _inlined(branch, node, folded, graph)
        del graph.node[at]
        for k, inner in enumerate(nodes):
            graph.node.insert(at + k, inner)
        folded += 1


def _inlined(branch: onnx.GraphProto, node: onnx.NodeProto, index: int, graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The branch's nodes with their own tensors renamed apart, its initializers moved to the
    graph, and an Identity per output onto the ``If``'s output names."""
    prefix = f"camcore_if{index}/"
    local = {t.name for t in branch.initializer} | {o for n in branch.node for o in n.output if o}
    rename = {name: prefix + name for name in local}
    for init in branch.initializer:
        moved = onnx.TensorProto()
        moved.CopyFrom(init)
        moved.name = rename[init.name]
        graph.initializer.append(moved)
    nodes = []
    for inner in branch.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(inner)
        copy.name = prefix + (inner.name or inner.op_type)
        copy.input[:] = [rename.get(i, i) for i in inner.input]
        copy.output[:] = [rename.get(o, o) for o in inner.output]
        nodes.append(copy)
    for out, target in zip(branch.output, node.output):
        nodes.append(helper.make_node("Identity", [rename.get(out.name, out.name)], [target], name=f"{prefix}out"))
    return nodes
