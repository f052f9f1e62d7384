"""Cases for Conv, ConvTranspose, Gemm and MatMul: weights are initializers unless the
case differentiates them too; "N" marks a symbolic batch fed as 2."""

from __future__ import annotations

import re

import numpy as np

from tests.graph.rule_cases import RuleCase

_IR = {11: 7, 13: 7, 17: 8, 18: 8, 21: 10}


def weight(name: str, shape: tuple[int, ...], seed: int) -> str:
    """An initializer in ONNX text with fixed pseudo-random values."""
    values = np.random.default_rng(seed).uniform(-1, 1, shape).round(3).ravel()
    dims = ",".join(map(str, shape))
    return f"float[{dims}] {name} = {{{', '.join(map(str, values))}}}"


def model(opset: int, inputs: str, body: str, rank: int, inits: tuple[str, ...] = ()) -> str:
    """A one-graph model in ONNX text whose output ``y`` has ``rank`` unknown dims."""
    init = f"<{', '.join(inits)}>" if inits else ""
    out = f"float[{','.join('?' * rank)}]" if rank else "float"
    return f"""<ir_version: {_IR[opset]}, opset_import: ["" : {opset}]>
g ({inputs}) => ({out} y) {init} {{ {body} }}"""


def conv(
    cid: str,
    opset: int,
    xs: str,
    ws: tuple[int, ...],
    attrs: str,
    bias: bool = True,
    op: str = "Conv",
    batch: str | None = None,
) -> RuleCase:
    """``y = op<attrs>(x, W[, B])`` with constant W and B; ``batch`` makes dim 0 symbolic."""
    group = re.search(r"group = (\d+)", attrs)
    out_ch = ws[0] if op == "Conv" else ws[1] * (int(group.group(1)) if group else 1)
    inits = (weight("w", ws, 1), *([weight("b", (out_ch,), 2)] if bias else []))
    args = "x, w, b" if bias else "x, w"
    shape = xs if batch is None else "N," + xs.split(",", 1)[1]
    feed = {} if batch is None else {"x": tuple(int(v) for v in xs.split(","))}
    return RuleCase(
        f"{op}-{cid}-op{opset}",
        op,
        model(opset, f"float[{shape}] x", f"y = {op}{attrs}({args})", len(ws), inits),
        feed_shapes=feed,
    )


def conv_params(cid: str, opset: int, op: str, xs: str, ws: str, bs: str, attrs: str) -> RuleCase:
    """Data, weight and bias are all graph inputs and all differentiated."""
    text = model(opset, f"float[{xs}] x, float[{ws}] w, float[{bs}] b", f"y = {op}{attrs}(x, w, b)", len(xs.split(",")))
    return RuleCase(f"{op}-{cid}-wrt-weights-op{opset}", op, text, wrt=("x", "w", "b"))


def gemm(ta: int, tb: int, cs: str | None, opset: int = 13, alpha: float = 1.0, beta: float = 1.0) -> RuleCase:
    a = "4,3" if ta else "3,4"
    b = "5,4" if tb else "4,5"
    ins = f"float[{a}] a, float[{b}] bm" + (f", float[{cs}] c" if cs else "")
    attrs = f"<transA = {ta}, transB = {tb}, alpha = {alpha}, beta = {beta}>"
    body = f"y = Gemm{attrs}(a, bm{', c' if cs else ''})"
    wrt = ("a", "bm", "c") if cs else ("a", "bm")
    return RuleCase(f"Gemm-tA{ta}-tB{tb}-C{cs}-op{opset}", "Gemm", model(opset, ins, body, 2), wrt=wrt)


def matmul(sa: str, sb: str, opset: int = 13) -> RuleCase:
    ra, rb = len(sa.split(",")), len(sb.split(","))
    rank = max(ra, rb) - (ra == 1) - (rb == 1)
    return RuleCase(
        f"MatMul-{sa}-{sb}-op{opset}",
        "MatMul",
        model(opset, f"float[{sa}] a, float[{sb}] bm", "y = MatMul(a, bm)", rank),
        wrt=("a", "bm"),
    )


