"""Facts and sub-models read off a graph for the methods: bias terms (FullGrad), the
classifier after global pooling (CAM), a model with extra outputs (gradient-free
methods) and the part of a model downstream of a layer (re-running from a layer)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from camcore.errors import CamcoreError
from camcore.graph.shapes import TensorInfo


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {i.name: i for i in model.graph.initializer}


def constant_value(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    """The value of ``name`` if it is an initializer or a Constant, also through Identity
    nodes: the TorchScript exporter stores equal initializers once and feeds every other
    user through an Identity (all BatchNorm scales of one width at their init value, 1)."""
    inits = _initializers(model)
    producers = {out: node for node in model.graph.node for out in node.output}
    while name not in inits:
        node = producers.get(name)
        if node is None or node.op_type not in ("Identity", "Constant"):
            return None
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
            return None
        name = node.input[0]
    return numpy_helper.to_array(inits[name])


def bias_terms(model: onnx.ModelProto, info: dict[str, TensorInfo]) -> list[tuple[str, np.ndarray]]:
    """(tensor, per-channel bias) of each spatial bias contribution, in graph order.

    A Conv with a bias contributes its output and its bias; a BatchNormalization (inference)
    contributes its output and its effective bias β − μ·γ/√(σ² + ε). Only tensors of
    rank >= 3 count (FullGrad makes spatial maps of them).
    """
    terms: list[tuple[str, np.ndarray]] = []
    for node in model.graph.node:
        out = node.output[0] if node.output else ""
        ti = info.get(out)
        if ti is None or ti.shape is None or len(ti.shape) < 3:
            continue
        if node.op_type == "Conv" and len(node.input) > 2 and node.input[2]:
            bias = constant_value(model, node.input[2])
            if bias is not None:
                terms.append((out, bias.astype(np.float32)))
        elif node.op_type == "BatchNormalization" and len(node.output) == 1:
            vals = [constant_value(model, name) for name in node.input[1:5]]
            if any(v is None for v in vals):
                continue
            scale, beta, mean, var = (v.astype(np.float64) for v in vals)  # type: ignore[union-attr]
            eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
            terms.append((out, (beta - mean * scale / np.sqrt(var + eps)).astype(np.float32)))
    return terms


_PASS = {"Flatten", "Reshape", "Squeeze", "Identity", "Dropout"}


def classifier_weights(model: onnx.ModelProto, info: dict[str, TensorInfo], layer: str) -> np.ndarray:
    """W (classes, C) of the linear classifier after the global pooling of ``layer``.

    Follows ``layer`` -> GlobalAveragePool | ReduceMean over the spatial axes ->
    Flatten/Reshape/Squeeze... -> Gemm or MatMul with constant weights.
    """
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)

    def only(tensor: str) -> onnx.NodeProto | None:
        users = consumers.get(tensor, [])
        return users[0] if len(users) == 1 else None

    hint = "CAM needs a global-average-pool -> linear head right after the target layer (Grad-CAM equals CAM there)"
    node = only(layer)
    if node is None or node.op_type not in ("GlobalAveragePool", "ReduceMean"):
        raise CamcoreError(f"layer {layer!r} is not followed by a single global average pool; {hint}")
    tensor = node.output[0]
    node = only(tensor)
    while node is not None and node.op_type in _PASS:
        tensor = node.output[0]
        node = only(tensor)
    if node is None or node.op_type not in ("Gemm", "MatMul") or node.input[0] != tensor:
        raise CamcoreError(f"no linear classifier after the pooling of {layer!r}; {hint}")
    w = constant_value(model, node.input[1])
    if w is None or w.ndim != 2:
        raise CamcoreError(f"the classifier weights {node.input[1]!r} are not a constant matrix; {hint}")
    if node.op_type == "MatMul":
        return w.T.astype(np.float32)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    w = w if attrs.get("transB", 0) else w.T
    return (float(attrs.get("alpha", 1.0)) * w).astype(np.float32)


def with_outputs(model: onnx.ModelProto, info: dict[str, TensorInfo], tensors: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also returns ``tensors`` (no gradients)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    have = {o.name for o in out.graph.output}
    for t in tensors:
        if t not in have:
            ti = info.get(t)
            shape = None if ti is None or ti.shape is None else [None] * len(ti.shape)
            out.graph.output.append(helper.make_tensor_value_info(t, ti.elem_type if ti else 1, shape))
            have.add(t)
    return out


def root_layers(model: onnx.ModelProto, layers: Sequence[str]) -> list[str]:
    """The ``layers`` that no other of them feeds (in their order): cut there, a model still
    computes the others from them.

    Example: for x -> Conv -> "a" -> Conv -> "b", ``root_layers(model, ["b", "a"]) == ["a"]``.
    """
    wanted = set(layers)
    fed: dict[str, set[str]] = {}  # tensor -> the layers it is computed from
    for node in model.graph.node:
        came = set().union(*(fed.get(i, set()) | ({i} & wanted) for i in node.input if i))
        for out in node.output:
            fed[out] = came
    return [k for k in layers if not fed.get(k, set()) - {k}]


def downstream_model(
    model: onnx.ModelProto, info: dict[str, TensorInfo], layer: str | Sequence[str], output: str
) -> tuple[onnx.ModelProto, list[str]]:
    """The nodes computing ``output`` from ``layer`` (now a graph input), and the original
    inputs still needed (paths that bypass the layer). The nodes before it never run.

    Several layers: the model is cut at their :func:`root_layers` (its first inputs, in that
    order); the other layers are computed in it from them, so the gradients of the cut reach
    every layer along every path."""
    graph = model.graph
    roots = [layer] if isinstance(layer, str) else root_layers(model, layer)
    cut_at = set(roots)
    needed = {output}
    keep: list[onnx.NodeProto] = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            if cut_at & set(node.output):
                continue
            keep.append(node)
            needed.update(i for i in node.input if i and i not in cut_at)
    keep.reverse()
    inits = _initializers(model)
    cut = onnx.ModelProto()
    cut.CopyFrom(model)
    del cut.graph.node[:]
    cut.graph.node.extend(keep)
    del cut.graph.initializer[:]
    cut.graph.initializer.extend(v for k, v in inits.items() if k in needed)
    originals = [i for i in graph.input if i.name in needed and i.name not in inits]
    layer_vis = []
    for root in roots:
        ti = info.get(root)
        layer_vis.append(helper.make_tensor_value_info(
            root, ti.elem_type if ti else 1, None if ti is None or ti.shape is None else [None, *ti.shape[1:]]
        ))  # fmt: skip
    del cut.graph.input[:]
    cut.graph.input.extend([*layer_vis, *originals])
    del cut.graph.output[:]
    cut.graph.output.extend(o for o in graph.output if o.name == output)
    del cut.graph.value_info[:]
    return cut, [i.name for i in originals]
