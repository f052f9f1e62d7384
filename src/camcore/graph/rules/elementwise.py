"""Gradient rules of elementwise arithmetic, with numpy-style broadcasting.

Notation: ``g`` is the gradient of the output ``Y``; ``ub`` sums a gradient down to
the shape of a broadcast operand.
"""

from __future__ import annotations

import math

from camcore.graph.registry import GradContext, register
from camcore.graph.rules.common import unbroadcast

Grads = list[str | None]


def _ub(ctx: GradContext, grad: str, i: int) -> str | None:
    if not ctx.needs_grad(i):
        return None
    return unbroadcast(ctx, grad, ctx.inputs[i], ctx.outputs[0])


@register("Add")
def add(ctx: GradContext) -> Grads:
    """dA = ub(g), dB = ub(g)."""
    g = ctx.grad_output()
    return [_ub(ctx, g, 0), _ub(ctx, g, 1)]


@register("Sub")
def sub(ctx: GradContext) -> Grads:
    """dA = ub(g), dB = -ub(g)."""
    g = ctx.grad_output()
    return [_ub(ctx, g, 0), _ub(ctx, ctx.b.Neg(g), 1) if ctx.needs_grad(1) else None]


@register("Mul")
def mul(ctx: GradContext) -> Grads:
    """dA = ub(g·B), dB = ub(g·A)."""
    g, (a, bb) = ctx.grad_output(), ctx.inputs
    return [
        _ub(ctx, ctx.b.Mul(g, bb), 0) if ctx.needs_grad(0) else None,
        _ub(ctx, ctx.b.Mul(g, a), 1) if ctx.needs_grad(1) else None,
    ]


@register("Div")
def div(ctx: GradContext) -> Grads:
    """dA = ub(g / B), dB = ub(-g·Y / B)."""
    b, g, (_, den), y = ctx.b, ctx.grad_output(), ctx.inputs, ctx.outputs[0]
    return [
        _ub(ctx, b.Div(g, den), 0) if ctx.needs_grad(0) else None,
        _ub(ctx, b.Neg(b.Div(b.Mul(g, y), den)), 1) if ctx.needs_grad(1) else None,
    ]


@register("Pow")
def pow_(ctx: GradContext) -> Grads:
    """Y = A^B: dA = ub(g·B·A^(B-1)), dB = ub(g·Y·log A)."""
    b, g, (base, expo), y = ctx.b, ctx.grad_output(), ctx.inputs, ctx.outputs[0]
    grads: Grads = [None, None]
    if ctx.needs_grad(0):
        ftype = ctx.elem_type(base)
        e = expo if ctx.elem_type(expo) == ftype else b.Cast(expo, ftype)
        d = b.Mul(e, b.op("Pow", base, b.Sub(e, ctx.scalar(1.0, base))))
        grads[0] = _ub(ctx, b.Mul(g, d), 0)
    if ctx.needs_grad(1):
        grads[1] = _ub(ctx, b.Mul(b.Mul(g, y), b.op("Log", base)), 1)
    return grads


@register("Neg")
def neg(ctx: GradContext) -> Grads:
    """dA = -g."""
    return [ctx.b.Neg(ctx.grad_output())]


@register("Abs")
def abs_(ctx: GradContext) -> Grads:
    """dA = g·sign(A)."""
    return [ctx.b.Mul(ctx.grad_output(), ctx.b.op("Sign", ctx.inputs[0]))]


@register("Sign")
def sign(ctx: GradContext) -> Grads:
    """Piecewise constant: dA = 0 (emitted by the Abs rule; needed to differentiate gradient graphs)."""
    return [None]


@register("Reciprocal")
def reciprocal(ctx: GradContext) -> Grads:
    """Y = 1/A: dA = -g·Y²."""
    y = ctx.outputs[0]
    return [ctx.b.Neg(ctx.b.Mul(ctx.grad_output(), ctx.b.Mul(y, y)))]


@register("Exp")
def exp(ctx: GradContext) -> Grads:
    """dA = g·Y."""
    return [ctx.b.Mul(ctx.grad_output(), ctx.outputs[0])]


@register("Log")
def log(ctx: GradContext) -> Grads:
    """dA = g / A."""
    return [ctx.b.Div(ctx.grad_output(), ctx.inputs[0])]


@register("Sqrt")
def sqrt(ctx: GradContext) -> Grads:
    """dA = g / (2·Y)."""
    y = ctx.outputs[0]
    return [ctx.b.Div(ctx.b.Mul(ctx.grad_output(), ctx.scalar(0.5, y)), y)]


@register("Erf")
def erf(ctx: GradContext) -> Grads:
    """dA = g · 2/√π · exp(-A²)."""
    b, a = ctx.b, ctx.inputs[0]
    d = b.Mul(ctx.scalar(2.0 / math.sqrt(math.pi), a), b.op("Exp", b.Neg(b.Mul(a, a))))
    return [b.Mul(ctx.grad_output(), d)]


@register("Identity", "Dropout")
def identity(ctx: GradContext) -> Grads:
    """dA = g (Dropout is the identity at inference)."""
    return [ctx.grad_output(), None, None]


@register("Cast")
def cast(ctx: GradContext) -> Grads:
    """dA = cast(g) back to A's float type."""
    return [ctx.b.Cast(ctx.grad_output(), ctx.elem_type(ctx.inputs[0]))]


@register("Where")
def where(ctx: GradContext) -> Grads:
    """dX = ub(where(C, g, 0)), dY = ub(where(C, 0, g))."""
    b, g, (cond, x, _) = ctx.b, ctx.grad_output(), ctx.inputs
    zero = ctx.scalar(0.0, x)
    return [
        None,
        _ub(ctx, b.Where(cond, g, zero), 1) if ctx.needs_grad(1) else None,
        _ub(ctx, b.Where(cond, zero, g), 2) if ctx.needs_grad(2) else None,
    ]


@register("Sum")
def sum_(ctx: GradContext) -> Grads:
    """Variadic sum: each input gets ub(g)."""
    g = ctx.grad_output()
    return [_ub(ctx, g, i) for i in range(len(ctx.inputs))]


@register("Mean")
def mean(ctx: GradContext) -> Grads:
    """Variadic mean: each input gets ub(g / n)."""
    n = len(ctx.inputs)
    g = ctx.b.Mul(ctx.grad_output(), ctx.scalar(1.0 / n, ctx.outputs[0]))
    return [_ub(ctx, g, i) for i in range(n)]


@register("Min", "Max")
def min_max(ctx: GradContext) -> Grads:
    """The gradient goes to the first input equal to the output (ties: first wins)."""
    b, g, y = ctx.b, ctx.grad_output(), ctx.outputs[0]
    zero = ctx.scalar(0.0, y)
    taken: str | None = None
    grads: Grads = []
    for i, x in enumerate(ctx.inputs):
        hit = b.op("Equal", x, y)
        mine = hit if taken is None else b.op("And", hit, b.op("Not", taken))
        taken = hit if taken is None else b.op("Or", taken, hit)
        grads.append(_ub(ctx, b.Where(mine, g, zero), i) if ctx.needs_grad(i) else None)
    return grads