CASES = [
    conv("3x3-pad1", 11, "2,3,6,6", (4, 3, 3, 3), "<pads = [1, 1, 1, 1]>"),
    conv("stride2-odd-needs-output-padding", 13, "2,2,8,9", (3, 2, 3, 3), "<strides = [2, 2], pads = [1, 1, 1, 1]>"),
    conv(
        "groups-dilation-asym-pads",
        13,
        "1,4,9,8",
        (6, 2, 3, 2),
        "<group = 2, dilations = [2, 1], strides = [2, 1], pads = [1, 0, 2, 1]>",
        bias=False,
    ),
    conv("depthwise-same-upper", 17, "2,4,7,8", (4, 1, 3, 3), '<group = 4, strides = [2, 2], auto_pad = "SAME_UPPER">'),
    conv("same-lower-k4", 21, "1,2,8,7", (3, 2, 4, 4), '<strides = [2, 2], auto_pad = "SAME_LOWER">'),
    conv("valid-1d-stride3", 13, "2,3,11", (2, 3, 3), '<strides = [3], auto_pad = "VALID">'),
    conv("3d", 17, "1,2,5,4,5", (2, 2, 3, 2, 3), "<strides = [2, 1, 2], pads = [1, 0, 1, 1, 1, 0]>"),
    # a square weight (as many output as input channels) used raw, as torch's eval exports leave
    # convolutions: OpenVINO once read the forward's prepared weights for the gradient's
    conv("square-channels", 17, "1,4,7,6", (4, 4, 3, 3), "<strides = [2, 1], pads = [1, 0, 1, 1]>"),
    conv("dynamic-batch", 17, "2,3,7,7", (4, 3, 3, 3), "<strides = [2, 2], pads = [0, 1, 1, 0]>", batch="N"),
    conv_params(
        "groups-stride2",
        13,
        "Conv",
        "2,4,7,6",
        "6,2,3,3",
        "6",
        "<group = 2, strides = [2, 2], pads = [1, 0, 0, 1], dilations = [1, 2]>",
    ),
    conv_params(
        "depthwise-same",
        17,
        "Conv",
        "1,3,6,5",
        "3,1,3,3",
        "3",
        '<group = 3, auto_pad = "SAME_UPPER", strides = [2, 2]>',
    ),
    # ConvTranspose: W is (C_in, C_out/group, k)
    conv(
        "stride2-pads-output-padding",
        11,
        "2,3,4,5",
        (3, 2, 3, 3),
        "<strides = [2, 2], pads = [1, 1, 1, 1], output_padding = [1, 1]>",
        op="ConvTranspose",
    ),
    conv("output-shape", 13, "2,2,4,5", (2, 3, 3, 3), "<strides = [3, 2], output_shape = [8, 9]>", op="ConvTranspose"),
    conv("square-channels", 17, "1,3,4,5", (3, 3, 3, 3), "<strides = [2, 1], pads = [1, 0, 0, 1]>", op="ConvTranspose"),
    conv(
        "output-shape-and-padding",
        17,
        "1,2,4,5",
        (2, 3, 3, 3),
        "<strides = [3, 2], output_shape = [8, 9], output_padding = [1, 1]>",
        op="ConvTranspose",
    ),
    conv(
        "output-shape-same-upper",
        17,
        "1,2,4,5",
        (2, 3, 3, 3),
        '<strides = [2, 2], output_shape = [8, 9], auto_pad = "SAME_UPPER">',
        op="ConvTranspose",
    ),
    conv(
        "same-lower-dilation",
        21,
        "1,2,4,5",
        (2, 3, 3, 3),
        '<strides = [2, 2], dilations = [2, 1], auto_pad = "SAME_LOWER">',
        op="ConvTranspose",
    ),
    conv(
        "groups-asym-pads",
        13,
        "1,4,4,5",
        (4, 3, 3, 3),
        "<group = 2, strides = [2, 2], pads = [1, 0, 0, 1], output_padding = [1, 0]>",
        op="ConvTranspose",
    ),
    conv("1d", 13, "2,3,6", (3, 2, 4), "<strides = [2], pads = [1, 2]>", op="ConvTranspose"),
    conv(
        "dynamic-batch",
        17,
        "2,3,4,4",
        (3, 2, 3, 3),
        "<strides = [2, 2], pads = [1, 1, 1, 1]>",
        op="ConvTranspose",
        batch="N",
    ),
    conv_params(
        "groups-output-shape",
        17,
        "ConvTranspose",
        "2,4,3,4",
        "4,2,3,2",
        "4",
        "<group = 2, strides = [2, 3], output_shape = [6, 11], output_padding = [1, 1]>",
    ),
    conv_params(
        "pads-output-padding",
        13,
        "ConvTranspose",
        "1,2,4,3",
        "2,3,2,3",
        "3",
        "<strides = [2, 2], pads = [0, 1, 1, 0], output_padding = [1, 1]>",
    ),
    # Gemm: every trans combination, C broadcast from (M,), (N, 1), a scalar, full, or absent
    gemm(0, 0, "5", 11),
    gemm(0, 1, "3,1", 13, alpha=0.5, beta=2.0),
    gemm(1, 0, "1", 17, alpha=1.5),
    gemm(1, 1, "3,5", 21, beta=-0.5),
    gemm(1, 0, None, 13),
    RuleCase(
        "Gemm-linear-layer-dynamic-batch-op17",
        "Gemm",
        model(17, "float[N,4] x", "y = Gemm<transB = 1>(x, w, b)", 2, (weight("w", (3, 4), 3), weight("b", (3,), 4))),
        feed_shapes={"x": (2, 4)},
    ),
    # a square constant weight: the forward and the gradient products read the same constant in
    # opposite orientations (OpenVINO's CPU plugin once mixed the two up: tests/graph/test_rules_openvino.py)
    RuleCase(
        "Gemm-linear-layer-square-weight-op17",
        "Gemm",
        model(17, "float[2,4] x", "y = Gemm<transB = 1>(x, w, b)", 2, (weight("w", (4, 4), 6), weight("b", (4,), 7))),
    ),
    RuleCase(
        "Gemm-square-weight-op13",
        "Gemm",
        model(13, "float[2,4] x", "y = Gemm(x, w)", 2, (weight("w", (4, 4), 8),)),
    ),
    # MatMul: vectors on either side, batched, broadcast batch dims
    matmul("4", "4,5"),
    matmul("3,4", "4", 11),
    RuleCase(
        "MatMul-4-4-dot-op13",
        "MatMul",  # Add lifts the 0-D dot product to rank 1
        model(13, "float[4] a, float[4] bm", "z = MatMul(a, bm) y = Add(z, c)", 1, ("float[2] c = {0.5, -1.0}",)),
        wrt=("a", "bm"),
    ),
    matmul("4", "2,4,5", 17),
    matmul("2,3,4", "4", 21),
    matmul("2,3,4", "4,5"),
    matmul("2,1,3,4", "3,4,5", 17),
    matmul("1,3,4", "2,4,5", 21),
    RuleCase(
        "MatMul-dynamic-batch-const-weight-op13",
        "MatMul",
        model(13, "float[N,3,4] x", "y = MatMul(x, w)", 3, (weight("w", (4, 5), 5),)),
        feed_shapes={"x": (2, 3, 4)},
    ),
    RuleCase(
        "MatMul-square-weight-op13",
        "MatMul",
        model(13, "float[2,3,4] x", "y = MatMul(x, w)", 3, (weight("w", (4, 4), 9),)),
    ),
    RuleCase(  # over the 4096 elements whose values the rules see: known constant by name only
        "MatMul-large-square-weight-op13",
        "MatMul",
        model(13, "float[1,2,65] x", "y = MatMul(x, w)", 3, (weight("w", (65, 65), 10),)),
    ),
    RuleCase(
        "MatMul-dynamic-batch-both-op17",
        "MatMul",
        model(17, "float[N,3,4] a, float[N,4,2] bm", "y = MatMul(a, bm)", 3),
        wrt=("a", "bm"),
        feed_shapes={"a": (2, 3, 4), "bm": (2, 4, 2)},
    ),
]
