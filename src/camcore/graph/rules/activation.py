"""Gradient rules of activation functions. ``g`` is the gradient of the output ``Y``."""

from __future__ import annotations

import math

from camcore.graph.registry import GradContext, register

Grads = list[str | None]


@register("Relu")
def relu(ctx: GradContext) -> Grads:
    """dX = g·[X > 0]. With ``options['guided_relu']`` (guided backprop): g·[X > 0]·[g > 0]."""
    b, x, g = ctx.b, ctx.inputs[0], ctx.grad_output()
    zero = ctx.scalar(0.0, x)
    cond = b.op("Greater", x, zero)
    if ctx.options.get("guided_relu"):
        cond = b.op("And", cond, b.op("Greater", g, zero))
    return [b.Where(cond, g, zero)]


@register("LeakyRelu")
def leaky_relu(ctx: GradContext) -> Grads:
    """dX = g if X > 0 else alpha·g."""
    b, x, g = ctx.b, ctx.inputs[0], ctx.grad_output()
    alpha = ctx.scalar(float(ctx.attr("alpha", 0.01)), x)
    return [b.Where(b.op("Greater", x, ctx.scalar(0.0, x)), g, b.Mul(g, alpha))]


@register("PRelu")
def prelu(ctx: GradContext) -> Grads:
    """dX = g if X > 0 else slope·g (the slope is a weight: no gradient)."""
    b, (x, slope), g = ctx.b, ctx.inputs, ctx.grad_output()
    return [b.Where(b.op("Greater", x, ctx.scalar(0.0, x)), g, b.Mul(g, slope)), None]


@register("Elu")
def elu(ctx: GradContext) -> Grads:
    """dX = g if X > 0 else g·(Y + alpha)."""
    b, x, y, g = ctx.b, ctx.inputs[0], ctx.outputs[0], ctx.grad_output()
    alpha = ctx.scalar(float(ctx.attr("alpha", 1.0)), x)
    return [b.Where(b.op("Greater", x, ctx.scalar(0.0, x)), g, b.Mul(g, b.Add(y, alpha)))]


@register("Sigmoid")
def sigmoid(ctx: GradContext) -> Grads:
    """dX = g·Y·(1 − Y)."""
    b, y = ctx.b, ctx.outputs[0]
    return [b.Mul(ctx.grad_output(), b.Mul(y, b.Sub(ctx.scalar(1.0, y), y)))]


@register("Tanh")
def tanh(ctx: GradContext) -> Grads:
    """dX = g·(1 − Y²)."""
    b, y = ctx.b, ctx.outputs[0]
    return [b.Mul(ctx.grad_output(), b.Sub(ctx.scalar(1.0, y), b.Mul(y, y)))]


@register("Softplus")
def softplus(ctx: GradContext) -> Grads:
    """dX = g·sigmoid(X)."""
    return [ctx.b.Mul(ctx.grad_output(), ctx.b.op("Sigmoid", ctx.inputs[0]))]


@register("Clip")
def clip(ctx: GradContext) -> Grads:
    """dX = g·[min ≤ X ≤ max] (bounds are attributes before opset 11, inputs after)."""
    b, x, g = ctx.b, ctx.inputs[0], ctx.grad_output()
    if ctx.opset < 11:
        lo = ctx.attr("min")
        hi = ctx.attr("max")
        lo_name = ctx.scalar(lo, x) if lo is not None else None
        hi_name = ctx.scalar(hi, x) if hi is not None else None
    else:
        lo_name = ctx.inputs[1] if len(ctx.inputs) > 1 and ctx.inputs[1] else None
        hi_name = ctx.inputs[2] if len(ctx.inputs) > 2 and ctx.inputs[2] else None
    conds = []
    if lo_name is not None:
        conds.append(b.op("GreaterOrEqual", x, lo_name) if ctx.opset >= 12 else b.op("Not", b.op("Less", x, lo_name)))
    if hi_name is not None:
        conds.append(b.op("LessOrEqual", x, hi_name) if ctx.opset >= 12 else b.op("Not", b.op("Greater", x, hi_name)))
    if not conds:
        return [g, None, None]
    cond = conds[0] if len(conds) == 1 else b.op("And", *conds)
    return [b.Where(cond, g, ctx.scalar(0.0, x)), None, None]


