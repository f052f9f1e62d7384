"""Cases for pools and reductions; "N" marks a symbolic batch fed as 2."""

from __future__ import annotations

from tests.graph.rule_cases import RuleCase, near_ties
from tests.graph.rule_cases.linear import model

#: ops that route the gradient to the maximum (minimum): fed distinct values with near ties
ARG_OPS = ("MaxPool", "GlobalMaxPool", "ReduceMax", "ReduceMin")


def _ties(op: str, dims: list[str]):  # type: ignore[no-untyped-def]
    if op not in ARG_OPS:
        return None
    make = near_ties(tuple(int(v) for v in dims))
    return lambda rng: {"x": make(rng)}


def pool(op: str, cid: str, opset: int, xs: str, attrs: str = "", batch: bool = False) -> RuleCase:
    """``y = op<attrs>(x)``; ``batch`` makes dim 0 symbolic."""
    dims = xs.split(",")
    shape = ",".join(["N", *dims[1:]]) if batch else xs
    feed = {"x": tuple(int(v) for v in dims)} if batch else {}
    text = model(opset, f"float[{shape}] x", f"y = {op}{attrs}(x)", len(dims))
    return RuleCase(f"{op}-{cid}-op{opset}", op, text, feed_shapes=feed, make_inputs=_ties(op, dims))


def reduce(
    op: str, opset: int, axes: list[int] | None, keepdims: int, xs: str = "2,3,4", noop: int = 0, batch: bool = False
) -> RuleCase:
    """Axes as an attribute before opset 13 (ReduceSum) / 18 (others), else as a constant input."""
    since = 13 if op == "ReduceSum" else 18
    attrs = [f"keepdims = {keepdims}"] + ([f"noop_with_empty_axes = {noop}"] if noop else [])
    dims = xs.split(",")
    rank = len(dims) if keepdims or (axes == [] and noop) else len(dims) - len(axes or dims)
    if axes is None or opset >= since:
        body = f"y = {op}<{', '.join(attrs)}>(x{', ax' if axes is not None else ''})"
        inits = (f"int64[{len(axes)}] ax = {{{', '.join(map(str, axes))}}}",) if axes is not None else ()
    else:
        attrs.append(f"axes = [{', '.join(map(str, axes))}]")
        body, inits = f"y = {op}<{', '.join(attrs)}>(x)", ()
    shape = ",".join(["N", *dims[1:]]) if batch else xs
    text = model(opset, f"float[{shape}] x", body, rank, inits)
    feed = {"x": tuple(int(v) for v in dims)} if batch else {}
    return RuleCase(
        f"{op}-axes{axes}-keep{keepdims}-noop{noop}-{'N' if batch else xs}-op{opset}",
        op,
        text,
        feed_shapes=feed,
        make_inputs=_ties(op, dims),
    )


