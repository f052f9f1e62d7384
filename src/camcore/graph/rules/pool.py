"""Gradient rules of pooling and reductions, in ops every execution provider runs.

Windowed pools route ``g`` back with one ConvTranspose over a (N·C, K, *out) stack
(K = kernel offsets, batch and channels folded so no channel count is baked in): each
offset's share lands at ``o·s + kk·d − pb``. Spatial sizes must be static (they fix the
pads, output paddings and the divisor maps); the batch and channels may be symbolic.
Notation: ``g`` is the gradient of the output ``Y``, ``s``/``d``/``k`` strides,
dilations and kernel, ``ek = (k−1)·d + 1``, ``pb`` the begin pads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
from onnx import helper

from camcore.graph.registry import GradContext, register
from camcore.graph.rules.common import const_ints

Grads = list[str | None]


@dataclass
class _Window:
    size: list[int]  # input spatial size
    out: list[int]  # output spatial size
    k: list[int]
    s: list[int]
    d: list[int]
    pb: list[int]
    pe: list[int]  # end pads as the node states them (auto_pad resolved)


def _window(ctx: GradContext) -> _Window:
    """The pool's geometry; the output size follows the spec (and onnxruntime): with
    ceil_mode a window that would start in the end padding is dropped (ONNX shape
    inference keeps it, so the inferred output shape is not trusted)."""
    x = ctx.inputs[0]
    size = ctx.static_shape(x, range(2, ctx.rank(x)))
    nd, k = len(size), list(ctx.attr("kernel_shape"))
    s, d = list(ctx.attr("strides", [1] * nd)), list(ctx.attr("dilations", [1] * nd))
    ek = [(ki - 1) * di + 1 for ki, di in zip(k, d)]
    auto_pad = ctx.attr("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = [-(-n // si) for n, si in zip(size, s)]
        total = [max(0, (o - 1) * si + e - n) for o, si, e, n in zip(out, s, ek, size)]
        pb = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total]
        return _Window(size, out, k, s, d, pb, [t - p for t, p in zip(total, pb)])
    pads = list(ctx.attr("pads", [0] * 2 * nd)) if auto_pad != "VALID" else [0] * 2 * nd
    out = []
    for n, e, si, p, q in zip(size, ek, s, pads[:nd], pads[nd:]):
        span = n + p + q - e
        o = (-(-span // si) if ctx.attr("ceil_mode", 0) else span // si) + 1
        out.append(o - 1 if (o - 1) * si >= n + p else o)
    return _Window(size, out, k, s, d, pads[:nd], pads[nd:])


def _fold(ctx: GradContext, t: str, spatial: list[int]) -> str:
    """(N, C, *spatial) -> (N·C, 1, *spatial)."""
    return ctx.b.Reshape(t, ctx.b.ints([-1, 1, *spatial]))


def _scatter(ctx: GradContext, parts: str, kernel: np.ndarray, w: _Window) -> str:
    """ConvTranspose of ``parts`` (N·C, K, *out) by ``kernel`` (K, 1, *k) back to X's shape."""
    ek = [(ki - 1) * di + 1 for ki, di in zip(w.k, w.d)]
    reach = [(o - 1) * si + e for o, si, e in zip(w.out, w.s, ek)]  # padded length the windows read
    pe = [max(0, r - n - p) for r, n, p in zip(reach, w.size, w.pb)]
    extra = [n + p + q - r for n, p, q, r in zip(w.size, w.pb, pe, reach)]
    dx = ctx.b.op(
        "ConvTranspose",
        parts,
        ctx.b.const(kernel),
        strides=w.s,
        dilations=w.d,
        pads=w.pb + pe,
        output_padding=extra,
        kernel_shape=w.k,
    )
    return ctx.b.Reshape(dx, ctx.b.Shape(ctx.inputs[0]))


def _np_type(ctx: GradContext, tensor: str) -> np.dtype:
    return np.dtype(helper.tensor_dtype_to_np_dtype(ctx.elem_type(tensor)))


