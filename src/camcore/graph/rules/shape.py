"""Gradient rules of shape and indexing ops: each moves gradient entries back to
the positions their values came from. ``g`` is the gradient of the output ``Y``.

Shapes are read at run time (``Shape(X)``) wherever that suffices, so a symbolic
batch dim never ends up baked into a constant.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, cast

import numpy as np
from onnx import helper

from camcore.errors import ShapeError, UnsupportedOpError
from camcore.graph.registry import GradContext, register
from camcore.graph.rules.common import const_ints, unbroadcast
from camcore.graph.rules.resize import transpose_apply

Grads = list[str | None]
#: the ONNX Pad modes other than "constant", named as np.pad names them
_CopyMode = Literal["reflect", "edge", "wrap"]

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


def _reshape_back(ctx: GradContext) -> Grads:
    return [ctx.b.Reshape(ctx.grad_output(), ctx.b.Shape(ctx.inputs[0])), None]


@register("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def reshape(ctx: GradContext) -> Grads:
    """The values only move between dims: dX = Reshape(g, Shape(X))."""
    return _reshape_back(ctx)


@register("Transpose")
def transpose(ctx: GradContext) -> Grads:
    """dX = Transpose(g, perm⁻¹); the default perm reverses the dims."""
    perm = ctx.attr("perm") or list(reversed(range(ctx.rank(ctx.inputs[0]))))
    inverse = [0] * len(perm)
    for i, p in enumerate(perm):
        inverse[p] = i
    return [ctx.b.Transpose(ctx.grad_output(), inverse)]


def _dims_along(ctx: GradContext, tensors: Sequence[str], axis: int) -> list[str | int]:
    """The size of each tensor along ``axis``: an int when static, else a 1-D tensor."""
    b = ctx.b
    out: list[str | int] = []
    for t in tensors:
        d = ctx.shape(t)[axis]
        if not isinstance(d, int):
            d = b.op("Slice", b.Shape(t), b.ints([axis]), b.ints([axis + 1]))
        out.append(d)
    return out


@register("Concat")
def concat(ctx: GradContext) -> Grads:
    """dXᵢ = g[.., oᵢ : oᵢ + sizeᵢ, ..] along ``axis``, offsets oᵢ = Σ_{j<i} sizeⱼ."""
    b, g, xs = ctx.b, ctx.grad_output(), ctx.inputs
    axis = int(ctx.attr("axis")) % ctx.rank(ctx.outputs[0])
    sizes = _dims_along(ctx, xs, axis)
    grads: Grads = []
    offset: str | int = 0
    for i, size in enumerate(sizes):
        end: str | int
        if isinstance(offset, int) and isinstance(size, int):
            end = offset + size
        else:
            as_t = [b.ints([v]) if isinstance(v, int) else v for v in (offset, size)]
            end = b.Add(*as_t)
        if ctx.needs_grad(i):
            if isinstance(offset, int) and isinstance(end, int):
                grads.append(b.Slice(g, [offset], [end], [axis]))
            else:
                lo = b.ints([offset]) if isinstance(offset, int) else offset
                hi = b.ints([end]) if isinstance(end, int) else end
                grads.append(b.op("Slice", g, lo, hi, b.ints([axis])))
        else:
            grads.append(None)
        offset = end
    return grads


@register("Split")
def split(ctx: GradContext) -> Grads:
    """dX = Concat(g₀, g₁, ...) along ``axis``; outputs without gradient give zeros."""
    axis = int(ctx.attr("axis", 0))
    parts = [ctx.grad_output(i) for i in range(len(ctx.outputs))]
    return [ctx.b.Concat(parts, axis), None]


def _slice_range(start: int, end: int, step: int, dim: int) -> range:
    """The indices ONNX Slice picks along one axis (its clamping rules, not Python's)."""
    start, end = start + dim if start < 0 else start, end + dim if end < 0 else end
    if step > 0:
        return range(min(max(start, 0), dim), min(max(end, 0), dim), step)
    return range(min(max(start, 0), dim - 1), min(max(end, -1), dim - 1), step)


def _spread(ctx: GradContext, g: str, axis: int, step: int, n: int) -> str:
    """Interleave step − 1 zeros after each entry along ``axis``: n → (n − 1)·step + 1."""
    b, rank = ctx.b, ctx.rank(ctx.inputs[0])
    shape = b.Shape(g)
    z = b.Unsqueeze(g, [axis + 1])
    z = b.Pad(z, [0] * (rank + 1) + [step - 1 if a == axis + 1 else 0 for a in range(rank + 1)])
    parts = [b.ints([n * step])]
    if axis > 0:
        parts.insert(0, b.op("Slice", shape, b.ints([0]), b.ints([axis])))
    if axis < rank - 1:
        parts.append(b.op("Slice", shape, b.ints([axis + 1]), b.ints([rank])))
    merged = b.Reshape(z, b.Concat(parts, 0) if len(parts) > 1 else parts[0])
    return b.Slice(merged, [0], [(n - 1) * step + 1], [axis])


@register("Slice")
def slice_(ctx: GradContext) -> Grads:
    """dX = g placed back at the sliced positions: zeros interleaved for |step| > 1,
    reversed for step < 0, then Pad to X's dims (static along the sliced axes)."""
    b, x, g = ctx.b, ctx.inputs[0], ctx.grad_output()
    rank = ctx.rank(x)
    starts, ends = const_ints(ctx, 1), const_ints(ctx, 2)
    axes = const_ints(ctx, 3) if len(ctx.inputs) > 3 and ctx.inputs[3] else list(range(len(starts)))
    steps = const_ints(ctx, 4) if len(ctx.inputs) > 4 and ctx.inputs[4] else [1] * len(starts)
    pads = [0] * (2 * rank)
    for start, end, step, axis in zip(starts, ends, steps, axes):
        axis %= rank
        dim = ctx.static_shape(x, [axis])[0]
        picked = _slice_range(start, end, step, dim)
        if len(picked) == 0:
            return [b.ZerosLike(x, ctx.elem_type(x)), None, None, None, None]
        if step < 0 and len(picked) > 1:
            g = b.Slice(g, [-1], [INT64_MIN], [axis], [-1])
        if abs(step) > 1 and len(picked) > 1:
            g = _spread(ctx, g, axis, abs(step), len(picked))
        lo = min(picked[0], picked[-1])
        pads[axis] = lo
        pads[rank + axis] = dim - lo - ((len(picked) - 1) * abs(step) + 1)
    return [b.Pad(g, pads) if any(pads) else g, None, None, None, None]


def _one_hot(ctx: GradContext, indices: str, depth: int | str) -> str:
    """[K, depth] float one-hot of the flattened (possibly negative) indices."""
    b, x = ctx.b, ctx.inputs[0]
    value = ctx.const_value(indices)
    if value is not None and isinstance(depth, int):
        idx = np.asarray(value, dtype=np.int64).reshape(-1) % depth
        dtype = helper.tensor_dtype_to_np_dtype(ctx.elem_type(x))
        return b.const((idx[:, None] == np.arange(depth)[None, :]).astype(dtype))
    flat = b.Cast(b.Reshape(indices, b.ints([-1])), 7)
    d = b.const(np.int64(depth)) if isinstance(depth, int) else depth
    flat = b.Where(b.op("Less", flat, b.const(np.int64(0))), b.Add(flat, d), flat)
    positions = b.Range(b.const(np.int64(0)), d, b.const(np.int64(1)))
    hot = b.op("Equal", b.Unsqueeze(flat, [1]), positions)
    return b.Cast(hot, ctx.elem_type(x))


@register("Gather")
def gather(ctx: GradContext) -> Grads:
    """dX[.., d, ..] = Σₖ [idxₖ = d]·g[.., k, ..]: a MatMul of g (indices flattened to K,
    axis moved last) with the [K, D] one-hot of the indices; a constant scalar index
    is a Pad. Indices get no gradient."""
    b, (x, idx), g = ctx.b, ctx.inputs, ctx.grad_output()
    rank = ctx.rank(x)
    axis = int(ctx.attr("axis", 0)) % rank
    dim = ctx.shape(x)[axis]
    value = ctx.const_value(idx)
    if value is not None and np.ndim(value) == 0 and isinstance(dim, int):
        i = int(value) % dim
        pads = [0] * (2 * rank)
        pads[axis], pads[rank + axis] = i, dim - i - 1
        return [b.Pad(b.Unsqueeze(g, [axis]), pads), None]
    depth: int | str = dim if isinstance(dim, int) else b.op("Gather", b.Shape(x), b.const(np.int64(axis)), axis=0)
    hot = _one_hot(ctx, idx, depth)
    shape = b.Shape(x)
    parts = [b.ints([-1])]
    if axis > 0:
        parts.insert(0, b.op("Slice", shape, b.ints([0]), b.ints([axis])))
    if axis < rank - 1:
        parts.append(b.op("Slice", shape, b.ints([axis + 1]), b.ints([rank])))
    g = b.Reshape(g, b.Concat(parts, 0) if len(parts) > 1 else parts[0])
    if axis == rank - 1:
        return [b.MatMul(g, hot), None]
    perm = [a for a in range(rank) if a != axis] + [axis]
    back = [perm.index(a) for a in range(rank)]
    return [b.Transpose(b.MatMul(b.Transpose(g, perm), hot), back), None]


@register("Pad")
def pad(ctx: GradContext) -> Grads:
    """Constant mode: dX = g cropped by the pads (Slice), zero-filled where pads crop X.
    Reflect, edge and wrap modes copy entries: dX = Aᵀ·g per padded axis, with A the
    (padded × D) 0/1 matrix of which entry of X each output entry copies."""
    b, x, g = ctx.b, ctx.inputs[0], ctx.grad_output()
    mode = ctx.attr("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    rank = ctx.rank(x)
    pads = const_ints(ctx, 1)
    axes = const_ints(ctx, 3) if len(ctx.inputs) > 3 and ctx.inputs[3] else list(range(rank))
    n = len(axes)
    if mode != "constant":
        if any(p < 0 for p in pads):
            raise UnsupportedOpError(
                f"no gradient rule for Pad node {ctx.node.name!r} with negative pads in "
                f"mode {mode!r}; choose a target layer after it"
            )
        for k, axis in enumerate(a % rank for a in axes):
            if pads[k] or pads[n + k]:
                dim = ctx.static_shape(x, [axis])[0]
                src = np.pad(np.arange(dim), (pads[k], pads[n + k]), mode=cast(_CopyMode, mode))
                g = transpose_apply(ctx, g, axis, (src[:, None] == np.arange(dim)).astype(float))
        return [g, None, None, None]
    sl_axes, starts, ends, back = [], [], [], [0] * (2 * rank)
    for k, axis in enumerate(a % rank for a in axes):
        lo, hi = pads[k], pads[n + k]
        if lo > 0 or hi > 0:
            sl_axes.append(axis)
            starts.append(max(lo, 0))
            ends.append(-hi if hi > 0 else INT64_MAX)
        back[axis], back[rank + axis] = max(-lo, 0), max(-hi, 0)
    if sl_axes:
        g = b.Slice(g, starts, ends, sl_axes)
    if any(back):
        g = b.Pad(g, back)
    return [g, None, None, None]


@register("Expand")
def expand(ctx: GradContext) -> Grads:
    """dX = g summed over the broadcast dims."""
    return [unbroadcast(ctx, ctx.grad_output(), ctx.inputs[0], ctx.outputs[0]), None]


@register("Tile")
def tile(ctx: GradContext) -> Grads:
    """Y = X repeated rᵢ times along dim i: dX = Σ over the r's of g reshaped to
    [r₀, d₀, r₁, d₁, ...] (interleaved at run time: repeats may be dynamic)."""
    b, (x, repeats), g = ctx.b, ctx.inputs, ctx.grad_output()
    rank = ctx.rank(x)
    if rank == 0:
        raise ShapeError(f"the gradient of Tile node {ctx.node.name!r} needs an input of rank >= 1")
    pairs = b.Concat([b.Unsqueeze(repeats, [1]), b.Unsqueeze(b.Shape(x), [1])], 1)
    g = b.Reshape(g, b.Reshape(pairs, b.ints([-1])))
    return [b.ReduceSum(g, list(range(0, 2 * rank, 2)), keepdims=False), None]
