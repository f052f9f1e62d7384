"""Gradient rules of quantization: the straight-through estimator (STE).

A QuantizeLinear -> DequantizeLinear pair computes ``Y = (clamp(round(X / s) + zp) - zp) · s``,
a step function whose derivative is zero almost everywhere. camcore explains the quantized
model itself with a straight-through gradient: the pair is taken as the identity,
``dX = dY``, as quantization-aware training does. The gradient of the integer tensor between
the two is that float gradient unchanged. Scales, zero points and quantized weights are
constants: they get no gradient.
"""

from __future__ import annotations

from camcore.graph.registry import GradContext, register

Grads = list[str | None]


@register("QuantizeLinear", "DequantizeLinear")
def straight_through(ctx: GradContext) -> Grads:
    """dX = g (per-tensor, per-axis and blocked alike); none for the scale and zero point."""
    return [ctx.grad_output(), *[None] * (len(ctx.inputs) - 1)]
