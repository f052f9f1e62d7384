"""Layouts read off the graph: which axes of an image input and of each layer hold the channels.

**Inputs** (:func:`image_layout`). A 4-D image input is NCHW unless the graph shows otherwise: the input reaches a
``Transpose`` with ``perm=[0, 3, 1, 2]`` (NHWC to NCHW, as tf2onnx and jax2onnx emit it)
before any ``Conv``, through elementwise preprocessing only, or a ``Conv`` reads the input
after nothing but elementwise ops (NCHW). With no such evidence the static shape decides:
a last axis of 1, 3 or 4 after two axes larger than 4 means NHWC.

**Layers** (:func:`layer_layouts`). Ops that read channels on a known axis (convolutions,
pooling and channel normalisation on axis 1; weight ``MatMul`` and ``LayerNormalization`` on
the last) fix it, and the graph carries it to the tensors around them. Nothing is assumed
from a tensor's rank alone.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable
from typing import Literal

import onnx

from camcore.graph.shapes import Dim, TensorInfo

__all__ = ["LayerKind", "class_token_readers", "constant_tensors", "image_input", "image_layout", "layer_layouts"]

#: ops that keep the axes of their first input as they are (preprocessing before the first conv)
_ELEMENTWISE = frozenset({"Cast", "Sub", "Div", "Mul", "Add", "Identity", "Clip", "Relu", "Sigmoid", "Tanh", "Neg",
                          "Abs", "Sqrt", "Pow", "Max", "Min", "Exp", "Log", "Erf", "LeakyRelu", "HardSigmoid",
                          "HardSwish", "Elu", "Softplus", "QuantizeLinear", "DequantizeLinear"})  # fmt: skip
#: ops that read their input as (N, C, *spatial)
_CHANNELS_FIRST = frozenset({"Conv", "ConvInteger", "QLinearConv", "ConvTranspose", "MaxPool", "AveragePool",
                             "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "BatchNormalization",
                             "InstanceNormalization", "LRN", "DepthToSpace", "SpaceToDepth"})  # fmt: skip
_CHANNELS = (1, 3, 4)


def image_input(model: onnx.ModelProto) -> str | None:
    """The model's first input that is not an initializer: the image input (None: it has none)."""
    inits = {i.name for i in model.graph.initializer}
    return next((i.name for i in model.graph.input if i.name not in inits), None)


def image_layout(model: onnx.ModelProto, info: dict[str, TensorInfo], name: str) -> Literal["NCHW", "NHWC"]:
    """``"NHWC"`` or ``"NCHW"`` for the input ``name`` (``"NCHW"`` when it is not 4-D).

    Example:
        >>> image_layout(keras_model, info, "input_1")  # doctest: +SKIP
        'NHWC'
    """
    ti = info.get(name)
    if ti is None or ti.shape is None or len(ti.shape) != 4:
        return "NCHW"
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in model.graph.node:
        for i in node.input:
            consumers[i].append(node)
    seen, frontier = {name}, [name]
    while frontier:
        tensor = frontier.pop()
        for node in consumers.get(tensor, []):
            if node.op_type == "Transpose":
                perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
                if perm == [0, 3, 1, 2]:
                    return "NHWC"
                if perm == [0, 1, 2, 3]:
                    frontier += [o for o in node.output if o not in seen]
                    seen.update(node.output)
                continue
            if node.op_type in _CHANNELS_FIRST:
                return "NCHW"
            if node.op_type in _ELEMENTWISE:
                frontier += [o for o in node.output if o and o not in seen]
                seen.update(node.output)
    _, c_first, h, c_last = ti.shape
    spatial_second = isinstance(c_first, int) and c_first > max(_CHANNELS) and isinstance(h, int) and h > max(_CHANNELS)
    return "NHWC" if isinstance(c_last, int) and c_last in _CHANNELS and spatial_second else "NCHW"


# ---------------------------------------------------------------------- layer layouts
#: where a layer tensor keeps its channels: (N, C, *spatial), (N, *spatial, C) at rank 4, or
#: (N, T, C) transformer tokens at rank 3
LayerKind = Literal["channels_first", "channels_last", "tokens"]
#: where axis k of one tensor lands in a linked one (None: nowhere, the axis was merged or split)
AxisMap = Callable[[int], "int | None"]

