"""Layouts read off the graph: which axes of an image input hold the channels.

A 4-D image input is NCHW unless the graph shows otherwise: the input reaches a
``Transpose`` with ``perm=[0, 3, 1, 2]`` (NHWC to NCHW, as tf2onnx and jax2onnx emit it)
before any ``Conv``, through elementwise preprocessing only, or a ``Conv`` reads the input
after nothing but elementwise ops (NCHW). With no such evidence the static shape decides:
a last axis of 1, 3 or 4 after two axes larger than 4 means NHWC.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Literal

import onnx

from camcore.graph.shapes import TensorInfo

__all__ = ["image_layout"]

#: ops that keep the axes of their first input as they are (preprocessing before the first conv)
_ELEMENTWISE = frozenset({"Cast", "Sub", "Div", "Mul", "Add", "Identity", "Clip", "Relu", "Sigmoid", "Tanh", "Neg",
                          "Abs", "Sqrt", "Pow", "Max", "Min", "Exp", "Log", "Erf", "LeakyRelu", "HardSigmoid",
                          "HardSwish", "Elu", "Softplus", "QuantizeLinear", "DequantizeLinear"})  # fmt: skip
#: ops that read their input as (N, C, *spatial)
_CHANNELS_FIRST = frozenset({"Conv", "ConvInteger", "QLinearConv", "ConvTranspose", "MaxPool", "AveragePool",
                             "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "BatchNormalization",
                             "InstanceNormalization", "LRN", "DepthToSpace", "SpaceToDepth"})  # fmt: skip
_CHANNELS = (1, 3, 4)


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
