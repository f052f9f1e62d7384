"""Reverse-mode autodiff appended to an ONNX graph, in standard ONNX ops.

Only the nodes on a path from a target tensor to the differentiated output are
differentiated; weights and shape computations get no gradient. Gradients reaching
one tensor along several paths are summed with Add.

Quantized (QDQ) models are differentiated with a straight-through gradient: the integer
output of a QuantizeLinear that reads a reached float tensor counts as reached, and the
rules of ``rules/quantize.py`` pass the gradient through QuantizeLinear/DequantizeLinear
unchanged. Other integer tensors (shapes, indices, ArgMax) carry no gradient.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from camcore.errors import CamcoreError, UnsupportedOpError
from camcore.graph.builder import FLOAT_TYPES, GraphBuilder
from camcore.graph.registry import RULES, GradContext
from camcore.graph.shapes import TensorInfo, shape_values

_MAX_CONSTANT_ELEMENTS = 4096


#: integer element types of quantized tensors: a gradient flows through them from QuantizeLinear on
QUANTIZED_TYPES = frozenset(
    {
        onnx.TensorProto.INT8,
        onnx.TensorProto.UINT8,
        onnx.TensorProto.INT16,
        onnx.TensorProto.UINT16,
        onnx.TensorProto.INT4,
        onnx.TensorProto.UINT4,
    }
)


def _is_float(name: str, info: dict[str, TensorInfo]) -> bool:
    ti = info.get(name)
    return ti is None or ti.elem_type in FLOAT_TYPES or ti.elem_type == 0


def _is_quantized(name: str, info: dict[str, TensorInfo]) -> bool:
    ti = info.get(name)
    return ti is not None and ti.elem_type in QUANTIZED_TYPES


def _quantizes(node: onnx.NodeProto) -> bool:
    return node.op_type == "QuantizeLinear" and node.domain in ("", "ai.onnx")


#: ops whose subgraphs read outer tensors by name (implicit inputs); camcore has no rules for them
CONTROL_FLOW = frozenset({"If", "Loop", "Scan"})


def node_inputs(node: onnx.NodeProto) -> list[str]:
    """The tensors a node reads: its inputs and, for control flow, the outer tensors its
    subgraphs use by name (implicit inputs)."""
    inputs = [i for i in node.input if i]
    if node.op_type in CONTROL_FLOW:
        inputs += [t for t in _outer_names(node) if t not in inputs]
    return inputs


def _outer_names(node: onnx.NodeProto) -> list[str]:
    """Names the subgraphs of ``node`` read but do not define (recursively)."""
    found: list[str] = []
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for g in graphs:
            local = {i.name for i in g.input} | {i.name for i in g.initializer}
            for inner in g.node:
                for t in node_inputs(inner):
                    if t not in local and t not in found:
                        found.append(t)
                local.update(o for o in inner.output if o)
    return found


def forward_reach(
    nodes: Sequence[onnx.NodeProto],
    sources: Sequence[str],
    info: dict[str, TensorInfo],
    stop: frozenset[str] = frozenset(),
) -> set[str]:
    """Float tensors that depend on any of ``sources`` (``stop`` tensors count as constants), and
    the quantized integers between them: a QuantizeLinear output, and what reads one on."""
    reached = set(sources)
    quantized: set[str] = set()
    for node in nodes:
        inputs = node_inputs(node)
        if not any(i in reached for i in inputs):
            continue
        carries = _quantizes(node) or any(i in quantized for i in inputs)
        for o in node.output:
            if not o or o in stop:
                continue
            if _is_float(o, info):
                reached.add(o)
            elif carries and _is_quantized(o, info):
                reached.add(o)
                quantized.add(o)
    return reached


def backward_reach(nodes: Sequence[onnx.NodeProto], sinks: Sequence[str]) -> set[str]:
    """Tensors that some of ``sinks`` depend on."""
    reached = set(sinks)
    for node in reversed(nodes):
        if any(o in reached for o in node.output):
            reached.update(node_inputs(node))
    return reached


def path_nodes(
    nodes: Sequence[onnx.NodeProto],
    sources: Sequence[str],
    sinks: Sequence[str],
    info: dict[str, TensorInfo],
    stop: frozenset[str] = frozenset(),
) -> tuple[list[onnx.NodeProto], set[str]]:
    """Nodes with an input reached from ``sources`` and an output reaching ``sinks``."""
    fwd = forward_reach(nodes, sources, info, stop)
    bwd = backward_reach(nodes, sinks)
    on_path = [
        n for n in nodes if any(i in fwd for i in node_inputs(n)) and any(o in fwd and o in bwd for o in n.output)
    ]
    return on_path, fwd


def describe_path(nodes: Sequence[onnx.NodeProto], source: str, via: onnx.NodeProto, sink: str) -> str:
    """A readable chain ``source -> OpType(name) -> ... -> sink`` through node ``via``."""
    producer = {o: n for n in nodes for o in n.output}

    def chain_to(tensor: str, start: set[str]) -> list[onnx.NodeProto]:
        out: list[onnx.NodeProto] = []
        while tensor not in start and tensor in producer:
            node = producer[tensor]
            out.append(node)
            nxt = [i for i in node.input if i and (i in start or i in producer)]
            if not nxt:
                break
            tensor = nxt[0]
        return list(reversed(out))

    before = chain_to(via.input[0] if via.input else source, {source})
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for n in nodes:
        for i in n.input:
            consumers[i].append(n)
    bwd = backward_reach(nodes, [sink])
    after: list[onnx.NodeProto] = []
    tensor = next((o for o in via.output if o in bwd), via.output[0])
    while tensor != sink:
        nxt = next((n for n in consumers.get(tensor, []) if any(o in bwd for o in n.output)), None)
        if nxt is None:
            break
        after.append(nxt)
        tensor = next(o for o in nxt.output if o in bwd)
    steps = [*before, via, *after]
    if len(steps) > 12:
        steps = [*steps[:5], None, *steps[-6:]]  # type: ignore[list-item]
    text = " -> ".join("..." if n is None else f"{n.op_type}({n.name or n.output[0]})" for n in steps)
    return f"{source} -> {text} -> {sink}"


def constant_values(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Values of small initializers and Constant nodes (rules read attributes-as-inputs)."""
    values: dict[str, np.ndarray] = {}
    for init in graph.initializer:
        if np.prod(init.dims, dtype=np.int64) <= _MAX_CONSTANT_ELEMENTS and (
            init.data_location != onnx.TensorProto.EXTERNAL
        ):
            values[init.name] = numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
                elif attr.name in ("value_int", "value_float") or attr.name in ("value_ints", "value_floats"):
                    values[node.output[0]] = np.asarray(onnx.helper.get_attribute_value(attr))
    return values


