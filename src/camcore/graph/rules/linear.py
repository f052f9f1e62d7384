"""Gradient rules of linear layers: Conv, ConvTranspose, Gemm, MatMul.

Notation: ``g`` is the gradient of the output ``Y``; ``s``, ``d``, ``k`` are strides,
dilations and kernel sizes per spatial axis, ``(pb, pe)`` the begin and end pads, and
``ek = (k-1)·d + 1`` the effective kernel. Spatial sizes must be static (they fix pads
and output paddings); the batch may be symbolic. Weight and bias gradients are
emitted only when ``ctx.needs_grad`` asks for them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from camcore.graph.registry import GradContext, register
from camcore.graph.rules.common import unbroadcast, unbroadcast_dynamic
from camcore.graph.shapes import Dim

Grads = list[str | None]


def _kernel(ctx: GradContext) -> list[int]:
    k = ctx.attr("kernel_shape")
    return list(k) if k is not None else ctx.static_shape(ctx.inputs[1])[2:]


def _per_axis(ctx: GradContext, name: str, nd: int, fill: int) -> list[int]:
    """A per-spatial-axis attribute, or ``fill`` on every axis when absent."""
    v = ctx.attr(name)
    return list(v) if v is not None else [fill] * nd


def _crop(
    ctx: GradContext, t: str, size: list[int], begin: list[int], end: list[int]
) -> tuple[str, list[int], list[int]]:
    """Slice the negative pads off ``t``'s spatial axes (sized ``size``); returns the
    cropped tensor, its spatial size and the remaining pads (all >= 0, ONNX order)."""
    if all(p >= 0 for p in begin + end):
        return t, size, begin + end
    starts = [max(0, -p) for p in begin]
    ends = [n + min(0, p) for n, p in zip(size, end)]
    cropped = ctx.b.Slice(t, starts, ends, list(range(2, 2 + len(size))))
    return cropped, [e - s for s, e in zip(starts, ends)], [max(0, p) for p in begin + end]


def _weight_grad(
    ctx: GradContext,
    inp: tuple[str, list[int]],
    gout: tuple[str, list[int]],
    pads: list[int],
    s: list[int],
    d: list[int],
    k: list[int],
    group: int,
) -> str:
    """dW[o, i, kk] = Σ_{n,p} gout[n, o, p] · pad(inp)[n, grp(o)·I + i, p·s + kk·d].

    ``inp`` and ``gout`` are (tensor, static spatial size); W's layout (O, I, k) is the
    same for Conv (M, C/group, k) and ConvTranspose (C, M/group, k) with roles swapped.
    The batch becomes the channel axis: one grouped Conv of the transposed input by the
    transposed output gradient, strides and dilations swapped, cropped to ``k``.
    """
    b, nd = ctx.b, len(k)
    (x, x_size), (gy, g_size) = inp, gout
    c_out, in_per_group = ctx.static_shape(ctx.inputs[1])[:2]  # W is (c_out, I, k) for both ops
    sp = list(range(3, 3 + nd))
    x_t = b.Transpose(b.Reshape(x, b.ints([0, group, in_per_group, *x_size])), [2, 1, 0, *sp])
    x_t = b.Reshape(x_t, b.ints([in_per_group, -1, *x_size]))
    g_t = b.Transpose(b.Reshape(gy, b.ints([0, group, c_out // group, *g_size])), [1, 2, 0, *sp])
    g_t = b.Reshape(g_t, b.ints([c_out, -1, *g_size]))
    dw = b.op("Conv", x_t, g_t, group=group, strides=d, dilations=s, pads=pads)
    dw = b.Slice(dw, [0] * nd, k, list(range(2, 2 + nd)))
    return b.Transpose(dw, [1, 0, *range(2, 2 + nd)])


def _negated_weight(ctx: GradContext, w: str, product: Callable[[str], str]) -> str:
    """``product(w)``, as ``-product(-w)`` when ``w`` is a constant with as many rows as columns
    (dims 0 and 1): OpenVINO's CPU plugin gives a Convolution and a ConvolutionBackpropData
    that read one such constant the same prepared weights, so the input gradient of a
    convolution whose weight is used raw (no BatchNorm folded into it at load time, as in
    torch's eval exports) came out wrong there. -w is another constant; every product and sum
    only changes sign, so onnxruntime's numbers are the same bit for bit."""
    shape = ctx.shape(w)
    if len(shape) < 2 or shape[0] != shape[1] or not isinstance(shape[0], int) or not ctx.is_constant(w):
        return product(w)
    return ctx.b.Neg(product(ctx.b.Neg(w)))


@register("Conv")
def conv(ctx: GradContext) -> Grads:
    """dX = ConvTranspose(g, W) with the same group/s/d/pads and an output padding
    ``(in + pb + pe − ek) mod s`` that restores X's exact size; auto_pad becomes explicit
    pads. dW by :func:`_weight_grad`; dB = Σ_{n, spatial} g."""
    b, g, (x, w, *rest) = ctx.b, ctx.grad_output(), ctx.inputs
    spatial = range(2, ctx.rank(x))
    size, out = ctx.static_shape(x, spatial), ctx.static_shape(ctx.outputs[0], spatial)
    nd, k, group = len(size), _kernel(ctx), int(ctx.attr("group", 1))
    s, d = _per_axis(ctx, "strides", nd, 1), _per_axis(ctx, "dilations", nd, 1)
    ek = [(ki - 1) * di + 1 for ki, di in zip(k, d)]
    auto_pad = ctx.attr("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        total = [max(0, (o - 1) * si + e - n) for o, si, e, n in zip(out, s, ek, size)]
        pb = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total]
        pads = pb + [t - p for t, p in zip(total, pb)]
    else:
        pads = list(ctx.attr("pads", [0] * 2 * nd)) if auto_pad != "VALID" else [0] * 2 * nd
    grads: Grads = [None] * len(ctx.inputs)
    if ctx.needs_grad(0):
        extra = [
            n + pads[i] + pads[i + nd] - ((o - 1) * si + e) for i, (n, o, si, e) in enumerate(zip(size, out, s, ek))
        ]
        grads[0] = _negated_weight(
            ctx,
            w,
            lambda wt: b.op(
                "ConvTranspose", g, wt, group=group, strides=s, dilations=d, pads=pads, kernel_shape=k,
                output_padding=extra,
            ),
        )  # fmt: skip
    if ctx.needs_grad(1):
        grads[1] = _weight_grad(ctx, (x, size), (g, out), pads, s, d, k, group)
    if rest and rest[0] and ctx.needs_grad(2):
        grads[2] = b.ReduceSum(g, [0, *range(2, 2 + nd)], keepdims=False)
    return grads


def _conv_transpose_begin_pads(ctx: GradContext, full: list[int], out: list[int]) -> list[int]:
    """Begin pads of a ConvTranspose per the spec (and onnxruntime): explicit ``pads``,
    or, with ``output_shape`` or SAME auto_pad, a split of ``total = full − out``."""
    nd = len(full)
    auto_pad = ctx.attr("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if ctx.attr("output_shape") is None and auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        return list(ctx.attr("pads", [0] * 2 * nd))[:nd] if auto_pad != "VALID" else [0] * nd
    total = [f - o for f, o in zip(full, out)]
    return [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total]


@register("ConvTranspose")
def conv_transpose(ctx: GradContext) -> Grads:
    """Y = crop_{pb}(scatter of X·W at i·s + kk·d), full size s·(in−1) + op + ek:
    dX = Conv(g padded by pb at the start and by (full − op − pb − out) at the end, W)
    with the same W layout (C, M/group, k), group, s, d (negative pads crop g).
    dW by :func:`_weight_grad` with the roles of input and output swapped; dB = Σ g."""
    b, g, (x, w, *rest) = ctx.b, ctx.grad_output(), ctx.inputs
    spatial = range(2, ctx.rank(x))
    size, out = ctx.static_shape(x, spatial), ctx.static_shape(ctx.outputs[0], spatial)
    nd, k, group = len(size), _kernel(ctx), int(ctx.attr("group", 1))
    s, d = _per_axis(ctx, "strides", nd, 1), _per_axis(ctx, "dilations", nd, 1)
    op = _per_axis(ctx, "output_padding", nd, 0)
    ek = [(ki - 1) * di + 1 for ki, di in zip(k, d)]
    full = [si * (n - 1) + o + e for si, n, o, e in zip(s, size, op, ek)]
    pb = _conv_transpose_begin_pads(ctx, full, out)
    pe = [f - o - p - n for f, o, p, n in zip(full, op, pb, out)]
    g_in, g_size, pads = _crop(ctx, g, out, pb, pe)
    grads: Grads = [None] * len(ctx.inputs)
    if ctx.needs_grad(0):
        grads[0] = _negated_weight(
            ctx, w, lambda wt: b.op("Conv", g_in, wt, group=group, strides=s, dilations=d, pads=pads, kernel_shape=k)
        )
    if ctx.needs_grad(1):
        grads[1] = _weight_grad(ctx, (g_in, g_size), (x, size), pads, s, d, k, group)
    if rest and rest[0] and ctx.needs_grad(2):
        grads[2] = b.ReduceSum(g, [0, *range(2, 2 + nd)], keepdims=False)
    return grads


@register("Gemm")
def gemm(ctx: GradContext) -> Grads:
    """Y = α·A'·B' + β·C with A' = Aᵀ if transA, B' = Bᵀ if transB:
    dA = α·g·B'ᵀ = (α·B'·gᵀ)ᵀ (transA: α·B'·gᵀ), dB = α·A'ᵀ·g (transB: α·gᵀ·A'), dC = ub(β·g);
    each product is itself a Gemm with adjusted trans flags. B, usually a constant weight,
    stays the *first* operand of dA's product: as the second it would be a second
    fully-connected weight over the same constant in the other orientation, which OpenVINO's
    CPU plugin confuses with the forward one when B is square."""
    b, g, ins = ctx.b, ctx.grad_output(), ctx.inputs
    alpha, beta = float(ctx.attr("alpha", 1.0)), float(ctx.attr("beta", 1.0))
    ta, tb = int(ctx.attr("transA", 0)), int(ctx.attr("transB", 0))
    grads: Grads = [None] * len(ins)
    if ctx.needs_grad(0):
        bg = b.op("Gemm", ins[1], g, alpha=alpha, transA=tb, transB=1)
        grads[0] = bg if ta else b.Transpose(bg, [1, 0])
    if ctx.needs_grad(1):
        grads[1] = (
            b.op("Gemm", g, ins[0], alpha=alpha, transA=1, transB=ta)
            if tb
            else b.op("Gemm", ins[0], g, alpha=alpha, transA=1 - ta)
        )
    if len(ins) > 2 and ins[2] and ctx.needs_grad(2):
        gc = g if beta == 1.0 else b.Mul(g, ctx.scalar(beta, ins[2]))
        grads[2] = unbroadcast(ctx, gc, ins[2], ctx.outputs[0])
    return grads


def _sum_to(ctx: GradContext, grad: str, like: str, in_shape: Sequence[Dim], out_shape: Sequence[Dim]) -> str:
    """Sum the batch dims of ``grad`` (shaped ``out_shape``) down to ``in_shape``."""
    lead = len(out_shape) - len(in_shape)
    axes = list(range(lead))
    for axis in range(lead, len(out_shape)):
        d_in, d_out = in_shape[axis - lead], out_shape[axis]
        if d_in == 1 and d_out != 1:
            axes.append(axis)
        elif not (d_in == d_out or d_out == 1 or (isinstance(d_in, int) and d_in != 1)):
            return unbroadcast_dynamic(ctx, grad, like, lead)
    g = ctx.b.ReduceSum(grad, axes, keepdims=True) if axes else grad
    return ctx.b.Squeeze(g, list(range(lead))) if lead else g


def _square_weight(ctx: GradContext, bm: str, sb: Sequence[Dim]) -> bool:
    """Whether B is a constant square matrix: OpenVINO's CPU plugin turns MatMul(x, B) into a
    fully-connected layer over B, and a second one over the same constant in the other
    orientation (g·Bᵀ) gets the forward one's weights when B is square. With B first, dA's
    product is no fully-connected layer; onnxruntime's forward outputs stay bit for bit the same
    (tests/graph/test_forward_unchanged.py, float16 ViT included)."""
    return len(sb) == 2 and sb[0] == sb[1] and ctx.is_constant(bm)


@register("MatMul")
def matmul(ctx: GradContext) -> Grads:
    """Y = A·B (numpy matmul): dA = ub(g·Bᵀ), dB = ub(Aᵀ·g) over the batch dims; for a constant
    square 2-D B, dA = ub((B·gᵀ)ᵀ) (see :func:`_square_weight`). A 1-D A is a (1, k) row and
    a 1-D B a (k, 1) column; g gets those axes back first, and the gradients are reshaped to
    the operands' shapes at the end."""
    b, g, (a, bm) = ctx.b, ctx.grad_output(), ctx.inputs
    sa, sb = list(ctx.shape(a)), list(ctx.shape(bm))
    vec_a, vec_b = len(sa) == 1, len(sb) == 1
    if vec_b:
        g, bm, sb = b.Unsqueeze(g, [-1]), b.Unsqueeze(bm, [1]), [*sb, 1]
    if vec_a:
        g, a, sa = b.Unsqueeze(g, [-2]), b.Unsqueeze(a, [0]), [1, *sa]
    nb = max(len(sa), len(sb)) - 2
    pa = [1] * (nb + 2 - len(sa)) + sa[:-2]
    pb = [1] * (nb + 2 - len(sb)) + sb[:-2]
    batch = [y if x == 1 else x for x, y in zip(pa, pb)]
    grads: Grads = [None, None]
    if ctx.needs_grad(0):
        tb = [*range(len(sb) - 2), len(sb) - 1, len(sb) - 2]
        if _square_weight(ctx, bm, sb):
            # g·Bᵀ = (B·gᵀ)ᵀ with B first, as in the Gemm rule (OpenVINO's square-weight bug)
            tg = [*range(len(sa) - 2), len(sa) - 1, len(sa) - 2]
            dg = b.Transpose(b.MatMul(bm, b.Transpose(g, tg)), tg)
        else:
            dg = b.MatMul(g, b.Transpose(bm, tb))
        da = _sum_to(ctx, dg, a, sa, [*batch, *sa[-2:]])
        grads[0] = b.Reshape(da, b.Shape(ctx.inputs[0])) if vec_a else da
    if ctx.needs_grad(1):
        ta = [*range(len(sa) - 2), len(sa) - 1, len(sa) - 2]
        db = _sum_to(ctx, b.MatMul(b.Transpose(a, ta), g), bm, sb, [*batch, *sb[-2:]])
        grads[1] = b.Reshape(db, b.Shape(ctx.inputs[1])) if vec_b else db
    return grads
