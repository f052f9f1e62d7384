"""Quantized (QDQ) models: which tensor of a QuantizeLinear -> DequantizeLinear pair is a layer.

onnxruntime's ``quantize_static`` (QDQ format) wraps each activation ``X`` in a pair
``X -> QuantizeLinear -> DequantizeLinear -> Y``; the next op reads ``Y``. The pair is one
layer, not two: ``Y`` is listed only where it holds values ``X`` lacks. That is when the
quantizer folded a Relu or Clip into the pair (its default): it removes the activation, gives
its name to the producer's output (a Conv writing ``relu2`` holds the pre-activation) and
lets the quantized range, which starts at 0, clamp. Otherwise ``Y`` is a rounded copy of
``X`` and ``X``, the tensor of the original op, is listed. The quantized integers are never
layers. Gradients go straight through the pair (``rules/quantize.py``), so ``X`` and ``Y``
get the same gradient.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx

from camcore.graph.autodiff import QUANTIZED_TYPES, backward_reach, constant_values, forward_reach, qoperator_error
from camcore.graph.shapes import TensorInfo

_T = onnx.TensorProto
#: the lowest value of each quantized type: a zero point there makes the range start at 0
_LOWEST: dict[int, int] = {_T.UINT8: 0, _T.UINT16: 0, _T.UINT4: 0, _T.INT8: -128, _T.INT16: -32768, _T.INT4: -8}
#: ops writing signed pre-activations, into whose Q/DQ pair the quantizer folds a Relu or Clip
_SIGNED = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "BatchNormalization"})
#: the activations it folds; where one still reads the pair, nothing was folded
_ACTIVATIONS = frozenset({"Relu", "Clip"})


def _clamps_at_zero(q: onnx.NodeProto, constants: dict[str, np.ndarray], info: dict[str, TensorInfo]) -> bool:
    """Whether QuantizeLinear ``q`` maps every negative input to the real value 0."""
    ti = info.get(q.output[0])
    lowest = _LOWEST.get(ti.elem_type if ti is not None else _T.UINT8)
    zp_name = q.input[2] if len(q.input) > 2 and q.input[2] else None
    zp = np.zeros(()) if zp_name is None else constants.get(zp_name)
    return lowest is not None and zp is not None and bool(np.all(zp == lowest))


def hidden_layers(graph: onnx.GraphProto, info: dict[str, TensorInfo]) -> set[str]:
    """The tensors of Q/DQ pairs that layer listings skip: ``Y`` where it copies ``X``, ``X``
    where a Relu or Clip was folded into the pair: ``X`` is written by an op of signed outputs
    (Conv, Gemm, MatMul, Add, ...), the quantized range starts at 0 and no Relu or Clip reads ``Y``."""
    producer = {o: n for n in graph.node for o in n.output if o}
    readers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for i in node.input:
            readers[i].append(node)
    constants = constant_values(graph)
    hidden: set[str] = set()
    for q in graph.node:
        if q.op_type != "QuantizeLinear" or q.domain not in ("", "ai.onnx"):
            continue
        x, made_by = q.input[0], producer.get(q.input[0])
        signed = made_by is not None and made_by.op_type in _SIGNED and _clamps_at_zero(q, constants, info)
        for dq in readers[q.output[0]]:
            if dq.op_type == "DequantizeLinear" and dq.domain in ("", "ai.onnx"):
                kept = any(r.op_type in _ACTIVATIONS for r in readers[dq.output[0]])
                hidden.add(x if signed and not kept else dq.output[0])
    return hidden


def refuse_qoperator(graph: onnx.GraphProto, info: dict[str, TensorInfo], inputs: list[str], output: str) -> None:
    """Raise when an op between ``inputs`` and ``output`` computes on quantized integers
    (QOperator format: QLinearConv, QGemm, ...), which no gradient goes through."""
    nodes = list(graph.node)
    fwd, bwd = forward_reach(nodes, inputs, info), backward_reach(nodes, [output])
    quantized = {t for t in fwd if t in info and info[t].elem_type in QUANTIZED_TYPES}
    for node in nodes:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") or not any(o in bwd for o in node.output):
            continue
        if any(i in quantized for i in node.input):
            where = f"on the way to {output!r}, so no float activation can be explained"
            raise qoperator_error(node, where)