#: ops whose output keeps the axes of their same-rank inputs (the channels stay where they are)
_SAME_AXES = _ELEMENTWISE | frozenset({"Dropout", "Pad", "Resize", "Upsample", "Slice", "Concat", "Split", "Where",
                                       "Mish", "Gelu", "PRelu", "Selu", "Celu", "ThresholdedRelu", "Softsign",
                                       "Reciprocal", "Floor", "Ceil", "Round"})  # fmt: skip
#: ops that only move data and keep a constant constant (weights reach MatMul through them)
_CONSTANT_KEEPING = frozenset({"Identity", "Cast", "Transpose", "DequantizeLinear", "Reshape", "Unsqueeze",
                               "Squeeze", "Flatten"})  # fmt: skip


def layer_layouts(model: onnx.ModelProto, info: dict[str, TensorInfo]) -> dict[str, LayerKind]:
    """The layout of every float tensor the graph gives evidence for; tensors left out have none
    (attention heads, flattened features, anything whose channel axis the graph does not show).

    Evidence fixes a tensor's channel axis: a convolution, pooling or normalisation over channels
    reads and writes axis 1; a ``MatMul`` by a weight matrix and a ``LayerNormalization`` over the
    last axis read and write the last one. The axis is carried to the tensors around them,
    forwards and backwards, through ops that keep axes (elementwise ops, ``Concat``, ``Resize``,
    ...), ``Transpose`` (through its permutation) and ``Reshape`` (through the dims it keeps
    before and after the ones it merges or splits); the nearest evidence wins. A tensor whose
    first axis cannot be the input's batch is left out ((L, N, C) sequences, attention products).

    Example:
        >>> layer_layouts(keras_model, info)["model/conv_1/Relu:0"]  # doctest: +SKIP
        'channels_last'
    """
    nodes = list(model.graph.node)
    constants = constant_tensors(model)
    rank = {name: len(ti.shape) for name, ti in info.items() if ti.shape is not None}
    axis: dict[str, int] = {}
    frontier: deque[str] = deque()

    def seed(tensor: str, channel_axis: int) -> None:
        r = rank.get(tensor)
        if tensor and r is not None and r >= 3 and tensor not in axis and tensor not in constants:
            axis[tensor] = channel_axis % r
            frontier.append(tensor)

    edges: dict[str, list[tuple[str, AxisMap]]] = defaultdict(list)
    for node in nodes:
        op, ins, outs = node.op_type, list(node.input), [o for o in node.output if o]
        if op in _CHANNELS_FIRST and outs:
            seed(ins[0], 1)
            seed(outs[0], 1)
        elif op == "MatMul" and len(ins) == 2 and (ins[1] in constants) != (ins[0] in constants):
            if ins[1] in constants and rank.get(ins[1]) == 2:
                seed(ins[0], -1)
                seed(outs[0], -1)
            elif ins[0] in constants and rank.get(ins[0]) == 2:
                seed(ins[1], -2)
                seed(outs[0], -2)
        elif op == "LayerNormalization" and _attr_int(node, "axis", -1) in (-1, (rank.get(ins[0], 0) - 1)):
            seed(ins[0], -1)
            seed(outs[0], -1)
        for a, b, forward in _axis_links(node, info, constants):
            edges[a].append((b, forward))
            edges[b].append((a, _inverse(forward, rank.get(a, 0))))
    while frontier:  # breadth first: the nearest evidence fixes a tensor
        tensor = frontier.popleft()
        for other, carry in edges.get(tensor, []):
            if other in axis or other in constants:
                continue
            moved = carry(axis[tensor])
            if moved is not None:
                axis[other] = moved
                frontier.append(other)
    batch = _input_batch(model, info)
    kinds: dict[str, LayerKind] = {}
    for tensor, channel in axis.items():
        shape = info[tensor].shape
        assert shape is not None
        if not _batch_first(shape[0], batch):
            continue
        if channel == 1:
            kinds[tensor] = "channels_first"
        elif channel == len(shape) - 1:
            kinds[tensor] = "tokens" if len(shape) == 3 else "channels_last"
    return kinds


