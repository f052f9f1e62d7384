"""Target layers: resolving names, listing candidates and picking a default."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

import onnx

from camcore.errors import CamcoreError, UnknownLayerError
from camcore.graph.autodiff import backward_reach, forward_reach
from camcore.graph.builder import FLOAT_TYPES
from camcore.graph.shapes import Dim, TensorInfo


@dataclass(frozen=True)
class Layer:
    """A tensor that can be explained: its name, producing node and shape."""

    tensor: str
    node: str
    op_type: str
    shape: tuple[Dim, ...] | None

    @property
    def has_spatial_extent(self) -> bool:
        """A 4-D (N, C, H, W) map with more than one spatial cell (symbolic dims count)."""
        if self.shape is None or len(self.shape) != 4:
            return False
        h, w = self.shape[2], self.shape[3]
        known = [d for d in (h, w) if isinstance(d, int)]
        return not (len(known) == 2 and known[0] * known[1] <= 1)


def resolve_layers(model: onnx.ModelProto, names: Sequence[str]) -> list[str]:
    """Tensor names for ``names``; node names map to the node's first output."""
    graph = model.graph
    weights = {i.name for i in graph.initializer}
    tensors = {o for n in graph.node for o in n.output if o} | {i.name for i in graph.input if i.name not in weights}
    by_node = {n.name: n.output[0] for n in graph.node if n.name and n.output}
    resolved: list[str] = []
    for name in names:
        if name in weights and name not in tensors:
            users = [n.name or n.op_type for n in graph.node if name in n.input][:1]
            where = f" of node {users[0]!r}" if users else ""
            raise UnknownLayerError(
                f"layer {name!r} is a weight (an initializer{where}), not an activation: pick a node's output "
                "(`camcore layers MODEL` lists them)"
            )
        if name in tensors:
            resolved.append(name)
        elif name in by_node:
            resolved.append(by_node[name])
        else:
            pool = sorted(tensors | set(by_node))
            close = difflib.get_close_matches(name, pool, n=5, cutoff=0.4)
            hint = f"closest: {', '.join(close)}" if close else "run `camcore layers MODEL` to list them"
            raise UnknownLayerError(f"unknown layer {name!r}: no tensor or node has that name; {hint}")
    return resolved


def candidate_layers(model: onnx.ModelProto, info: dict[str, TensorInfo], output: str) -> list[Layer]:
    """Float node outputs of rank >= 3 between the inputs and ``output``, in graph order."""
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in initializers]
    nodes = list(graph.node)
    fwd = forward_reach(nodes, inputs, info)
    bwd = backward_reach(nodes, [output])
    layers: list[Layer] = []
    for node in nodes:
        for out in node.output:
            ti = info.get(out)
            if not out or out not in fwd or out not in bwd or ti is None:
                continue
            if ti.elem_type in FLOAT_TYPES and ti.shape is not None and len(ti.shape) >= 3:
                layers.append(Layer(out, node.name, node.op_type, ti.shape))
    return layers


def default_layer(candidates: Sequence[Layer]) -> Layer | None:
    """The last activation on the path to the output that still has spatial extent."""
    spatial = [c for c in candidates if c.has_spatial_extent]
    return spatial[-1] if spatial else None


__all__ = [
    "Layer",
    "candidate_layers",
    "default_layer",
    "explained_output",
    "resolve_layers",
    "resolve_target_layers",
]


def explained_output(model: onnx.ModelProto, output: str | None) -> str:
    """The output to explain: ``output``, or the model's first.

    Raises:
        CamcoreError: ``output`` is not one of the model's outputs.
    """
    outputs = [o.name for o in model.graph.output]
    if output is None:
        return outputs[0]
    if output not in outputs:
        raise CamcoreError(f"unknown output {output!r}; the model's outputs are {outputs}")
    return output


def resolve_target_layers(
    model: onnx.ModelProto, info: dict[str, TensorInfo], output: str, target_layers: Sequence[str] | str | None
) -> list[str]:
    """The target tensors: ``target_layers`` as tensor or node names, or the default layer when None.

    Example:
        >>> resolve_target_layers(model, info, "logits", None)  # doctest: +SKIP
        ['/layer4/layer4.1/relu_1/Relu_output_0']
    """
    if target_layers is None:
        layer = default_layer(candidate_layers(model, info, output))
        if layer is None:
            raise CamcoreError(
                "no default target layer: no 4-D activation with spatial extent leads to "
                f"{output!r}; pass target_layers (see `camcore layers MODEL`)"
            )
        return [layer.tensor]
    names = [target_layers] if isinstance(target_layers, str) else list(target_layers)
    if not names:
        raise CamcoreError("target_layers is empty: pass at least one layer, or None for the default")
    return resolve_layers(model, names)
