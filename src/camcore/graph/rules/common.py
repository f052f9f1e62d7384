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
    """Reduce over the axes where the operand has size 1, decided at run time."""
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
    in_shape = b.Shape(operand)
    g_shape = b.Shape(g)
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
