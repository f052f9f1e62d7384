"""The self-contained CAM model: the prediction and the heat map in one ONNX graph.

:func:`export_cam_model` appends to a model the gradient graph of :func:`camcore.graph.augment`
and, in standard ops at the model's opset (>= 11: ``Resize``), the map assembly of
:mod:`camcore.maps`, so that any ONNX runtime (onnxruntime, OpenVINO, the reference evaluator,
...) returns what ``camcore.GradCAM(model, layers)(x, targets)`` returns, with no Python.

The exported graph:

* **inputs**: the model's own; ``class`` int64 (N,) or (1,) for every image: the class
  explained per image, -1 for its top-1 class (chosen in the graph); a class past the last one is
  refused by onnxruntime (``Gather`` out of bounds) and gives an all-zero map on OpenVINO. With
  ``class_input="optional"`` (the default) ``class`` has the ONNX default [-1] (an initializer
  of the same name, IR >= 4): onnxruntime and the reference evaluator use it when the input is
  not fed (onnxruntime lists it under ``get_overridable_initializers``, not ``get_inputs``);
  OpenVINO's ONNX frontend folds such an input into the constant, so there the model always
  explains the top-1 class. ``class_input="required"`` makes ``class`` a plain input that
  every runtime can feed (feed ``[-1]`` for the top-1 of every image). Methods without
  gradients (FEM) take no ``class``. With ``overlay``: ``image`` uint8 (N, H', W', 3) RGB.
* **outputs**: the model's own, unchanged (the forward nodes are untouched); ``cam`` float32
  (N, H, W) in [0, 1] at the image input's spatial size; with ``overlay``: ``overlay`` uint8
  (N, H', W', 3), the colour-mapped ``cam`` (resized to H' x W') blended on ``image``.

``cam`` follows :func:`camcore.maps.assemble`: each layer tensor is arranged from its layout
as the graph shows it (:func:`~camcore.graph.layouts.layer_layouts`: NCHW, NHWC, (N, C, L)
rows, transformer tokens laid on their grid), widened to float32 (float16 models), reduced to
the layer map M by the method's in-graph weights (:mod:`camcore.graph.export_methods`), then
:math:`\\mathrm{cam} = s(\\frac{1}{L}\\sum_l \\max(R\\, s(\\max(M_l, 0)), 0))` with ``s`` the
per-image min-max scaling :math:`(x - \\min x) / (10^{-7} + \\max(x - \\min x))` and ``R`` the
bilinear half-pixel resize (OpenCV's ``INTER_LINEAR``): two products with constant weights where
the layer grid and the input size are static, else ``Resize`` with sizes computed at run time.
The gradient graph is trimmed where its form allows (:func:`_gather_seed_rows`,
:func:`_pooled_gradient`) and the nodes nothing reads are pruned. ``overlay`` is
:func:`camcore.postprocess.overlay` bit for bit: the level ``floor(255 * clip(cam))`` picks a
premultiplied colour from a constant table and the blend is the C++ overlay's 8.8 fixed-point
arithmetic, done exactly in float32 (every intermediate is an integer below 2^24).

Example:
    >>> proto = export_cam_model("resnet50.onnx", "resnet50_cam.onnx", method="gradcam++")
    >>> logits, cam = onnxruntime.InferenceSession("resnet50_cam.onnx").run(None, {"input": x})
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnx import helper, numpy_helper

from camcore.errors import CamcoreError, ShapeError
from camcore.graph.augment import augment, model_opset, prepare_model
from camcore.graph.builder import GraphBuilder
from camcore.graph.export_methods import EXPORTABLE, Exportable, LayerTensors, exportable_method
from camcore.graph.layers import explained_output, input_size, resolve_target_layers
from camcore.graph.layouts import image_input, image_layout, layer_layouts
from camcore.graph.shapes import TensorInfo
from camcore.maps import token_grid

__all__ = [
    "CAM_OUTPUT",
    "CLASS_INPUT",
    "EXPORTABLE",
    "IMAGE_INPUT",
    "OVERLAY_OUTPUT",
    "export_cam_model",
    "exported_names",
]

CAM_OUTPUT, OVERLAY_OUTPUT, CLASS_INPUT, IMAGE_INPUT = "cam", "overlay", "class", "image"
ClassInput = Literal["optional", "required"]
FLOAT = onnx.TensorProto.FLOAT
#: the most an in-memory model may weigh to be checked and saved without external data
_MAX_PROTO_BYTES = 1_800_000_000


@dataclass(frozen=True)
class _Image:
    """The model's image input: its name, layout and static (height, width) when known."""

    name: str
    layout: Literal["NCHW", "NHWC"]
    hw: tuple[int, int] | None