def _window_counts(w: _Window, include_pad: bool) -> np.ndarray:
    """Elements of each window inside X (or inside X plus its pads): a separable product."""
    per_axis = []
    for n, o, k, s, d, pb, pe in zip(w.size, w.out, w.k, w.s, w.d, w.pb, w.pe):
        lo, hi = (-pb, n + pe) if include_pad else (0, n)
        pos = np.arange(o)[:, None] * s - pb + np.arange(k)[None, :] * d
        per_axis.append(((pos >= lo) & (pos < hi)).sum(axis=1))
    counts = per_axis[0]
    for c in per_axis[1:]:
        counts = np.multiply.outer(counts, c)
    return counts


@register("AveragePool")
def average_pool(ctx: GradContext) -> Grads:
    """dX = ConvTranspose(g / count, ones(1, 1, *k)) with the pool's s, d, pads; ``count``
    is the divisor of each window (k area, or the elements inside X when
    count_include_pad = 0, or those inside X plus pads for ceil_mode windows), a
    constant map built with numpy from the static sizes."""
    x, w = ctx.inputs[0], _window(ctx)
    dtype = _np_type(ctx, x)
    counts = _window_counts(w, bool(ctx.attr("count_include_pad", 0))).astype(dtype)
    inv = np.reshape(1.0 / counts, (1, 1, *w.out)).astype(dtype)
    scaled = ctx.b.Mul(_fold(ctx, ctx.grad_output(), w.out), ctx.b.const(inv))
    return [_scatter(ctx, scaled, np.ones((1, 1, *w.k), dtype), w)]


@register("MaxPool")
def max_pool(ctx: GradContext) -> Grads:
    """Each output's g goes to the first window element (row-major offset order, like
    torch and onnxruntime's argmax) that equals Y. Construction: pad X with −inf, take
    one strided Slice per kernel offset kk (the element each window reads at kk), stack
    them to (N·C, K, *out), pick the first offset equal to Y (ArgMax over K of the
    Equal mask), keep g at that offset only (Where of a one-hot), and scatter the K
    planes back with one ConvTranspose whose kernel is one-hot per offset. Indices
    (output 1) carries no gradient."""
    b, x, w = ctx.b, ctx.inputs[0], _window(ctx)
    dtype, nd = _np_type(ctx, x), len(w.size)
    ek = [(ki - 1) * di + 1 for ki, di in zip(w.k, w.d)]
    pe = [max(0, (o - 1) * si + e - n - p) for o, si, e, n, p in zip(w.out, w.s, ek, w.size, w.pb)]
    xp = b.Pad(_fold(ctx, x, w.size), [0, 0, *w.pb, 0, 0, *pe], -np.inf, ctx.elem_type(x))
    offsets = list(np.ndindex(*w.k))
    planes = [
        b.Slice(
            xp,
            [kk[i] * w.d[i] for i in range(nd)],
            [kk[i] * w.d[i] + (w.out[i] - 1) * w.s[i] + 1 for i in range(nd)],
            list(range(2, 2 + nd)),
            w.s,
        )
        for kk in offsets
    ]
    stack = b.Concat(planes, axis=1) if len(planes) > 1 else planes[0]
    hit = b.Cast(b.op("Equal", stack, _fold(ctx, ctx.outputs[0], w.out)), 1)
    first = b.op("ArgMax", hit, axis=1, keepdims=1)
    onehot = b.op("Equal", first, b.const(np.arange(len(offsets)).reshape(1, -1, *[1] * nd)))
    parts = b.Where(onehot, _fold(ctx, ctx.grad_output(), w.out), ctx.scalar(0.0, x))
    kernel = np.zeros((len(offsets), 1, *w.k), dtype)
    for j, kk in enumerate(offsets):
        at = (j, 0, *kk)  # not inline: mypy reads kernel[(j, 0, *kk)] as 3.11-only syntax
        kernel[at] = 1.0
    return [_scatter(ctx, parts, kernel, w)]


