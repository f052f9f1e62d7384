"""Gradient rules of normalization layers at inference. ``g`` is the gradient of ``Y``.

Instance and layer normalization standardize X over a set of axes A with its own
statistics, so their gradient flows through the mean and variance too. With
x̂ = (X − μ)·r, r = 1/√(σ² + ε), γ the scale and ⟨·⟩ the mean over A:

    dX = r·(ĝ − ⟨ĝ⟩ − x̂·⟨ĝ·x̂⟩),   ĝ = g·γ
"""

from __future__ import annotations

from collections.abc import Sequence

from camcore.errors import UnsupportedOpError
from camcore.graph.registry import GradContext, register

Grads = list[str | None]


def _as_type_of(ctx: GradContext, t: str, like: str) -> str:
    return t if ctx.elem_type(t) == ctx.elem_type(like) else ctx.b.Cast(t, ctx.elem_type(like))


def _channel(ctx: GradContext, v: str, x: str) -> str:
    """A per-channel [C] vector shaped [C, 1, ..., 1] to broadcast on axis 1 of ``x``."""
    v = _as_type_of(ctx, v, x)
    return ctx.b.Reshape(v, ctx.b.ints([-1] + [1] * (ctx.rank(x) - 2)))


def _standardize(ctx: GradContext, x: str, axes: Sequence[int], eps: float) -> tuple[str, str, str]:
    """(X − μ, r, x̂) over ``axes``, computed in X's type."""
    b = ctx.b
    xc = b.Sub(x, b.ReduceMean(x, axes))
    var = b.ReduceMean(b.Mul(xc, xc), axes)
    r = b.op("Reciprocal", b.op("Sqrt", b.Add(var, ctx.scalar(eps, x))))
    return xc, r, b.Mul(xc, r)


def _standardize_grad(ctx: GradContext, gh: str, r: str, xhat: str, axes: Sequence[int]) -> str:
    """dX = r·(ĝ − ⟨ĝ⟩ − x̂·⟨ĝ·x̂⟩)."""
    b = ctx.b
    centered = b.Sub(gh, b.ReduceMean(gh, axes))
    inner = b.Sub(centered, b.Mul(xhat, b.ReduceMean(b.Mul(gh, xhat), axes)))
    return b.Mul(r, inner)


@register("BatchNormalization")
def batch_norm(ctx: GradContext) -> Grads:
    """Inference mode, running statistics: dX = g·γ/√(var + ε) per channel (axis 1)."""
    extra_outputs = sum(map(bool, ctx.outputs)) > 1  # before opset 14: training mode
    training = int(ctx.attr("training_mode", 0)) or (ctx.opset < 14 and extra_outputs)
    if training:
        raise UnsupportedOpError(
            f"no gradient rule for BatchNormalization node {ctx.node.name!r} in training "
            "mode; export the model in eval mode (model.eval())"
        )
    b, (x, scale, _, _, var) = ctx.b, ctx.inputs[:5]
    eps = ctx.scalar(float(ctx.attr("epsilon", 1e-5)), var)
    if ctx.elem_type(scale) != ctx.elem_type(var):
        scale = b.Cast(scale, ctx.elem_type(var))
    coef = b.Div(scale, b.op("Sqrt", b.Add(var, eps)))
    return [b.Mul(ctx.grad_output(), _channel(ctx, coef, x)), None, None, None, None]


@register("InstanceNormalization")
def instance_norm(ctx: GradContext) -> Grads:
    """Y = γ_c·x̂ + β_c with statistics per (n, c) over the spatial dims: see the module doc."""
    b, (x, scale, _) = ctx.b, ctx.inputs
    axes = list(range(2, ctx.rank(x)))
    _, r, xhat = _standardize(ctx, x, axes, float(ctx.attr("epsilon", 1e-5)))
    gh = b.Mul(ctx.grad_output(), _channel(ctx, scale, x))
    return [_standardize_grad(ctx, gh, r, xhat, axes), None, None]


@register("LayerNormalization")
def layer_norm(ctx: GradContext) -> Grads:
    """Y = γ·x̂ + β over the axes from ``axis`` on (see the module doc). Gradients of
    the optional outputs Mean (∂μ/∂X = 1/M) and InvStdDev (∂r/∂X = −r³·(X − μ)/M)
    add in."""
    b, x = ctx.b, ctx.inputs[0]
    rank = ctx.rank(x)
    axes = list(range(int(ctx.attr("axis", -1)) % rank, rank))
    xc, r, xhat = _standardize(ctx, x, axes, float(ctx.attr("epsilon", 1e-5)))
    gh = b.Mul(ctx.grad_output(), _as_type_of(ctx, ctx.inputs[1], x))
    dx = _standardize_grad(ctx, gh, r, xhat, axes)
    extra = [ctx.grad_outputs[i] if i < len(ctx.grad_outputs) else None for i in (1, 2)]
    if any(e is not None for e in extra):
        count = 1
        for d in ctx.static_shape(x, axes):
            count *= d
        inv_m = ctx.scalar(1.0 / count, x)
        g_mean, g_rstd = (None if e is None else _as_type_of(ctx, e, x) for e in extra)
        if g_mean is not None:
            dx = b.Add(dx, b.Mul(g_mean, inv_m))
        if g_rstd is not None:
            r3 = b.Mul(b.Mul(r, r), r)
            dx = b.Sub(dx, b.Mul(b.Mul(g_rstd, r3), b.Mul(xc, inv_m)))
    return [dx, None, None]