def export_cam_model(
    model: str | Path | onnx.ModelProto,
    out: str | Path | None = None,
    *,
    layers: Sequence[str] | str | None = None,
    method: str = "gradcam",
    size: tuple[int, int] | None = None,
    overlay: bool = False,
    colormap: str = "jet",
    alpha: float = 0.5,
    output: str | None = None,
    class_input: ClassInput = "optional",
) -> onnx.ModelProto:
    """A model that returns its outputs and the CAM ``cam`` (N, H, W) in [0, 1] in one run.

    Args:
        model: a path or a ``ModelProto`` (left untouched).
        out: where to write the exported model (atomically; never the input). None: not written.
        layers: target layer tensor or node names; None: the default layer(s), as the CAM classes.
        method: an exportable method's key or class name (:data:`EXPORTABLE`); others are refused
            with the reason.
        size: (height, width) fixing the image input's spatial size (needed for token layers of
            a model whose input size is dynamic).
        overlay: also take ``image`` (uint8 RGB (N, H', W', 3)) and return ``overlay``, equal to
            ``camcore.overlay(image, cam, alpha, colormap)``.
        colormap, alpha: the overlay's colour map (:data:`camcore.postprocess.COLORMAPS`) and weight.
        output: the output to explain (default: the first); it must be (N, classes).
        class_input: ``"optional"`` (``class`` defaults to -1 where the runtime honours ONNX
            input defaults) or ``"required"`` (a plain input, portable to every runtime).

    Returns:
        The exported ``ModelProto`` (checked by ``onnx.checker``).

    Raises:
        CamcoreError: a method with no in-graph form, a layer the graph cannot arrange, a name
            the model already uses, a bad overlay option; ModelError for an unreadable model.

    Example:
        >>> proto = export_cam_model("model.onnx", method="layercam", overlay=True)  # doctest: +SKIP
        >>> [o.name for o in proto.graph.output]                                       # doctest: +SKIP
        ['logits', 'cam', 'overlay']
    """
    spec = exportable_method(method)
    table = _overlay_table(colormap, alpha) if overlay else None
    if class_input not in ("optional", "required"):
        raise CamcoreError(f"class_input must be 'optional' or 'required', not {class_input!r}")
    path = None if out is None else _out_path(out, model)
    proto, info = prepare_model(model)
    image = _image(proto, info, size)
    if size is not None:
        proto, info = prepare_model(proto, {image.name: _sized(image.layout, size)})
        image = _image(proto, info, None)
    _refuse_taken(proto, overlay)
    explained = explained_output(proto, output)
    targets = resolve_target_layers(proto, info, explained, layers)
    tensors, graph_model = _run_graph(proto, info, explained, targets, spec, class_input)
    b = GraphBuilder(model_opset(graph_model), _taken(graph_model), prefix="camcore_cam")
    kinds = layer_layouts(proto, info)
    maps = [_layer_map(b, spec, tensors[t], t, info.get(t, TensorInfo(FLOAT, None)), kinds.get(t), image,
                       graph_model.graph, info) for t in targets]  # fmt: skip
    _scale(b, maps[0] if len(maps) == 1 else _mean(b, maps), [1, 2])
    b.nodes[-1].output[0] = CAM_OUTPUT  # the scaling's last node writes cam
    graph = graph_model.graph
    batch = _batch_dim(info[image.name])
    hw: list[int | str | None] = list(image.hw) if image.hw else [None, None]
    graph.output.append(helper.make_tensor_value_info(CAM_OUTPUT, FLOAT, [batch, *hw]))
    if table is not None:
        _append_overlay(b, CAM_OUTPUT, table)
        graph.input.append(helper.make_tensor_value_info(IMAGE_INPUT, onnx.TensorProto.UINT8, [batch, None, None, 3]))
        graph.output.append(
            helper.make_tensor_value_info(OVERLAY_OUTPUT, onnx.TensorProto.UINT8, [batch, None, None, 3])
        )
    b.add_to(graph)
    _prune(graph, {o for n in proto.graph.node for o in n.output}, {i.name for i in proto.graph.initializer})
    graph_model.doc_string = (
        f"camcore export: {spec.key} at {', '.join(targets)}; outputs {CAM_OUTPUT!r}"
        + (f" and {OVERLAY_OUTPUT!r} ({colormap}, alpha {alpha})" if overlay else "")
    )
    if graph_model.ByteSize() < _MAX_PROTO_BYTES:
        onnx.checker.check_model(graph_model)
    if path is not None:
        _write(graph_model, path)
    return graph_model


