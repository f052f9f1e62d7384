"""Target layers: resolving names, listing candidates and picking a default."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import onnx

from camcore.errors import CamcoreError, UnknownLayerError
from camcore.graph.autodiff import backward_reach, forward_reach
from camcore.graph.builder import FLOAT_TYPES
from camcore.graph.layouts import (
    LayerKind,
    class_token_readers,
    constant_tensors,
    image_input,
    image_layout,
    layer_layouts,
)
from camcore.graph.qdq import hidden_layers, refuse_qoperator
from camcore.graph.shapes import Dim, TensorInfo
from camcore.maps import token_grid

#: how far a layer grid's strides along height and width may differ (a text model's collapsed
#: height, a grid of one row, is allowed besides)
STRIDE_RATIO_TOLERANCE = 2.5


@dataclass(frozen=True)
class Layer:
    """A tensor that can be explained: its name, producing node, shape and layout (where its
    channels are, as the graph shows it; None where it shows nothing)."""

    tensor: str
    node: str
    op_type: str
    shape: tuple[Dim, ...] | None
    layout: LayerKind | None = None
    #: the output reads only its leading (class) tokens: the patch tokens get no gradient
    class_token_only: bool = False
    #: a learned op (a convolution or product with weights) lies between the layer and the output
    feeds_weights: bool = True
    #: only read split into attention heads (a query, key or value projection)
    split_into_heads: bool = False

    @property
    def channels(self) -> Dim:
        """The channel count (None when the layout or the dim is unknown)."""
        if self.shape is None or self.layout is None:
            return None
        return self.shape[1] if self.layout == "channels_first" else self.shape[-1]

    def grid(self, input_hw: tuple[int, int] | None = None) -> tuple[Dim, Dim] | None:
        """The (height, width) grid of the layer's map; None when its layout is unknown or it
        is not laid out as an image (tokens that factor as no grid).

        Example:
            >>> Layer("t", "n", "Relu", ("N", 7, 7, 64), "channels_last").grid()
            (7, 7)
        """
        s, kind = self.shape, self.layout
        if s is None or kind is None:
            return None
        if kind == "tokens" and len(s) == 3:
            found = token_grid(s[1], input_hw) if isinstance(s[1], int) else None
            return None if found is None else found[1:]
        if kind == "channels_last" and len(s) == 4:
            return s[1], s[2]
        if kind == "channels_first" and len(s) in (3, 4):
            return (1, s[2]) if len(s) == 3 else (s[2], s[3])
        return None

    def is_image_grid(self, input_hw: tuple[int, int] | None = None) -> bool:
        """Whether the layer's map can be a downsampled picture of the input: a known layout,
        more than one cell and more than one channel, patch tokens that reach the output (not
        a class token alone, :func:`~camcore.graph.layouts.class_token_readers`) other than
        split into attention heads (a query, key or value projection: the block's input is the
        layer pytorch-grad-cam recommends), no side
        longer than the input's, and
        strides along height and width within :data:`STRIDE_RATIO_TOLERANCE` of each other
        (or a single row, the width at least halved). Dims that are not known pass.

        Example:
            >>> Layer("dfl", "n", "Conv", (1, 1, 4, 8400), "channels_first").is_image_grid((640, 640))
            False
        """
        grid = self.grid(input_hw)
        if grid is None or self.channels == 1 or self.class_token_only or self.split_into_heads:
            return False
        h, w = grid
        if isinstance(h, int) and isinstance(w, int) and h * w <= 1:
            return False
        if input_hw is None or not (isinstance(h, int) and isinstance(w, int)):
            return True
        if h > input_hw[0] or w > input_hw[1]:
            return False
        if h == 1:  # a text line: the width downsampled like an image's, not a token sequence
            return input_hw[1] / w >= 2 if input_hw[0] > 1 else True
        strides = (input_hw[0] / h, input_hw[1] / w)
        return max(strides) / min(strides) <= STRIDE_RATIO_TOLERANCE


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
    """Float node outputs of rank >= 3 between the inputs and ``output``, in graph order, with
    the layout the graph shows for each (:func:`~camcore.graph.layouts.layer_layouts`)."""
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in initializers]
    nodes = list(graph.node)
    fwd = forward_reach(nodes, inputs, info)
    bwd = backward_reach(nodes, [output])
    kinds = layer_layouts(model, info)
    heads = class_token_readers(model, info, bwd)
    weighted = feeds_weights(model, output)
    projections = _split_into_heads(nodes, kinds, bwd)
    hidden = hidden_layers(graph, info)  # one layer per Q/DQ pair of a quantized model
    layers: list[Layer] = []
    for node in nodes:
        for out in node.output:
            ti = info.get(out)
            if not out or out not in fwd or out not in bwd or ti is None or out in hidden:
                continue
            if ti.elem_type in FLOAT_TYPES and ti.shape is not None and len(ti.shape) >= 3:
                kind = kinds.get(out)
                layers.append(Layer(out, node.name, node.op_type, ti.shape, kind, kind == "tokens" and out in heads,
                                    out in weighted, kind == "tokens" and out in projections))  # fmt: skip
    if not layers:
        refuse_qoperator(graph, info, inputs, output)
    return layers


#: ops that split a projection into attention heads (the channels into heads x head size)
_HEAD_SPLITTING = frozenset({"Reshape", "Unsqueeze"})
#: what may come between a projection and that split (a bias, a scale, taking q, k and v apart)
_BIAS_LIKE = frozenset({"Add", "Mul", "Sub", "Div", "Identity", "Cast", "Split", "Slice", "Gather"})


def _split_into_heads(nodes: Sequence[onnx.NodeProto], kinds: Mapping[str, LayerKind], on_path: set[str]) -> set[str]:
    """Tensors that the graph reads (on the way to the output) only through reshapes whose
    results have no layout: a fused qkv, or a q, k or v projection, split into heads."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found: set[str] = set()

    def splits(user: onnx.NodeProto, tensor: str) -> bool:
        outs = [o for o in user.output if o]
        if user.op_type in _HEAD_SPLITTING:
            return user.input[0] == tensor and all(kinds.get(o) is None for o in outs)
        return user.op_type in _BIAS_LIKE and all(o in found for o in outs)  # the bias, then the split

    for node in reversed(nodes):  # consumers first
        for tensor in node.output:
            users = [u for u in consumers.get(tensor, []) if any(o in on_path for o in u.output)]
            if users and all(splits(u, tensor) for u in users):
                found.add(tensor)
    return found


