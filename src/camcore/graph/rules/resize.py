"""Gradient rule of Resize: a linear, separable map of X, so its gradient is the
transpose. Along each resized axis, Y = A·X with A (out × in) the 1-D interpolation
matrix built here in numpy to reproduce onnxruntime's forward exactly (float32
coordinates, its rounding and clamping); then dX = Aᵀ·g per axis, as MatMuls:

    NCHW bilinear:  dX = A_hᵀ · g · A_w     (broadcast over N, C)

Nearest, linear and cubic modes; coordinate modes half_pixel, half_pixel_symmetric,
pytorch_half_pixel, align_corners, asymmetric, tf_half_pixel_for_nn. The resized
dims must be static; axes left unscaled may be symbolic (a dynamic batch).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import helper

from camcore.errors import ShapeError, UnsupportedOpError
from camcore.graph.registry import GradContext, register

Grads = list[str | None]
F32 = np.float32


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _source_coords(mode: str, n_out: int, n_in: int, scale: float) -> np.ndarray:
    """Input coordinate of each output index, in float32 as onnxruntime computes it."""
    x, s = np.arange(n_out, dtype=F32), F32(scale)
    half = F32(0.5)
    if mode == "half_pixel":
        return (x + half) / s - half
    if mode == "half_pixel_symmetric":
        adjustment = F32(n_out) / (s * F32(n_in))
        offset = F32(n_in) / F32(2) * (F32(1) - adjustment)
        return offset + (x + half) / s - half
    if mode == "pytorch_half_pixel":
        return (x + half) / s - half if n_out > 1 else np.zeros_like(x)
    if mode == "align_corners":
        return np.zeros_like(x) if n_out == 1 else x * F32(n_in - 1) / F32(n_out - 1)
    if mode == "asymmetric":
        return x / s
    if mode == "tf_half_pixel_for_nn":
        return (x + half) / s
    raise ValueError(mode)


def _nearest(coords: np.ndarray, rounding: str) -> np.ndarray:
    if rounding == "round_prefer_floor":
        tie = coords == np.trunc(coords) + F32(0.5)
        return np.where(tie, np.floor(coords), np.sign(coords) * np.floor(np.abs(coords) + 0.5))
    if rounding == "round_prefer_ceil":
        return np.sign(coords) * np.floor(np.abs(coords) + 0.5)  # std::round: half away from 0
    if rounding in ("floor", "ceil"):
        return np.floor(coords) if rounding == "floor" else np.ceil(coords)
    raise ValueError(rounding)


def _cubic_weights(t: float, a: float) -> np.ndarray:
    """Keys' cubic kernel at distances 1 + t, t, 1 − t, 2 − t."""

    def near(d: float) -> float:
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d: float) -> float:
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    return np.array([far(1 + t), near(t), near(1 - t), far(2 - t)])


def interpolation_matrix(n_out: int, n_in: int, scale: float, attrs: dict[str, Any]) -> np.ndarray:
    """The (n_out × n_in) matrix A with Resize(x) = A·x along one axis."""
    coords = _source_coords(str(attrs["coordinate_transformation_mode"]), n_out, n_in, scale)
    mode, a = str(attrs["mode"]), np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    if mode == "nearest":
        idx = np.clip(_nearest(coords, str(attrs["nearest_mode"])), 0, n_in - 1).astype(np.int64)
        a[rows, idx] = 1.0
    elif mode == "linear":
        c = np.clip(coords, 0, n_in - 1).astype(np.float64)
        lo = np.floor(c).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        np.add.at(a, (rows, lo), 1.0 - (c - lo))
        np.add.at(a, (rows, hi), c - lo)
    elif mode == "cubic":
        for o, c in enumerate(coords.astype(np.float64)):
            base = int(np.floor(c))
            w = _cubic_weights(c - base, float(attrs["cubic_coeff_a"]))
            taps = np.arange(base - 1, base + 3)
            if attrs["exclude_outside"]:
                w = np.where((taps >= 0) & (taps < n_in), w, 0.0)
                w = w / w.sum()
            np.add.at(a[o], np.clip(taps, 0, n_in - 1), w)
    else:
        raise ValueError(mode)
    return a


