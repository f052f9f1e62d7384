"""Shape and type facts about every tensor of a model, from ONNX shape inference.

A dimension is an ``int`` when known, a ``str`` for a named symbolic dimension
(``"batch"``) and ``None`` when unknown. A declared ``dim_value`` of -1 or 0 (as some
exporters write a dynamic dim, PaddleOCR's batch for one) is unknown too: :func:`free_unset_dims`
clears it from the model before anything reads it. Large initializers are swapped for typed
graph inputs before inference, so models over protobuf's 2 GiB limit still work.

A dynamic batch hides sizes that do not depend on it: ``Reshape(x, [N, 64, -1])`` with a
symbolic ``N`` leaves the ``-1`` unknown to ONNX inference. :func:`infer_tensor_info` then
infers twice more with the batch fixed to two sizes: a dim equal in both runs is static, one
equal to the batch in both is the batch, the others stay unknown. The batch stays dynamic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import onnx
from onnx import shape_inference

Dim = int | str | None

_SMALL_INITIALIZER_BYTES = 4096


@dataclass(frozen=True)
class TensorInfo:
    """Element type and shape of one tensor (``shape`` is None when the rank is unknown)."""

    elem_type: int
    shape: tuple[Dim, ...] | None

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)


def _dims(type_proto: onnx.TypeProto) -> tuple[Dim, ...] | None:
    tensor = type_proto.tensor_type
    if not tensor.HasField("shape"):
        return None
    out: list[Dim] = []
    for d in tensor.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            out.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            out.append(d.dim_param)
        else:
            out.append(None)
    return tuple(out)


def _lightweight_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model without weight bytes: large initializers become typed graph inputs."""
    light = onnx.ModelProto()
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    graph = light.graph
    graph.node.extend(model.graph.node)
    graph.input.extend(model.graph.input)
    graph.output.extend(model.graph.output)
    declared = {i.name for i in model.graph.input}
    for init in model.graph.initializer:
        small = len(init.raw_data) <= _SMALL_INITIALIZER_BYTES and init.ByteSize() <= 4 * _SMALL_INITIALIZER_BYTES
        if small and init.data_location != onnx.TensorProto.EXTERNAL:
            graph.initializer.append(init)
        elif init.name not in declared:
            graph.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    return light


def free_unset_dims(model: onnx.ModelProto) -> int:
    """Clear every declared ``dim_value`` <= 0 (graph inputs, outputs, value_info) in place:
    exporters write -1 or 0 for a dynamic dim, and inference or onnxruntime would take it as a
    size. Returns how many dims were cleared."""
    graph = model.graph
    cleared = 0
    for vi in (*graph.input, *graph.output, *graph.value_info):
        if not vi.type.tensor_type.HasField("shape"):
            continue
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_value") and d.dim_value <= 0:
                d.ClearField("dim_value")
                cleared += 1
    return cleared


def fix_input_shapes(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int | str | None]]) -> None:
    """Overwrite the declared shapes of graph inputs in place (None keeps a dim as it is;
    -1 or 0 makes it dynamic)."""
    inputs = {i.name: i for i in model.graph.input}
    for name, dims in input_shapes.items():
        if name not in inputs:
            from camcore.errors import InputError

            raise InputError(f"input_shapes names {name!r}, which is not a model input; inputs are {sorted(inputs)}")
        shape = inputs[name].type.tensor_type.shape
        if len(shape.dim) not in (0, len(dims)):
            from camcore.errors import InputError

            raise InputError(f"input_shapes[{name!r}] has {len(dims)} dims but the model input has {len(shape.dim)}")
        if len(shape.dim) == 0:
            shape.dim.extend(onnx.TensorShapeProto.Dimension() for _ in dims)
        for d, v in zip(shape.dim, dims):
            if v is None:
                continue
            if isinstance(v, int) and v <= 0:  # -1 or 0: dynamic, as exporters write it
                d.ClearField("dim_value")
                d.ClearField("dim_param")
            elif isinstance(v, int):
                d.ClearField("dim_param")
                d.dim_value = v
            else:
                d.ClearField("dim_value")
                d.dim_param = v


def _infer(light: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return shape_inference.infer_shapes(light, strict_mode=False, data_prop=True)
    except Exception:
        return light


def _collect(inferred: onnx.ModelProto, info: dict[str, TensorInfo]) -> dict[str, TensorInfo]:
    """``info`` plus the value infos of ``inferred`` and its Constant nodes, first one wins."""
    graph = inferred.graph
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        if vi.type.HasField("tensor_type") and vi.name not in info:
            info[vi.name] = TensorInfo(vi.type.tensor_type.elem_type, _dims(vi.type))
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] not in info:
            for attr in node.attribute:
                if attr.name == "value":
                    info[node.output[0]] = TensorInfo(attr.t.data_type, tuple(attr.t.dims))
    return info