CASES = [
    pool("GlobalAveragePool", "2d", 11, "2,3,4,5"),
    pool("GlobalAveragePool", "dynamic-batch", 17, "2,3,4,5", batch=True),
    pool("GlobalMaxPool", "2d", 13, "2,3,4,5"),
    pool("GlobalMaxPool", "dynamic-batch", 21, "2,3,3,7", batch=True),
    pool(
        "AveragePool",
        "k3-s2-pad1-include",
        11,
        "2,2,7,8",
        "<kernel_shape = [3, 3], strides = [2, 2], pads = [1, 1, 1, 1], count_include_pad = 1>",
    ),
    pool(
        "AveragePool",
        "k3-s2-pad1-exclude",
        13,
        "2,2,7,8",
        "<kernel_shape = [3, 3], strides = [2, 2], pads = [1, 1, 1, 1]>",
    ),
    pool(
        "AveragePool",
        "ceil-asym-pads-include",
        17,
        "1,2,7,8",
        "<kernel_shape = [3, 3], strides = [2, 2], pads = [1, 0, 0, 1], ceil_mode = 1, count_include_pad = 1>",
    ),
    pool("AveragePool", "ceil-exclude-k2x3", 13, "1,2,7,8", "<kernel_shape = [2, 3], strides = [2, 2], ceil_mode = 1>"),
    pool(
        "AveragePool",
        "ceil-include-pads-past-end",
        21,
        "1,2,7,6",
        "<kernel_shape = [2, 2], strides = [2, 2], pads = [1, 1, 0, 0], ceil_mode = 1, count_include_pad = 1>",
    ),
    pool(
        "AveragePool",
        "overlap-k3-s1-pads",
        21,
        "1,2,6,7",
        "<kernel_shape = [3, 3], strides = [1, 1], pads = [1, 2, 1, 2], count_include_pad = 1>",
    ),
    pool(
        "AveragePool",
        "dilation",
        21,
        "1,2,9,8",
        "<kernel_shape = [3, 2], strides = [2, 1], dilations = [2, 2], pads = [1, 1, 1, 0]>",
    ),
    pool(
        "AveragePool", "same-upper", 17, "1,2,7,8", '<kernel_shape = [3, 3], strides = [2, 2], auto_pad = "SAME_UPPER">'
    ),
    pool(
        "AveragePool", "1d-dynamic-batch", 17, "2,3,9", "<kernel_shape = [3], strides = [2], pads = [1, 1]>", batch=True
    ),
    pool("MaxPool", "k3-s2-pad1", 11, "2,2,9,8", "<kernel_shape = [3, 3], strides = [2, 2], pads = [1, 1, 1, 1]>"),
    pool("MaxPool", "k5-s1-pad2", 13, "1,2,6,7", "<kernel_shape = [5, 5], pads = [2, 2, 2, 2]>"),
    pool("MaxPool", "k5-s1-asym-pads", 17, "1,2,6,7", "<kernel_shape = [5, 5], pads = [1, 2, 3, 0]>"),
    pool("MaxPool", "ceil-mode", 13, "1,2,8,7", "<kernel_shape = [3, 3], strides = [2, 2], ceil_mode = 1>"),
    pool(
        "MaxPool",
        "ceil-pads-k2",
        21,
        "1,2,7,6",
        "<kernel_shape = [2, 2], strides = [2, 2], pads = [1, 1, 0, 0], ceil_mode = 1>",
    ),
    pool(
        "MaxPool",
        "dilation",
        17,
        "1,2,9,8",
        "<kernel_shape = [3, 2], strides = [1, 2], dilations = [2, 2], pads = [1, 0, 1, 1]>",
    ),
    pool("MaxPool", "same-upper", 11, "1,2,7,8", '<kernel_shape = [3, 3], strides = [2, 2], auto_pad = "SAME_UPPER">'),
    pool("MaxPool", "1d", 13, "2,3,10", "<kernel_shape = [3], strides = [2], pads = [1, 1]>"),
    pool(
        "MaxPool", "3d", 17, "1,2,5,4,5", "<kernel_shape = [2, 3, 2], strides = [2, 1, 2], pads = [0, 1, 1, 1, 1, 0]>"
    ),
    pool(
        "MaxPool",
        "dynamic-batch",
        17,
        "2,3,7,7",
        "<kernel_shape = [3, 3], strides = [2, 2], pads = [1, 1, 1, 1]>",
        batch=True,
    ),
    RuleCase(
        "MaxPool-with-indices-output-op13",
        "MaxPool",
        model(13, "float[1,2,6,6] x", "y, i = MaxPool<kernel_shape = [3, 3], strides = [2, 2]>(x)", 4),
        make_inputs=_ties("MaxPool", ["1", "2", "6", "6"]),
    ),
    reduce("ReduceSum", 11, [1], 0),
    reduce("ReduceSum", 13, [-1, 0], 1),
    reduce("ReduceSum", 13, None, 1),
    reduce("ReduceSum", 18, [], 1, noop=1),
    reduce("ReduceSum", 21, [2, 3], 0, xs="2,3,4,5", batch=True),
    reduce("ReduceMean", 11, [2, 3], 1, xs="2,3,4,5"),
    reduce("ReduceMean", 13, [-2], 0),
    reduce("ReduceMean", 18, [0, 2], 0),
    reduce("ReduceMean", 18, None, 1),
    reduce("ReduceMean", 21, [0, 1], 1, xs="2,3,4", batch=True),
    reduce("ReduceMax", 11, [1], 0),
    reduce("ReduceMax", 13, [-1, 1], 1),
    reduce("ReduceMax", 18, [2], 0, batch=True),
    reduce("ReduceMax", 21, None, 1),
    reduce("ReduceMin", 13, [0], 1),
    reduce("ReduceMin", 18, [1, 2], 0),
]