def qoperator_error(node: onnx.NodeProto, where: str, also: str = "") -> UnsupportedOpError:
    """The error for an op that computes on quantized integers (QOperator format), ``where`` it is."""
    op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
    return UnsupportedOpError(
        f"op {op} (node {node.name or node.output[0]!r}) computes on quantized integers (QOperator format) {where}; "
        "camcore explains quantized models in QDQ format (QuantizeLinear/DequantizeLinear around float ops, with a "
        f"straight-through gradient): quantize with quant_format=QuantFormat.QDQ{also}"
    )


def check_supported(
    nodes: Sequence[onnx.NodeProto],
    on_path: Sequence[onnx.NodeProto],
    source: str,
    sink: str,
    quantized: frozenset[str] | set[str] = frozenset(),
) -> None:
    """Raise before emitting anything if an op on the gradient path has no rule, or computes
    on the ``quantized`` integers of a QuantizeLinear (QOperator format) instead of dequantizing them."""
    for node in on_path:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") and any(i in quantized for i in node.input):
            where = f"on the gradient path {describe_path(nodes, source, node, sink)}"
            raise qoperator_error(node, where, ", or choose a target layer after it")
        if node.domain in ("", "ai.onnx") and node.op_type in CONTROL_FLOW:
            raise UnsupportedOpError(
                f"control flow: op {node.op_type} (node {node.name or node.output[0]!r}) is on the gradient "
                f"path {describe_path(nodes, source, node, sink)}, and camcore cannot differentiate through "
                "If/Loop/Scan; choose a target layer after it (see `camcore layers MODEL`)"
            )
        if node.domain not in ("", "ai.onnx") or node.op_type not in RULES:
            op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
            raise UnsupportedOpError(
                f"no gradient rule for op {op} (node {node.name or node.output[0]!r}) on the "
                f"gradient path {describe_path(nodes, source, node, sink)}; choose a target "
                f"layer after it, or add a rule; supported ops: {', '.join(sorted(RULES))}"
            )