#: ops that apply learned weights when one of their operands is a constant
_WEIGHTED = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum", "QLinearConv", "QLinearMatMul",
                       "ConvInteger", "MatMulInteger"})  # fmt: skip


#: ops that only rearrange a tensor, through which a decoder's Softmax is traced
_REARRANGING = frozenset({"Reshape", "Transpose", "Identity", "Squeeze", "Unsqueeze", "Flatten"})


def _learned(node: onnx.NodeProto, constants: set[str], producers: Mapping[str, onnx.NodeProto]) -> bool:
    """A convolution or product with a constant weight, except a decoder that takes the
    expectation of a Softmax (YOLOv8's DFL: a fixed 0..15 convolution over bin probabilities)."""
    if node.op_type not in _WEIGHTED or not any(i in constants for i in node.input[:2]):
        return False
    tensor = node.input[0]
    while (producer := producers.get(tensor)) is not None and producer.op_type in _REARRANGING:
        tensor = producer.input[0]
    return producer is None or producer.op_type != "Softmax"


def feeds_weights(model: onnx.ModelProto, output: str) -> set[str]:
    """The tensors from which ``output`` is reached through at least one op with learned weights
    (a convolution, or a product with a constant). The rest only reach it through pooling,
    resizing, reshaping and activations: a segmentation model's per-class convolution output,
    a detector's final head convolutions, the output itself.

    Example:
        >>> "/classifier/Conv_output_0" in feeds_weights(segmenter, "out")  # doctest: +SKIP
        False
    """
    constants = constant_tensors(model)
    on_path = backward_reach(list(model.graph.node), [output])
    producers = {o: n for n in model.graph.node for o in n.output}
    found: set[str] = set()
    for node in reversed(model.graph.node):
        if not any(o in on_path for o in node.output):
            continue
        if _learned(node, constants, producers) or any(o in found for o in node.output):
            found.update(i for i in node.input if i and i not in constants)
    return found


def default_layer(
    candidates: Sequence[Layer], input_hw: tuple[int, int] | None = None, output: str | None = None
) -> Layer | None:
    """The last activation on the path to the output that is an image grid
    (:meth:`Layer.is_image_grid`) and reaches the output through learned weights
    (:func:`feeds_weights`: not a segmenter's per-class map or a detector's last head
    convolutions); the output itself is left out (nothing would be differentiated).

    Example:
        >>> default_layer(candidate_layers(model, info, "logits"), (224, 224), "logits")  # doctest: +SKIP
        Layer(tensor='/layer4/layer4.1/relu_1/Relu_output_0', ...)
    """
    grids = [c for c in candidates if c.tensor != output and c.feeds_weights and c.is_image_grid(input_hw)]
    return grids[-1] if grids else None