def _batch_first(first: Dim, batch: Dim) -> bool:
    """Whether a tensor whose first dim is ``first`` can have the input's batch there: not when
    it is a fixed size other than a fixed batch, or a fixed size above 1 where the batch is
    dynamic. Dims nobody knows (shape inference's own symbols) pass."""
    if not isinstance(first, int):
        return True
    if isinstance(batch, int):
        return first == batch
    return first == 1


def _attr_int(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), default)


def constant_tensors(model: onnx.ModelProto) -> set[str]:
    """Initializers, Constant outputs and what data-moving ops make of them (dequantised weights)."""
    constants = {i.name for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" or (
            node.op_type in _CONSTANT_KEEPING and all(i in constants for i in node.input if i)
        ):
            constants.update(o for o in node.output if o)
    return constants


def _input_batch(model: onnx.ModelProto, info: dict[str, TensorInfo]) -> int | str | None:
    first = image_input(model)
    ti = info.get(first) if first else None
    return ti.shape[0] if ti is not None and ti.shape else None


def _axis_links(
    node: onnx.NodeProto, info: dict[str, TensorInfo], constants: set[str]
) -> list[tuple[str, str, AxisMap]]:
    """(input, output, where an input axis lands in the output) for the pairs a node links."""
    outs = [o for o in node.output if o]
    if not outs or not node.input:
        return []
    out = outs[0]

    def shape(name: str) -> tuple[Dim, ...] | None:
        ti = info.get(name)
        return None if ti is None else ti.shape

    rank = {name: len(s) for name in (*node.input, *outs) if name and (s := shape(name)) is not None}
    if node.op_type == "Transpose" and node.input[0] not in constants:
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        r = rank.get(out)
        if r is None:
            return []
        return [(node.input[0], out, _permuted(perm or list(reversed(range(r)))))]
    if node.op_type in ("Reshape", "Flatten", "Squeeze", "Unsqueeze"):
        a, b = shape(node.input[0]), shape(out)
        if node.input[0] in constants or a is None or b is None:
            return []
        return [(node.input[0], out, _kept_axis_map(a, b))]
    if node.op_type in _SAME_AXES:
        r = rank.get(out)
        pairs = [(i, o) for i in node.input if i and i not in constants and rank.get(i) == r for o in outs]
        return [(i, o, _same) for i, o in pairs]
    return []


def _permuted(perm: list[int]) -> AxisMap:
    """Where an input axis lands through ``Transpose(perm)``: output axis i is input axis perm[i]."""

    def carry(k: int) -> int | None:
        return perm.index(k) if k in perm else None

    return carry


def _same(k: int) -> int | None:
    return k


def _kept_axis_map(a: tuple[Dim, ...], b: tuple[Dim, ...]) -> AxisMap:
    """Where axis k of shape ``a`` lands in shape ``b`` across a reshape: the leading dims both
    shapes share keep their place, the trailing ones theirs; merged or split dims have none."""

    def carry(k: int) -> int | None:
        lead = 0
        while lead < min(len(a), len(b)) and a[lead] is not None and a[lead] == b[lead]:
            lead += 1
        if k < lead:
            return k
        tail = 0
        while tail < min(len(a), len(b)) - lead and a[-1 - tail] is not None and a[-1 - tail] == b[-1 - tail]:
            tail += 1
        if k >= len(a) - tail:
            return len(b) - (len(a) - k)
        return None

    return carry


def _inverse(carry: AxisMap, source_rank: int) -> AxisMap:
    """The map back: the axis of the source that ``carry`` sends to k."""

    def back(k: int) -> int | None:
        return next((j for j in range(source_rank) if carry(j) == k), None)

    return back


# ---------------------------------------------------------------------- class-token heads
#: ops that work on each token alone, so that what reads only some tokens of their output
#: reads only the same tokens of their input
_PER_TOKEN = (_ELEMENTWISE | frozenset({"Dropout", "Mish", "Gelu", "PRelu", "Selu", "Celu", "Softsign",
                                       "Reciprocal", "Where"})) - {"Concat"}  # fmt: skip