# ---------------------------------------------------------------------- the inputs
def _image(proto: onnx.ModelProto, info: dict[str, TensorInfo], size: tuple[int, int] | None) -> _Image:
    name = image_input(proto)
    ti = info.get(name) if name else None
    if name is None or ti is None or ti.shape is None or len(ti.shape) != 4:
        shape = None if ti is None or ti.shape is None else list(ti.shape)
        raise CamcoreError(f"export needs a 4-D image input as the model's first input; it has {name!r} {shape}")
    if size is not None and not (
        isinstance(size, (tuple, list))
        and len(size) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        raise CamcoreError(f"size must be (height, width) with positive integers, got {size!r}")
    return _Image(name, image_layout(proto, info, name), input_size(proto, info))


def _sized(layout: str, size: tuple[int, int]) -> list[int | str | None]:
    """The image input's shape with ``size`` as its spatial dims (the rest kept)."""
    h, w = int(size[0]), int(size[1])
    return [None, h, w, None] if layout == "NHWC" else [None, None, h, w]


def _batch_dim(ti: TensorInfo) -> int | str | None:
    return None if ti.shape is None else ti.shape[0]


def _taken(proto: onnx.ModelProto) -> set[str]:
    graph = proto.graph
    names = {t for n in graph.node for t in (*n.input, *n.output, n.name)}
    return names | {i.name for i in graph.input} | {i.name for i in graph.initializer} | {o.name for o in graph.output}


def _refuse_taken(proto: onnx.ModelProto, overlay: bool) -> None:
    """The names the export adds must be free in the model."""
    taken = _taken(proto)
    ours = [CAM_OUTPUT, CLASS_INPUT, *((IMAGE_INPUT, OVERLAY_OUTPUT) if overlay else ())]
    clash = [n for n in ours if n in taken]
    if clash:
        raise CamcoreError(
            f"the model already has a tensor named {clash[0]!r}, which the exported graph adds; "
            "rename it in the model first"
        )


# ---------------------------------------------------------------------- the gradient graph
def _run_graph(
    proto: onnx.ModelProto,
    info: dict[str, TensorInfo],
    explained: str,
    targets: list[str],
    spec: Exportable,
    class_input: ClassInput,
) -> tuple[dict[str, tuple[str, str | None, str | None]], onnx.ModelProto]:
    """The model with the gradient graph appended (when the method needs it), and per layer the
    (activation, gradient, H·A) tensors; ``camcore_class`` becomes ``class``."""
    shape = info[explained].shape if explained in info else None
    if spec.needs_gradients and (shape is None or len(shape) != 2):
        raise CamcoreError(
            f"export explains an (N, classes) output, but {explained!r} has shape "
            f"{None if shape is None else list(shape)}; pass output= naming a class-score output"
        )
    if not spec.needs_gradients:
        copy = onnx.ModelProto()
        copy.CopyFrom(proto)
        return {t: (t, None, None) for t in targets}, copy
    try:
        aug = augment(proto, targets, output=explained, seed="class", hvp=spec.hvp, check=False)
    except ShapeError as exc:
        raise CamcoreError(f"{exc}; fix the batch size in the model (or pass size=) and export again") from None
    graph = aug.model.graph
    added = {*aug.activation_outputs.values(), *aug.gradient_outputs.values(), *aug.hvp_outputs.values()}
    kept = [o for o in graph.output if o.name not in added]
    del graph.output[:]
    graph.output.extend(kept)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == aug.seed_input:
                node.input[i] = CLASS_INPUT
    _gather_seed_rows(graph, {o for n in proto.graph.node for o in n.output})
    seed = next(i for i in graph.input if i.name == aug.seed_input)
    seed.name = CLASS_INPUT
    seed.type.tensor_type.shape.dim[0].Clear()  # (N,) or (1,): one class for every image
    if class_input == "optional":
        graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), CLASS_INPUT))
        aug.model.ir_version = max(aug.model.ir_version, 4)
    tensors: dict[str, tuple[str, str | None, str | None]] = {
        t: (aug.activation_outputs[t], aug.gradient_outputs[t], aug.hvp_outputs.get(t)) for t in targets
    }
    return tensors, aug.model