def head_inputs(model: onnx.ModelProto, output: str, grids: Mapping[str, tuple[Dim, Dim]]) -> list[str]:
    """The features a multi-head model's heads read (a detector's neck outputs, one per scale),
    in graph order; empty when the output has a single head (a classifier's or segmenter's).

    The heads end in the *final* learned ops: those after which no learned op leads to the
    output (YOLOv8: the box and class convolutions of each scale; its DFL decoder is no learned
    op). For each final op, the head input is the latest of ``grids`` (tensor -> grid size) that
    it shares as an ancestor with another final op it neither reads nor feeds: where its branch
    leaves the trunk (YOLOv8's box and class branches share their scale's neck output). Where
    the branch changes scale after that (YOLOv5's last scale, one convolution per scale), it is
    the latest grid before the final op at the final op's own scale.

    Example:
        >>> head_inputs(yolov8, "output0", grids)  # doctest: +SKIP
        ['/model.15/cv2/act/Mul_output_0', '/model.18/cv2/act/Mul_output_0', '/model.21/cv2/act/Mul_output_0']
    """
    nodes = list(model.graph.node)
    constants = constant_tensors(model)
    on_path = backward_reach(nodes, [output])
    after = feeds_weights(model, output)
    producers = {o: n for n in nodes for o in n.output}
    last_learned = [n for n in nodes if n.output[0] in on_path and n.output[0] not in after]
    finals = [n for n in last_learned if _learned(n, constants, producers)]
    if len(finals) < 2:
        return []
    order = {t: k for k, n in enumerate(nodes) for t in n.output}
    wanted = set(grids)
    sizes = dict(grids)
    ancestors = [backward_reach(nodes, [f.output[0]]) & (wanted | {f.output[0]}) for f in finals]
    found: set[str] = set()
    for i, final in enumerate(finals):
        best: str | None = None
        for j, other in enumerate(finals):
            if i == j or final.output[0] in ancestors[j] or other.output[0] in ancestors[i]:
                continue
            shared = (ancestors[i] & ancestors[j]) - {final.output[0], other.output[0]}
            latest = max(shared, key=lambda t: order.get(t, -1), default=None)
            if latest is not None and (best is None or order[latest] > order[best]):
                best = latest
        if best is None:
            continue
        scale = sizes.get(final.input[0])
        if scale is not None and sizes.get(best) != scale:  # the branch went on to another scale
            same = [t for t in ancestors[i] - {final.output[0]} if sizes.get(t) == scale and order[t] > order[best]]
            best = max(same, key=lambda t: order[t], default=best)
        found.add(best)
    return sorted(found, key=lambda t: order.get(t, -1))


def default_layers(model: onnx.ModelProto, info: dict[str, TensorInfo], output: str) -> list[Layer]:
    """The default target layers for ``output``: a multi-head model's head inputs
    (:func:`head_inputs`, one per scale, their maps averaged), else :func:`default_layer`."""
    candidates = candidate_layers(model, info, output)
    hw = input_size(model, info)
    grids = [c for c in candidates if c.tensor != output and c.feeds_weights and c.is_image_grid(hw)]
    heads = set(head_inputs(model, output, {c.tensor: g for c in grids if (g := c.grid(hw)) is not None}))
    if heads:
        return [c for c in grids if c.tensor in heads]
    layer = default_layer(candidates, hw, output)
    return [] if layer is None else [layer]


def input_size(model: onnx.ModelProto, info: dict[str, TensorInfo]) -> tuple[int, int] | None:
    """The image input's static (height, width) in its own layout; None when not both are known."""
    first = image_input(model)
    ti = info.get(first) if first else None
    if first is None or ti is None or ti.shape is None or len(ti.shape) != 4:
        return None
    h, w = ti.shape[1:3] if image_layout(model, info, first) == "NHWC" else ti.shape[2:4]
    return (h, w) if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0 else None


__all__ = [
    "Layer",
    "candidate_layers",
    "default_layer",
    "default_layers",
    "explained_output",
    "feeds_weights",
    "head_inputs",
    "input_size",
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
        layers = default_layers(model, info, output)
        if not layers:
            raise CamcoreError(
                "no default target layer: no activation laid out as an image grid (channels on a "
                f"known axis, more than one cell) leads to {output!r}; pass target_layers "
                "(see `camcore layers MODEL`)"
            )
        return [layer.tensor for layer in layers]
    names = [target_layers] if isinstance(target_layers, str) else list(target_layers)
    if not names:
        raise CamcoreError("target_layers is empty: pass at least one layer, or None for the default")
    return resolve_layers(model, names)
