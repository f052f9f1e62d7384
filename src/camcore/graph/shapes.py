"""Shape and type facts about every tensor of a model, from ONNX shape inference.

A dimension is an ``int`` when known, a ``str`` for a named symbolic dimension
(``"batch"``) and ``None`` when unknown. Large initializers are swapped for typed
graph inputs before inference, so models over protobuf's 2 GiB limit still work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

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
        if d.HasField("dim_value"):
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
            graph.input.append(
                onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
            )
    return light


def fix_input_shapes(
    model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int | str | None]]
) -> None:
    """Overwrite the declared shapes of graph inputs in place (None keeps a dim as it is)."""
    inputs = {i.name: i for i in model.graph.input}
    for name, dims in input_shapes.items():
        if name not in inputs:
            from camcore.errors import InputError

            raise InputError(
                f"input_shapes names {name!r}, which is not a model input; inputs are "
                f"{sorted(inputs)}"
            )
        shape = inputs[name].type.tensor_type.shape
        if len(shape.dim) not in (0, len(dims)):
            from camcore.errors import InputError

            raise InputError(
                f"input_shapes[{name!r}] has {len(dims)} dims but the model input has "
                f"{len(shape.dim)}"
            )
        if len(shape.dim) == 0:
            shape.dim.extend(onnx.TensorShapeProto.Dimension() for _ in dims)
        for d, v in zip(shape.dim, dims):
            if v is None:
                continue
            if isinstance(v, int):
                d.ClearField("dim_param")
                d.dim_value = v
            else:
                d.ClearField("dim_value")
                d.dim_param = v


def infer_tensor_info(model: onnx.ModelProto) -> dict[str, TensorInfo]:
    """Type and shape of every tensor the model names (inputs, initializers, node outputs)."""
    light = _lightweight_copy(model)
    try:
        inferred = shape_inference.infer_shapes(light, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - a failed inference leaves us with declared types only
        inferred = light
    info: dict[str, TensorInfo] = {}
    for init in model.graph.initializer:
        info[init.name] = TensorInfo(init.data_type, tuple(int(d) for d in init.dims))
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