def _gather_seed_rows(graph: onnx.GraphProto, own: set[str]) -> None:
    """The classifier's input gradient as the chosen rows of its weight: where the gradient graph
    multiplies the one-hot seed by a constant weight, ``Transpose(Gemm(W, onehot(k), transA=1,
    transB=1))`` (= ``onehot(k) @ W``, every row a single 1 times a row of W, so exactly ``W[k]``)
    becomes ``Gather(W, k, axis=0)``: one node reading N rows instead of the one-hot's shape
    arithmetic and a product reading all of W. The one-hot nodes left unread are pruned later.
    Nodes writing ``own`` (the model's) are never touched; a graph of another shape is left as it is."""
    producer = {o: n for n in graph.node for o in n.output}
    constants = {i.name: i for i in graph.initializer}

    def made(name: str, op_type: str) -> onnx.NodeProto | None:
        node = producer.get(name)
        return node if node is not None and node.op_type == op_type and name not in own else None

    def ints(name: str) -> list[int] | None:
        return numpy_helper.to_array(constants[name]).reshape(-1).tolist() if name in constants else None

    for i, node in enumerate(graph.node):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        gemm = made(node.input[0], "Gemm") if node.op_type == "Transpose" and node.output[0] not in own else None
        if gemm is None or attrs.get("perm") not in (None, [1, 0]) or len(gemm.input) != 2:
            continue
        g = {a.name: helper.get_attribute_value(a) for a in gemm.attribute}
        weight = constants.get(gemm.input[0])
        cast = made(gemm.input[1], "Cast")
        equal = None if cast is None else made(cast.input[0], "Equal")
        if (g.get("transA"), g.get("transB"), g.get("alpha", 1.0)) != (1, 1, 1.0) or weight is None \
                or len(weight.dims) != 2 or equal is None:  # fmt: skip
            continue
        column, classes = made(equal.input[0], "Unsqueeze"), made(equal.input[1], "Range")
        if column is None or classes is None or ints(classes.input[0]) != [0] or ints(classes.input[2]) != [1]:
            continue
        axes = next((helper.get_attribute_value(a) for a in column.attribute if a.name == "axes"), None)
        if list(axes if axes is not None else ints(column.input[1]) or []) != [1]:
            continue
        graph.node[i].CopyFrom(
            helper.make_node("Gather", [gemm.input[0], column.input[0]], [node.output[0]], name=node.name, axis=0)
        )


# ---------------------------------------------------------------------- the map assembly
def _layout_of(ti: TensorInfo, kind: str | None, target: str) -> str:
    """The layer's layout as the graph shows it, else as its rank implies (``LayerLayout.of``)."""
    rank = None if ti.shape is None else len(ti.shape)
    if rank not in (3, 4):
        raise CamcoreError(
            f"layer {target!r} has {'an unknown rank' if rank is None else f'rank {rank}'}: the export "
            "arranges (N, C, h, w), (N, h, w, C), (N, C, L) and (N, T, C) tensors; choose another layer"
        )
    return kind or ("tokens" if rank == 3 else "channels_first")