#: the most leading tokens a classifier head reads (class, distillation and register tokens)
_MAX_HEAD_TOKENS = 17


def class_token_readers(
    model: onnx.ModelProto, info: dict[str, TensorInfo], on_path: set[str] | None = None
) -> set[str]:
    """The (N, T, ·) tensors of which the output reads only leading (class, distillation,
    register) rows: a head that takes ``x[:, 0]`` after row-wise ops (``LayerNormalization``,
    elementwise ops, ``Softmax`` over the last axis, and a ``MatMul`` that the tensor enters
    on the left: queries and attention weights). Their patch tokens get no gradient, so they
    make no map; the grid is at the last tensor before the tokens mix (the last attention's
    keys and values: its input).

    ``on_path``: the tensors that lead to the explained output (consumers off it are ignored).

    Example:
        >>> "/encoder/ln/LayerNormalization_output_0" in class_token_readers(vit, info)  # doctest: +SKIP
        True
    """
    from camcore.graph.parts import constant_value

    nodes = list(model.graph.node)
    rank = {name: len(ti.shape) for name, ti in info.items() if ti.shape is not None}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in nodes:
        for name in node.input:
            consumers[name].append(node)

    def leads_on(node: onnx.NodeProto) -> bool:
        return on_path is None or any(o in on_path for o in node.output)

    def reads_head_tokens(node: onnx.NodeProto, tensor: str) -> bool:
        if node.input[0] != tensor:
            return False
        if node.op_type == "Gather" and _attr_int(node, "axis", 0) == 1:
            index = constant_value(model, node.input[1])
            return index is not None and index.size > 0 and 0 <= int(index.max()) < _MAX_HEAD_TOKENS
        if node.op_type == "Slice" and len(node.input) >= 3:
            starts, ends = (constant_value(model, n) for n in node.input[1:3])
            axes = constant_value(model, node.input[3]) if len(node.input) > 3 and node.input[3] else None
            if starts is None or ends is None:
                return False
            axes_list = list(range(len(starts))) if axes is None else [int(a) for a in axes.ravel()]
            if 1 not in axes_list:
                return False
            k = axes_list.index(1)
            return int(starts.ravel()[k]) >= 0 and int(ends.ravel()[k]) <= _MAX_HEAD_TOKENS
        return False

    def per_token(node: onnx.NodeProto, tensor: str) -> bool:
        if node.op_type in _PER_TOKEN:
            return True
        if node.op_type == "LayerNormalization":
            return node.input[0] == tensor and _attr_int(node, "axis", -1) == -1
        if node.op_type == "MatMul":  # row i of A @ B reads row i of A only (B: weights, or keys)
            return node.input[0] == tensor
        if node.op_type == "Softmax":
            return _attr_int(node, "axis", -1) in (-1, 2)
        if node.op_type in ("ReduceMean", "ReduceSum"):
            axes = next((list(a.ints) for a in node.attribute if a.name == "axes"), None)
            if axes is None and len(node.input) > 1 and node.input[1]:
                value = constant_value(model, node.input[1])
                axes = None if value is None else [int(a) for a in value.ravel()]
            return axes == [-1] and _attr_int(node, "keepdims", 1) == 1
        return False

    readers: set[str] = set()

    def head_only(user: onnx.NodeProto, tensor: str) -> bool:
        """``user`` passes on only head tokens of ``tensor``."""
        if reads_head_tokens(user, tensor):
            return True
        outs = [o for o in user.output if o and (on_path is None or o in on_path)]
        return per_token(user, tensor) and all(o in readers for o in outs)

    for node in reversed(nodes):  # a tensor's consumers come after it: they are decided first
        for tensor in node.output:
            if rank.get(tensor) != 3:
                continue
            users = [c for c in consumers.get(tensor, []) if leads_on(c)]
            if users and all(head_only(c, tensor) for c in users):
                readers.add(tensor)
    return readers