def build_gradients(
    graph: onnx.GraphProto,
    info: dict[str, TensorInfo],
    b: GraphBuilder,
    targets: Sequence[str],
    seeds: dict[str, str],
    options: dict[str, Any] | None = None,
    nodes: Sequence[onnx.NodeProto] | None = None,
    stop: frozenset[str] = frozenset(),
) -> dict[str, str | None]:
    """Emit the backward graph; returns the gradient tensor of each target (None if 0).

    ``seeds`` maps each differentiated tensor to the tensor holding its seed; the
    result is the gradient of ``sum(<seed, tensor>)`` with respect to each target.
    ``nodes`` defaults to the graph's (pass more to differentiate nodes not yet added,
    e.g. a gradient graph); ``stop`` tensors are treated as constants.
    """
    nodes = list(graph.node) if nodes is None else list(nodes)
    for target in targets:
        if _is_quantized(target, info):
            raise CamcoreError(
                f"layer {target!r} holds quantized integers, which carry no gradient of their own; explain "
                "the float tensor its QuantizeLinear reads, or the output of the DequantizeLinear after it"
            )
    on_path, fwd = path_nodes(nodes, targets, list(seeds), info, stop)
    quantized = {t for t in fwd if _is_quantized(t, info)}
    for target in targets:
        sub, _ = path_nodes(nodes, [target], list(seeds), info, stop)
        check_supported(nodes, sub, target, next(iter(seeds)), quantized)
    # constants, and the shape computations that static dims decide (Slice bounds from Shape)
    opts = {
        "constants": shape_values(graph, info, b.opset, constant_values(graph)),
        "constant_names": {i.name for i in graph.initializer}
        | {o for n in graph.node if n.op_type == "Constant" for o in n.output},
        **(options or {}),
    }
    contributions: dict[str, list[str]] = defaultdict(list)
    for out, seed in seeds.items():
        contributions[out].append(seed)

    def total(tensor: str) -> str | None:
        parts = contributions.get(tensor)
        if not parts:
            return None
        acc = parts[0]
        for p in parts[1:]:
            acc = b.Add(acc, p)
        contributions[tensor] = [acc]
        if tensor in info and not _is_quantized(tensor, info):
            b.elem_types[acc] = info[tensor].elem_type
        else:  # a quantized tensor's gradient is float, like its parts
            b.elem_types[acc] = b.elem_types.get(parts[0], onnx.TensorProto.FLOAT)
        return acc

    for node in reversed(on_path):
        grads_out = [total(o) for o in node.output]
        if all(g is None for g in grads_out):
            continue
        needs = [bool(i) and i in fwd and (_is_float(i, info) or i in quantized) for i in node.input]
        ctx = GradContext(node, grads_out, needs, b, info, opts)
        grads_in = list(RULES[node.op_type](ctx))
        for name, grad, need in zip(node.input, grads_in, needs):
            if grad is not None and need:
                contributions[name].append(grad)
    return {t: total(t) for t in targets}