def _count(ctx: GradContext, x: str, y: str, axes: list[int]) -> str:
    """Elements reduced into each output: a constant when the dims are static."""
    shape = ctx.shape(x)
    dims = [shape[a] for a in axes]
    if all(isinstance(dim, int) for dim in dims):
        return ctx.scalar(float(np.prod(cast("list[int]", dims))), x)
    b, t = ctx.b, ctx.elem_type(x)
    return b.Div(b.Cast(b.op("Size", x), t), b.Cast(b.op("Size", y), t))


@register("GlobalAveragePool")
def global_average_pool(ctx: GradContext) -> Grads:
    """dX = expand(g) / (H·W·…)."""
    x, y = ctx.inputs[0], ctx.outputs[0]
    spread = ctx.b.Expand(ctx.grad_output(), ctx.b.Shape(x))
    return [ctx.b.Div(spread, _count(ctx, x, y, list(range(2, ctx.rank(x)))))]


@register("GlobalMaxPool")
def global_max_pool(ctx: GradContext) -> Grads:
    """g goes to the first spatial element equal to Y (row-major): with the spatial axes
    flattened, m = [X = Y] and the first hit is where m·cumsum(m) = 1."""
    b, x = ctx.b, ctx.inputs[0]
    flat = b.ints([0, 0, -1])
    hit = b.Cast(b.op("Equal", b.Reshape(x, flat), b.Reshape(ctx.outputs[0], flat)), ctx.elem_type(x))
    running = b.op("CumSum", hit, b.const(np.asarray(2, dtype=np.int64)))
    first = b.op("Equal", b.Mul(hit, running), ctx.scalar(1.0, x))
    dx = b.Where(first, b.Reshape(ctx.grad_output(), flat), ctx.scalar(0.0, x))
    return [b.Reshape(dx, b.Shape(x))]


def _reduce_axes(ctx: GradContext) -> list[int] | None:
    """Sorted non-negative reduced axes; None when the node is an identity (empty axes
    with noop_with_empty_axes). Axes are an input from opset 13 (ReduceSum) / 18 (others)."""
    rank = ctx.rank(ctx.inputs[0])
    since = 13 if ctx.node.op_type == "ReduceSum" else 18
    if ctx.opset >= since:
        axes = const_ints(ctx, 1) if len(ctx.inputs) > 1 and ctx.inputs[1] else []
    else:
        axes = list(ctx.attr("axes", []))
    if not axes:
        return None if ctx.attr("noop_with_empty_axes", 0) else list(range(rank))
    return sorted(a % rank for a in axes)


def _keep(ctx: GradContext, t: str, axes: list[int]) -> str:
    """``t`` with the reduced axes back as size 1 (a no-op when keepdims = 1)."""
    return t if ctx.attr("keepdims", 1) else ctx.b.Unsqueeze(t, axes)


@register("ReduceSum", "ReduceMean")
def reduce_sum_mean(ctx: GradContext) -> Grads:
    """ReduceSum: dX = expand(g); ReduceMean: dX = expand(g) / count."""
    b, x, y = ctx.b, ctx.inputs[0], ctx.outputs[0]
    axes = _reduce_axes(ctx)
    if axes is None:
        return [ctx.grad_output(), None]
    dx = b.Expand(_keep(ctx, ctx.grad_output(), axes), b.Shape(x))
    if ctx.node.op_type == "ReduceMean":
        dx = b.Div(dx, _count(ctx, x, y, axes))
    return [dx, None]


@register("ReduceMax", "ReduceMin")
def reduce_max_min(ctx: GradContext) -> Grads:
    """dX = g·[X = Y] / #{X = Y}: ties share the gradient equally (torch.amax/amin, TF)."""
    b, x = ctx.b, ctx.inputs[0]
    axes = _reduce_axes(ctx)
    if axes is None:
        return [ctx.grad_output(), None]
    hit = b.Cast(b.op("Equal", x, _keep(ctx, ctx.outputs[0], axes)), ctx.elem_type(x))
    share = b.Div(hit, b.ReduceSum(hit, axes, keepdims=True))
    return [b.Mul(share, _keep(ctx, ctx.grad_output(), axes)), None]