def _axis_sizes(ctx: GradContext) -> list[tuple[int, int, int, float]]:
    """(axis, n_in, n_out, scale) for every axis Resize changes."""
    x, y, ins = ctx.inputs[0], ctx.outputs[0], ctx.inputs
    rank = ctx.rank(x)
    axes = [a % rank for a in ctx.attr("axes", None) or range(rank)]
    scales = ctx.const_value(ins[2]) if len(ins) > 2 and ins[2] else None
    if len(ins) > 2 and ins[2] and scales is None:
        raise ShapeError(
            f"the gradient of Resize node {ctx.node.name!r} needs input 2 ({ins[2]!r}, "
            "scales) as a constant, but it is computed at run time"
        )
    sizes_name = ins[3] if len(ins) > 3 and ins[3] else None
    sizes = ctx.const_value(sizes_name) if sizes_name else None
    out: list[tuple[int, int, int, float]] = []
    in_shape, out_shape = ctx.shape(x), ctx.shape(y)
    for k, axis in enumerate(axes):
        if scales is not None and np.size(scales) > 0:
            scale = float(np.asarray(scales).reshape(-1)[k])
            if scale == 1.0:
                continue
            n_in = ctx.static_shape(x, [axis])[0]
            out.append((axis, n_in, int(F32(scale) * F32(n_in)), scale))
            continue
        n_out = int(np.asarray(sizes).reshape(-1)[k]) if sizes is not None else out_shape[axis]
        if n_out == in_shape[axis] and n_out is not None:
            continue
        if n_out is None or isinstance(n_out, str):
            n_out = ctx.static_shape(y, [axis])[0]
        n_in = ctx.static_shape(x, [axis])[0]
        if n_in != n_out:
            out.append((axis, n_in, n_out, float(F32(n_out) / F32(n_in))))
    # onnxruntime copies X when no dim changes, whatever the scales say
    return [] if all(n_in == n_out for _, n_in, n_out, _ in out) else out


@register("Resize")
def resize(ctx: GradContext) -> Grads:
    """dX = Aᵀ·g along each resized axis (see the module doc)."""
    g = ctx.grad_output()
    attrs = {
        "mode": _text(ctx.attr("mode", "nearest")),
        "coordinate_transformation_mode": _text(ctx.attr("coordinate_transformation_mode", "half_pixel")),
        "nearest_mode": _text(ctx.attr("nearest_mode", "round_prefer_floor")),
        "cubic_coeff_a": float(ctx.attr("cubic_coeff_a", -0.75)),
        "exclude_outside": int(ctx.attr("exclude_outside", 0)),
    }
    policy = _text(ctx.attr("keep_aspect_ratio_policy", "stretch"))
    unsupported = [
        f"coordinate_transformation_mode {attrs['coordinate_transformation_mode']!r}"
        if attrs["coordinate_transformation_mode"] == "tf_crop_and_resize"
        else "",
        f"keep_aspect_ratio_policy {policy!r}" if policy != "stretch" else "",
    ]
    if any(unsupported):
        raise UnsupportedOpError(
            f"no gradient rule for Resize node {ctx.node.name!r} with "
            f"{' and '.join(u for u in unsupported if u)}; choose a target layer after it"
        )
    for axis, n_in, n_out, scale in _axis_sizes(ctx):
        if ctx.attr("antialias", 0) and scale < 1.0 and attrs["mode"] != "nearest":
            raise UnsupportedOpError(
                f"no gradient rule for Resize node {ctx.node.name!r} with antialias=1 when "
                "downsampling; choose a target layer after it"
            )
        g = transpose_apply(ctx, g, axis, interpolation_matrix(n_out, n_in, scale, attrs))
    return [g, None, None, None]


def transpose_apply(ctx: GradContext, g: str, axis: int, a: np.ndarray) -> str:
    """Aᵀ applied to ``g`` along ``axis`` (length n_out → n_in), as one MatMul."""
    b, rank = ctx.b, ctx.rank(ctx.inputs[0])
    a = a.astype(helper.tensor_dtype_to_np_dtype(ctx.elem_type(ctx.inputs[0])))
    if axis == rank - 1:
        return b.MatMul(g, b.const(a))
    if axis == rank - 2:
        return b.MatMul(b.const(np.ascontiguousarray(a.T)), g)
    perm = [d for d in range(rank) if d != axis] + [axis]
    moved = b.MatMul(b.Transpose(g, perm), b.const(a))
    return b.Transpose(moved, [perm.index(d) for d in range(rank)])