def _tokens(ti: TensorInfo, target: str, image: _Image) -> tuple[int, int, int]:
    """(prefix, h, w) of a token layer: its count and the input's size must be static."""
    assert ti.shape is not None
    count = ti.shape[1]
    if not isinstance(count, int) or image.hw is None:
        raise CamcoreError(
            f"token layer {target!r} needs a static token count and input size to lay its tokens on a "
            "grid; pass size=HxW"
        )
    grid = token_grid(count, image.hw)
    if grid is None:
        raise CamcoreError(f"cannot arrange the {count} tokens of layer {target!r} as a grid with the input's ratio")
    return grid


def _arrange(b: GraphBuilder, tensor: str, target: str, ti: TensorInfo, kind: str | None, image: _Image) -> str:
    """``tensor`` (shaped as layer ``target``) as a 4-D float32 grid, as :func:`camcore.maps.arrange`
    lays it out but not transposed: (N, C, h, w), or (N, h, w, C) for NHWC layers and tokens (a
    Transpose reading the layer lets onnxruntime's transpose optimiser rewrite the model's own
    nodes, whose outputs then differ in the last bits)."""
    layout = _layout_of(ti, kind, target)
    x = tensor if ti.elem_type == FLOAT else b.Cast(tensor, FLOAT)
    assert ti.shape is not None
    if layout == "tokens":
        prefix, h, w = _tokens(ti, target, image)
        if prefix:
            x = b.Slice(x, [prefix], [np.iinfo(np.int64).max], [1])
        return b.Reshape(x, b.ints([0, h, w, -1]))
    if layout == "channels_first" and len(ti.shape) == 3:
        return b.Unsqueeze(x, [2])
    return x


def _axes(ti: TensorInfo, kind: str | None, target: str) -> tuple[int, tuple[int, int]]:
    """The channel axis and spatial axes of the arranged tensor."""
    return (1, (2, 3)) if _layout_of(ti, kind, target) == "channels_first" else (3, (1, 2))


def _grid(ti: TensorInfo, kind: str | None, image: _Image) -> tuple[int, int] | None:
    """The layer map's static (h, w), when known."""
    s = ti.shape
    assert s is not None
    layout = kind or ("tokens" if len(s) == 3 else "channels_first")
    if layout == "tokens":
        grid = token_grid(s[1], image.hw) if isinstance(s[1], int) else None
        return None if grid is None else grid[1:]
    hw = (s[1], s[2]) if layout == "channels_last" else ((1, s[2]) if len(s) == 3 else (s[2], s[3]))
    return (hw[0], hw[1]) if isinstance(hw[0], int) and isinstance(hw[1], int) else None


def _scale(b: GraphBuilder, m: str, axes: list[int]) -> str:
    """:math:`s`: per image ``(m - min) / (1e-7 + max(m - min))`` over the map's spatial ``axes``
    (its last node is the ``Div``)."""
    shifted = b.Sub(m, b.ReduceMin(m, axes))
    return b.Div(shifted, b.Add(b.scalar(1e-7, FLOAT), b.ReduceMax(shifted, axes)))


def _resize(b: GraphBuilder, m: str, hw: str) -> str:
    """Bilinear, half-pixel centres (OpenCV's ``INTER_LINEAR``) of (N, h, w) maps to ``hw`` (a
    2-element int64 tensor): the sizes computed at run time (a dynamic grid or input size)."""
    planes = b.Unsqueeze(m, [1])
    sizes = b.Concat([b.Slice(b.Shape(planes), [0], [2], [0]), hw], 0)
    empty = b.const(np.zeros(0, np.float32))
    up = b.op("Resize", planes, empty, empty, sizes, mode="linear", coordinate_transformation_mode="half_pixel")
    return b.Squeeze(up, [1])