def infer_tensor_info(model: onnx.ModelProto) -> dict[str, TensorInfo]:
    """Type and shape of every tensor the model names (inputs, initializers, node outputs).

    Dims a dynamic batch hides are found by inferring again with the batch fixed (see the
    module docstring); the batch itself stays as declared.
    """
    light = _lightweight_copy(model)
    free_unset_dims(light)
    info = {init.name: TensorInfo(init.data_type, tuple(int(d) for d in init.dims)) for init in model.graph.initializer}
    info = _collect(_infer(light), info)
    batch = _batch_dim(model)
    if batch is not None and any(_has_unknown(ti, batch[0]) for ti in info.values()):
        _fill_batch_hidden_dims(light, info, *batch)
    return info


#: the batch sizes of the two extra inferences: primes that no other dim is likely to equal
_BATCH_PROBES = (9973, 10007)


def _batch_dim(model: onnx.ModelProto) -> tuple[Dim, list[str]] | None:
    """The first input's dynamic first dim (a name or None) and the inputs whose first dim is
    the same; None when the first input's first dim is static or it has no dims."""
    initializers = {i.name for i in model.graph.initializer}
    firsts: list[tuple[str, Dim]] = []
    for vi in model.graph.input:
        dims = _dims(vi.type) if vi.type.HasField("tensor_type") else None
        if vi.name not in initializers and dims:
            firsts.append((vi.name, dims[0]))
    if not firsts or isinstance(firsts[0][1], int):
        return None
    batch = firsts[0][1]
    return batch, [name for name, d in firsts if d == batch]


def _has_unknown(ti: TensorInfo, batch: Dim) -> bool:
    return ti.shape is None or any(d is None or (isinstance(d, str) and d != batch) for d in ti.shape)


def _fill_batch_hidden_dims(light: onnx.ModelProto, info: dict[str, TensorInfo], batch: Dim, names: list[str]) -> None:
    """Infer ``light`` with the batch of inputs ``names`` fixed to each of ``_BATCH_PROBES``; a dim
    unknown in ``info`` that is the same int in both runs becomes it, one that follows the
    probe becomes ``batch``."""
    runs = []
    for size in _BATCH_PROBES:
        fixed = onnx.ModelProto()
        fixed.CopyFrom(light)
        for vi in fixed.graph.input:
            if vi.name in names:
                vi.type.tensor_type.shape.dim[0].dim_value = size  # clears dim_param (a oneof)
        runs.append(_collect(_infer(fixed), {}))
    first, second = runs
    for name, a in first.items():
        b, ti = second.get(name), info.get(name)
        if b is None or a.shape is None or b.shape is None or len(a.shape) != len(b.shape):
            continue
        if ti is not None and ti.shape is not None and len(ti.shape) != len(a.shape):
            continue
        if ti is not None and not _has_unknown(ti, batch):
            continue
        base: tuple[Dim, ...] = (None,) * len(a.shape) if ti is None or ti.shape is None else ti.shape
        dims: list[Dim] = []
        for was, x, y in zip(base, a.shape, b.shape):
            if isinstance(was, int) or not (isinstance(x, int) and isinstance(y, int)):
                dims.append(was)
            elif x == y:
                dims.append(x)
            else:
                dims.append(batch if (x, y) == _BATCH_PROBES else was)
        info[name] = TensorInfo(a.elem_type if ti is None else ti.elem_type, tuple(dims))


def probe_shapes(model: onnx.ModelProto, info: dict[str, TensorInfo], tensors: Sequence[str]) -> dict[str, TensorInfo]:
    """Shapes that inference left unknown, measured by running the model on zeros.

    Used only when tensors on the gradient path lack a rank (e.g. a Reshape whose target
    is computed from ``Shape`` ops in ways ONNX data propagation does not follow). The
    model runs twice, with batch 2 and 3: dims that differ follow the batch and stay
    symbolic, the others become static. Needs every input dim but the first to be known;
    returns nothing otherwise.
    """
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    wanted = [t for t in tensors if t in info and info[t].elem_type]
    if not wanted:
        return {}
    shapes = []
    for vi in inputs:
        dims = info[vi.name].shape if vi.name in info else None
        if dims is None or not all(isinstance(d, int) for d in dims[1:]):
            return {}
        shapes.append((vi.name, info[vi.name].elem_type, list(dims)))
    import numpy as np
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(t, info[t].elem_type, None) for t in wanted)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        runs = []
        for batch in (2, 3):
            feeds = {}
            for name, elem, sizes in shapes:
                first = sizes[0] if isinstance(sizes[0], int) else batch
                rest = cast("list[int]", sizes[1:])  # all ints: checked above
                feeds[name] = np.zeros([first, *rest], onnx.helper.tensor_dtype_to_np_dtype(elem))
            runs.append(session.run(wanted, feeds))
    except Exception:
        return {}
    found: dict[str, TensorInfo] = {}
    for name, a, b in zip(wanted, *runs):
        if a.ndim != b.ndim:
            continue
        dims = tuple(int(x) if x == y else None for x, y in zip(a.shape, b.shape))
        found[name] = TensorInfo(info[name].elem_type, dims)
    return found