@register("HardSigmoid")
def hard_sigmoid(ctx: GradContext) -> Grads:
    """Y = clip(alpha·X + beta, 0, 1): dX = alpha·g where 0 < alpha·X + beta < 1."""
    b, x = ctx.b, ctx.inputs[0]
    alpha = ctx.scalar(float(ctx.attr("alpha", 0.2)), x)
    z = b.Add(b.Mul(x, alpha), ctx.scalar(float(ctx.attr("beta", 0.5)), x))
    inside = b.op("And", b.op("Greater", z, ctx.scalar(0.0, x)), b.op("Less", z, ctx.scalar(1.0, x)))
    return [b.Where(inside, b.Mul(ctx.grad_output(), alpha), ctx.scalar(0.0, x))]


@register("HardSwish")
def hard_swish(ctx: GradContext) -> Grads:
    """Y = X·clip(X/6 + 1/2, 0, 1): dX = g·(X/3 + 1/2) on (−3, 3), g above 3, 0 below −3."""
    b, x, g = ctx.b, ctx.inputs[0], ctx.grad_output()
    mid = b.Mul(g, b.Add(b.Mul(x, ctx.scalar(1.0 / 3.0, x)), ctx.scalar(0.5, x)))
    upper = b.Where(b.op("Greater", x, ctx.scalar(3.0, x)), g, mid)
    return [b.Where(b.op("Less", x, ctx.scalar(-3.0, x)), ctx.scalar(0.0, x), upper)]


@register("Gelu")
def gelu(ctx: GradContext) -> Grads:
    """Exact: dX = g·(Φ(X) + X·φ(X)); tanh approximation: its exact derivative."""
    b, x, g = ctx.b, ctx.inputs[0], ctx.grad_output()

    def c(v: float) -> str:
        return ctx.scalar(v, x)

    if ctx.attr("approximate", "none") in ("tanh", b"tanh"):
        k = math.sqrt(2.0 / math.pi)
        x2 = b.Mul(x, x)
        inner = b.Mul(c(k), b.Add(x, b.Mul(c(0.044715), b.Mul(x2, x))))
        t = b.op("Tanh", inner)
        dinner = b.Mul(c(k), b.Add(c(1.0), b.Mul(c(3 * 0.044715), x2)))
        left = b.Mul(c(0.5), b.Add(c(1.0), t))
        right = b.Mul(b.Mul(c(0.5), x), b.Mul(b.Sub(c(1.0), b.Mul(t, t)), dinner))
        return [b.Mul(g, b.Add(left, right))]
    cdf = b.Mul(c(0.5), b.Add(c(1.0), b.op("Erf", b.Mul(x, c(1.0 / math.sqrt(2.0))))))
    pdf = b.Mul(c(1.0 / math.sqrt(2.0 * math.pi)), b.op("Exp", b.Mul(c(-0.5), b.Mul(x, x))))
    return [b.Mul(g, b.Add(cdf, b.Mul(x, pdf)))]


def _softmax_axes(ctx: GradContext) -> list[int]:
    rank = ctx.rank(ctx.inputs[0])
    default = -1 if ctx.opset >= 13 else 1
    axis = int(ctx.attr("axis", default)) % rank
    # before opset 13 the input is coerced to 2-D at `axis`: the softmax spans axis..rank-1
    return [axis] if ctx.opset >= 13 else list(range(axis, rank))


@register("Softmax")
def softmax(ctx: GradContext) -> Grads:
    """dX = Y·(g − Σ_axis g·Y)."""
    b, y, g = ctx.b, ctx.outputs[0], ctx.grad_output()
    s = b.ReduceSum(b.Mul(g, y), _softmax_axes(ctx), keepdims=True)
    return [b.Mul(y, b.Sub(g, s))]


@register("LogSoftmax")
def log_softmax(ctx: GradContext) -> Grads:
    """dX = g − exp(Y)·Σ_axis g."""
    b, y, g = ctx.b, ctx.outputs[0], ctx.grad_output()
    s = b.ReduceSum(g, _softmax_axes(ctx), keepdims=True)
    return [b.Sub(g, b.Mul(b.op("Exp", y), s))]