def _interpolation(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float32 weights of the bilinear half-pixel resize along one axis: output ``o``
    samples ``x = (o + 0.5) n_in / n_out - 0.5`` clamped to [0, n_in - 1], weight ``1 - f`` on
    ``floor(x)`` and ``f = x - floor(x)`` on the next (OpenCV's ``INTER_LINEAR``, ONNX's
    ``Resize`` linear ``half_pixel``).

    Example:
        >>> _interpolation(2, 4).tolist()
        [[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]]
    """
    x = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    low = np.floor(x).astype(np.int64)
    high = np.minimum(low + 1, n_in - 1)
    weights = np.zeros((n_out, n_in), np.float64)
    np.add.at(weights, (np.arange(n_out), low), 1 - (x - low))
    np.add.at(weights, (np.arange(n_out), high), x - low)
    return weights.astype(np.float32)


def _static_resize(b: GraphBuilder, m: str, grid: tuple[int, int], hw: tuple[int, int]) -> str:
    """The bilinear resize of (N, h, w) maps between static sizes as two products with constant
    weights, :math:`R_y\\, M\\, R_x^T` (:func:`_interpolation`): no shape arithmetic at run time,
    and no ``Resize`` of a one-channel image (OpenVINO's ``Interpolate`` of the demo's 6x6 map to
    96x96 took 0.14 ms, the two products a few microseconds)."""
    rows = b.MatMul(m, b.const(_interpolation(grid[1], hw[1]).T.copy()))
    return b.MatMul(b.const(_interpolation(grid[0], hw[0])), rows)


def _input_hw(b: GraphBuilder, image: _Image) -> str:
    if image.hw is not None:
        return b.ints(image.hw)
    start = 1 if image.layout == "NHWC" else 2
    return b.Slice(b.Shape(image.name), [start], [start + 2], [0])


def _pooled_gradient(b: GraphBuilder, graph: onnx.GraphProto, info: dict[str, TensorInfo], grad: str,
                     spatial: tuple[int, int]) -> str | None:  # fmt: skip
    """The spatial mean of the layer gradient ``grad``, kept 1 x 1 on ``spatial``, where the gradient
    graph broadcasts it to the grid: ``grad = Expand(x) (* or / scalar constants)`` with ``x`` the
    ``Reshape`` of a tensor to the shape of a tensor that is 1 on ``spatial`` (a global average
    pooling's output). Then ``ReduceMean(grad) = x (* or / the same constants)``, equal values
    averaged, so the weights need neither the broadcast nor its mean. None where the graph differs."""
    producer = {o: n for n in graph.node for o in n.output}
    constants = {i.name: i for i in graph.initializer}
    scalar_ops: list[tuple[str, str]] = []
    name = grad
    while (node := producer.get(name)) is not None and node.op_type != "Expand":
        if node.op_type == "Identity":
            name = node.input[0]
        elif node.op_type in ("Mul", "Div") and node.input[1] in constants and _size(constants[node.input[1]]) == 1:
            scalar_ops.append((node.op_type, node.input[1]))
            name = node.input[0]
        else:
            return None
    reshape = None if node is None else producer.get(node.input[0])
    if node is None or reshape is None or reshape.op_type != "Reshape":
        return None
    shape = producer.get(reshape.input[1])
    pooled = None if shape is None or shape.op_type != "Shape" or shape.attribute else info.get(shape.input[0])
    dims = None if pooled is None or pooled.elem_type != FLOAT else pooled.shape
    if dims is None or len(dims) != 4 or any(dims[a] != 1 for a in spatial):
        return None
    rows = _gathered_rows(producer.get(reshape.input[0]), constants, dims, spatial)
    if rows is not None:  # Gather(W, k) (N, C): scale W once, keep the grid axes as 1
        weight, index = rows
        for op_type, constant in reversed(scalar_ops):
            c = numpy_helper.to_array(constants[constant]).astype(np.float32).reshape(())
            weight = np.divide(weight, c) if op_type == "Div" else np.multiply(weight, c)
        return b.Unsqueeze(b.op("Gather", b.const(weight.astype(np.float32)), index, axis=0), list(spatial))
    x = node.input[0]
    for op_type, constant in reversed(scalar_ops):
        x = b.op(op_type, x, constant)
    return x


#: the largest classifier weight (bytes) that the export copies scaled, to save one node
_MAX_SCALED_WEIGHT = 16 << 20


def _gathered_rows(
    node: onnx.NodeProto | None,
    constants: dict[str, onnx.TensorProto],
    dims: Sequence[int | str | None],
    spatial: tuple[int, int],
) -> tuple[np.ndarray, str] | None:
    """(W, k) where ``node`` is :func:`_gather_seed_rows`' ``Gather(W, k, axis=0)`` of a float32
    (K, C) weight of at most :data:`_MAX_SCALED_WEIGHT` bytes whose C is the pooled tensor's
    (``dims``, on its channel axis: the one that is neither the batch nor ``spatial``)."""
    weight = None if node is None or node.op_type != "Gather" else constants.get(node.input[0])
    axis = 0 if node is None else next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 0)
    if node is None or weight is None or axis != 0 or weight.data_type != FLOAT or len(weight.dims) != 2:
        return None
    channel = next(a for a in (1, 2, 3) if a not in spatial)
    if dims[channel] != weight.dims[1] or 4 * _size(weight) > _MAX_SCALED_WEIGHT:
        return None
    return numpy_helper.to_array(weight), node.input[1]


def _size(tensor: onnx.TensorProto) -> int:
    return math.prod(tensor.dims)


def _prune(graph: onnx.GraphProto, keep: set[str], own_constants: set[str]) -> None:
    """Drop, to a fixed point, the nodes whose outputs nothing reads, except those writing ``keep``
    (the model's own tensors: its nodes stay as they are, even unused ones), then the constants
    that only they read (the model's own and ``class``'s default kept)."""
    while True:
        read = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(o in read or o in keep for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    unread = [i for i in graph.initializer if i.name not in read and i.name not in own_constants | {CLASS_INPUT}]
    for i in unread:
        graph.initializer.remove(i)


def _layer_map(
    b: GraphBuilder,
    spec: Exportable,
    tensors: tuple[str, str | None, str | None],
    target: str,
    ti: TensorInfo,
    kind: str | None,
    image: _Image,
    graph: onnx.GraphProto,
    info: dict[str, TensorInfo],
) -> str:
    """One layer's :math:`\\max(R\\,s(\\max(M, 0)), 0)` at the input's size, M from the method's weights."""
    from camcore.methods import METHODS

    act, grad, hvp = tensors
    channel_axis, spatial_axes = _axes(ti, kind, target)
    arranged = LayerTensors(
        _arrange(b, act, target, ti, kind, image),
        None if grad is None else _arrange(b, grad, target, ti, kind, image),
        None if hvp is None else _arrange(b, hvp, target, ti, kind, image),
        channel_axis,
        spatial_axes,
        None if grad is None or ti.elem_type != FLOAT else _pooled_gradient(b, graph, info, grad, spatial_axes),
    )
    raw = spec.fn(b, arranged)
    layer_map = raw if METHODS[spec.key].output == "map" else b.ReduceSum(raw, [channel_axis], keepdims=False)
    return _layer_final(b, layer_map, _grid(ti, kind, image), image)


def _layer_final(b: GraphBuilder, m: str, grid: tuple[int, int] | None, image: _Image) -> str:
    """:math:`\\max(R\\,s(\\max(M, 0)), 0)`: one layer's map at the input's size (``R`` skipped
    where the grid already has it, as :func:`camcore.maps.scale_cam_image` does). The outer max
    is the identity here: bilinear weights are non-negative, so ``R`` of a map in [0, 1] is >= 0.
    ``m`` and the result are (N, h, w)."""
    scaled = _scale(b, b.op("Relu", m), [1, 2])
    if grid is not None and image.hw is not None and tuple(grid) == tuple(image.hw):
        return scaled
    if grid is not None and image.hw is not None:
        return _static_resize(b, scaled, grid, image.hw)
    return _resize(b, scaled, _input_hw(b, image))


def _mean(b: GraphBuilder, maps: list[str]) -> str:
    """The mean over the layers' (N, H, W) maps (the work stays 3-D: OpenVINO lays a 4-D tensor
    of one channel out in blocks of 16 channels, 16 times the work)."""
    stacked = b.Concat([b.Unsqueeze(m, [1]) for m in maps], 1)
    return b.ReduceMean(stacked, [1], keepdims=False)


# ---------------------------------------------------------------------- the overlay
@dataclass(frozen=True)
class _OverlayTable:
    """The C++ overlay's blend constants: premultiplied colours + rounding bias, image weight."""

    colour: np.ndarray  # (256, 3) float32: lround(256 * alpha * colour) + 126
    image_weight: float  # lround(65536 * (1 - alpha)), at most 65535


def _overlay_table(colormap: str, alpha: float) -> _OverlayTable:
    """The blend tables of :func:`camcore.postprocess.overlay` for ``colormap`` and ``alpha``
    (``cpp/src/overlay.cpp``'s ``blend_tables``: float32 weights, rounded half away from zero)."""
    from camcore.postprocess import COLORMAPS, colormap_table

    if not isinstance(colormap, str) or colormap.lower() not in COLORMAPS:
        raise CamcoreError(f"unknown colormap {colormap!r}; choose from {', '.join(COLORMAPS)}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) or not 0 <= alpha <= 1:
        raise CamcoreError(f"alpha must be a number in [0, 1], got {alpha!r}")
    table = colormap_table(colormap.lower(), rgb=True).astype(np.float64)
    a, w = float(np.float32(alpha)), float(np.float32(1.0 - float(alpha)))
    colour = np.floor(256.0 * a * table + 0.5) + 126
    return _OverlayTable(colour.astype(np.float32), float(min(65535, math.floor(65536.0 * w + 0.5))))


def _append_overlay(b: GraphBuilder, cam: str, table: _OverlayTable) -> None:
    """``overlay`` = the C++ overlay of ``image`` and ``cam``, exactly:

    level = floor(clip(255 * cam, 0, 255)); t = colour[level] + floor(pixel * weight / 256);
    out = floor((t + 1 + bit8(t)) / 256) (round half to even of the 8.8 sum).
    """
    hw = b.Slice(b.Shape(IMAGE_INPUT), [1], [3], [0])
    heat = _resize(b, cam, hw)
    level = b.op("Floor", b.op("Clip", b.Mul(heat, b.scalar(255.0, FLOAT)), b.scalar(0.0, FLOAT),
                               b.scalar(255.0, FLOAT)))  # fmt: skip
    colour = b.op("Gather", b.const(table.colour), b.Cast(level, onnx.TensorProto.INT64), axis=0)
    pixel = b.Cast(IMAGE_INPUT, FLOAT)
    inv256, inv512 = b.scalar(1 / 256, FLOAT), b.scalar(1 / 512, FLOAT)
    product = b.op("Floor", b.Mul(b.Mul(pixel, b.scalar(table.image_weight, FLOAT)), inv256))
    t = b.Add(colour, product)
    bit8 = b.Sub(b.op("Floor", b.Mul(t, inv256)), b.Mul(b.scalar(2.0, FLOAT), b.op("Floor", b.Mul(t, inv512))))
    rounded = b.op("Floor", b.Mul(b.Add(b.Add(t, b.scalar(1.0, FLOAT)), bit8), inv256))
    b.nodes.append(
        helper.make_node("Cast", [rounded], [OVERLAY_OUTPUT], name=b.fresh("overlay"), to=onnx.TensorProto.UINT8)
    )


# ---------------------------------------------------------------------- writing
def _out_path(out: str | Path, model: str | Path | onnx.ModelProto) -> Path:
    """``out`` checked before any work: not the input, its folder writable."""
    from camcore.files import output_file

    return output_file(out, [model] if isinstance(model, (str, Path)) else [], "out")


def _write(proto: onnx.ModelProto, path: Path) -> None:
    from camcore.files import atomic_write

    big = proto.ByteSize() > _MAX_PROTO_BYTES

    def write(tmp: Path) -> None:
        onnx.save(proto, str(tmp), save_as_external_data=big, location=path.name + ".data" if big else None)

    try:
        atomic_write(path, write)
    except OSError as exc:
        raise CamcoreError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None


def exported_names(proto: onnx.ModelProto) -> Mapping[str, list[str]]:
    """The exported graph's inputs and outputs by kind, for the CLI's summary."""
    inits = {i.name for i in proto.graph.initializer}
    inputs = [i.name for i in proto.graph.input if i.name not in inits or i.name == CLASS_INPUT]
    return {"inputs": inputs, "outputs": [o.name for o in proto.graph.output]}