# ---------------------------------------------------------------------- shape values
#: integer ops on shape vectors that exporters emit between ``Shape`` and the ops that read
#: their result as a parameter (Reshape targets, Slice bounds, Pad amounts)
_SHAPE_OPS = frozenset({"Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Add", "Sub", "Mul", "Div", "Mod",
                        "Cast", "Reshape", "Identity", "Range", "Equal", "Less", "Greater", "Where", "Not", "Floor",
                        "Ceil", "Neg", "Abs", "Max", "Min", "ReduceProd", "ReduceSum", "Expand",
                        "ConstantOfShape", "Size"})  # fmt: skip
_MAX_SHAPE_VALUE = 4096


def shape_values(
    graph: onnx.GraphProto, info: Mapping[str, TensorInfo], opset: int, known: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """``known`` (constants) completed with the values that follow from the static dims alone:
    ``Shape`` of a tensor whose dims are known, and small integer ops on such values (YOLOv8's
    ``Slice`` bounds computed from ``Shape``). A value that depends on a dim not known (the
    dynamic batch) stays unknown; a ``Gather`` or ``Slice`` of a shape picks the known dims
    out of one with unknown ones.

    Example:
        >>> shape_values(model.graph, info, 17, {})["/model.22/Mul_output_0"]  # doctest: +SKIP
        array([2])
    """
    from onnx.reference import ReferenceEvaluator

    values = dict(known)
    partial: dict[str, list[int | None]] = {}  # shape vectors with unknown entries
    for node in graph.node:
        outs = [o for o in node.output if o]
        if len(outs) != 1 or outs[0] in values:
            continue
        out, ins = outs[0], [i for i in node.input if i]
        if node.op_type == "Shape":
            ti = info.get(node.input[0])
            if ti is None or ti.shape is None:
                continue
            attrs = {a.name: a.i for a in node.attribute}
            dims = [d if isinstance(d, int) else None for d in ti.shape]
            dims = dims[attrs.get("start", 0) : attrs.get("end", len(dims)) or None]
            if None in dims:
                partial[out] = dims
            else:
                values[out] = np.asarray(dims, np.int64)
        elif node.op_type in ("Gather", "Slice") and ins and ins[0] in partial and all(i in values for i in ins[1:]):
            picked = _pick(node, partial[ins[0]], [values[i] for i in ins[1:]])
            if picked is not None:
                values[out] = picked
        elif node.op_type in _SHAPE_OPS and ins and all(i in values for i in ins):
            if any(values[i].size > _MAX_SHAPE_VALUE for i in ins):
                continue
            if _too_large(node.op_type, [values[i] for i in ins]):
                continue
            single = onnx.helper.make_model(
                onnx.helper.make_graph([node], "fold", [], [onnx.helper.make_tensor_value_info(out, 0, None)]),
                opset_imports=[onnx.helper.make_opsetid("", opset)],
            )
            try:
                result = cast(list, ReferenceEvaluator(single).run(None, {i: values[i] for i in ins}))[0]
            except Exception:  # an op the reference cannot run here: the value stays unknown
                continue
            if np.asarray(result).size <= _MAX_SHAPE_VALUE:
                values[out] = np.asarray(result)
    return values


def _too_large(op: str, inputs: list[np.ndarray]) -> bool:
    """Whether an op would make a value larger than a shape computation needs (a tensor filled
    to a shape, a long range): such values are left to the run."""
    if op == "ConstantOfShape":
        return bool(np.prod(inputs[0], dtype=np.float64) > _MAX_SHAPE_VALUE)
    if op == "Expand" and len(inputs) > 1:
        return bool(np.prod(np.maximum(inputs[1], 1), dtype=np.float64) > _MAX_SHAPE_VALUE)
    if op == "Range" and len(inputs) == 3:
        start, limit, delta = (float(np.asarray(v).reshape(-1)[0]) for v in inputs)
        return delta == 0 or (limit - start) / delta > _MAX_SHAPE_VALUE
    return False


def _pick(node: onnx.NodeProto, dims: list[int | None], params: list[np.ndarray]) -> np.ndarray | None:
    """The entries a Gather or Slice on axis 0 takes from a partly known shape vector."""
    index = np.arange(len(dims))
    if node.op_type == "Gather":
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if axis != 0:
            return None
        chosen = index[params[0]]
    else:
        starts, ends = params[0], params[1]
        axes = params[2] if len(params) > 2 else np.array([0])
        steps = params[3] if len(params) > 3 else np.array([1])
        if list(axes.ravel()) != [0]:
            return None
        chosen = index[int(starts.ravel()[0]) : int(ends.ravel()[0]) : int(steps.ravel()[0])]
    taken = [dims[int(k)] for k in np.ravel(chosen)]
    if any(d is None for d in taken):
        return None
    return np.asarray(taken, np.int64).reshape(np.shape(chosen))
