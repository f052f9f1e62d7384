"""Helpers shared by several gradient rules."""

from __future__ import annotations

from camcore.errors import ShapeError
from camcore.graph.registry import GradContext


def unbroadcast(ctx: GradContext, grad: str, operand: str, result: str) -> str:
    """Sum ``grad`` (shaped like ``result``) down to the shape of a broadcast ``operand``.

    Static shapes give a fixed ReduceSum; symbolic dims that may or may not be 1 get
    axes computed at run time (opset >= 13).
    """
    b = ctx.b
    in_shape = ctx.shape(operand)
    out_shape = ctx.shape(result)
    lead = len(out_shape) - len(in_shape)
    aligned = [None] * lead + list(in_shape)
    fixed: list[int] = list(range(lead))
    dynamic = False
    for axis in range(lead, len(out_shape)):
        d_in, d_out = aligned[axis], out_shape[axis]
        if d_in == 1 and d_out != 1:
            fixed.append(axis)
        elif d_in == d_out or d_out == 1 or (isinstance(d_in, int) and d_in != 1):
            continue
        else:  # unknown whether this dim was broadcast
            dynamic = True
    if dynamic:
        return unbroadcast_dynamic(ctx, grad, operand, lead)
    if not fixed:
        return grad
    g = b.ReduceSum(grad, fixed, keepdims=True)
    if lead:
        g = b.Squeeze(g, list(range(lead)))
    return g


def unbroadcast_dynamic(ctx: GradContext, grad: str, operand: str, lead: int) -> str:
    """Reduce over the axes where the operand has size 1, decided at run time.

    From opset 14, with ``d`` the gradient's dims (after the ``lead`` axes are summed) and ``n``
    the operand's, each axis is split in two, ``d = n · (d / n)``: a Reshape (``allowzero``, so
    empty axes stay empty) to the interleaved shape ``(n₀, d₀/n₀, n₁, d₁/n₁, ...)`` and a
    ReduceSum over the odd axes. A broadcast axis (n = 1) sums its d entries, any other (n = d)
    a single one. Those axes are static, so every runtime reads it; at opset 13 (no
    ``allowzero``) the axes are computed with NonZero, which OpenVINO's ONNX frontend does not
    take (it needs a ReduceSum axes tensor of static length).
    """
    b = ctx.b
    if b.opset < 13:
        raise ShapeError(
            f"the gradient of {ctx.node.op_type} node {ctx.node.name!r} broadcasts over "
            f"dims of {operand!r} that are unknown at opset {b.opset}; fix the input shapes "
            "(augment(..., input_shapes=...) or --size HxW)"
        )
    g = grad
    if lead:
        g = b.ReduceSum(g, list(range(lead)), keepdims=False)
    rank = ctx.rank(operand)
    if rank == 0:
        return g
    in_shape = b.Shape(operand)
    g_shape = b.Shape(g)
    if b.opset >= 14:
        ratio = b.Div(g_shape, b.op("Max", in_shape, b.ints([1])))  # an empty axis: 0 / 1
        split = b.Reshape(b.Concat([b.Unsqueeze(in_shape, [1]), b.Unsqueeze(ratio, [1])], axis=1), b.ints([2 * rank]))
        return b.ReduceSum(b.op("Reshape", g, split, allowzero=1), list(range(1, 2 * rank, 2)), keepdims=False)
    is_one = b.op("Equal", in_shape, b.ints([1]))
    differs = b.op("Not", b.op("Equal", in_shape, g_shape))
    axes = b.op("NonZero", b.op("And", is_one, differs))
    axes = b.Reshape(axes, b.ints([-1]))
    return b.ReduceSumDynamic(g, axes, keepdims=True)


def const_ints(ctx: GradContext, i: int) -> list[int]:
    """Input ``i`` of the node as a list of ints; it must be a constant (initializer or
    Constant node), else a ShapeError names the node and the input."""
    name = ctx.inputs[i] if i < len(ctx.inputs) else ""
    value = ctx.const_value(name) if name else None
    if value is None:
        raise ShapeError(
            f"the gradient of {ctx.node.op_type} node {ctx.node.name!r} needs input {i} "
            f"({name!r}) as a constant, but it is computed at run time; export the model "
            "with constant shapes (e.g. onnxsim, or a fixed input size)"
        )
    return [int(v) for v in value.reshape(-1)]
