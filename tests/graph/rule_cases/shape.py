"""Cases for shape and indexing ops (Reshape, Transpose, Concat, Slice, Gather, ...)."""

from __future__ import annotations

import numpy as np

from tests.graph.rule_cases import RuleCase


def case(name: str, op: str, opset: int, sig: str, body: str, **kw: object) -> RuleCase:
    text = f'<ir_version: 8, opset_import: ["" : {opset}]>\ng {sig} {{\n{body}\n}}'
    return RuleCase(f"{name}-op{opset}", op, text, **kw)  # type: ignore[arg-type]


N = {"x": (2, 3, 4)}
I64 = "int64"

CASES = [
    # ---- pure reshapes
    case(
        "Reshape-dynamic-batch",
        "Reshape",
        13,
        "(float[N,3,4] x) => (float[N,12] y)",
        f"s = Constant<value = {I64}[2] {{0, 12}}>() y = Reshape(x, s)",
        feed_shapes=N,
    ),
    case(
        "Reshape-minus-one",
        "Reshape",
        11,
        "(float[2,3,4] x) => (float[4,6] y)",
        f"s = Constant<value = {I64}[2] {{4, -1}}>() y = Reshape(x, s)",
    ),
    case("Flatten-axis2", "Flatten", 11, "(float[2,3,4] x) => (float[6,4] y)", "y = Flatten<axis = 2>(x)"),
    case(
        "Flatten-dynamic-batch",
        "Flatten",
        21,
        "(float[N,3,4] x) => (float[N,12] y)",
        "y = Flatten<axis = 1>(x)",
        feed_shapes=N,
    ),
    case("Transpose-default-perm", "Transpose", 11, "(float[2,3,4] x) => (float[4,3,2] y)", "y = Transpose(x)"),
    case(
        "Transpose-nhwc-dynamic",
        "Transpose",
        13,
        "(float[N,3,4,5] x) => (float[N,4,5,3] y)",
        "y = Transpose<perm = [0, 2, 3, 1]>(x)",
        feed_shapes={"x": (2, 3, 4, 5)},
    ),
    case("Squeeze-attr", "Squeeze", 11, "(float[2,1,4,1] x) => (float[2,4] y)", "y = Squeeze<axes = [1, -1]>(x)"),
    case(
        "Squeeze-input-axes",
        "Squeeze",
        13,
        "(float[N,1,4] x) => (float[N,4] y)",
        f"a = Constant<value = {I64}[1] {{-2}}>() y = Squeeze(x, a)",
        feed_shapes={"x": (3, 1, 4)},
    ),
    case("Unsqueeze-attr", "Unsqueeze", 11, "(float[2,4] x) => (float[2,1,4,1] y)", "y = Unsqueeze<axes = [1, 3]>(x)"),
    case(
        "Unsqueeze-input-axes",
        "Unsqueeze",
        18,
        "(float[N,4] x) => (float[N,4,1] y)",
        f"a = Constant<value = {I64}[1] {{-1}}>() y = Unsqueeze(x, a)",
        feed_shapes={"x": (3, 4)},
    ),
    # ---- Concat / Split
    case(
        "Concat-three-inputs",
        "Concat",
        13,
        "(float[2,3] a, float[2,1] b, float[2,2] c) => (float[2,6] y)",
        "y = Concat<axis = -1>(a, b, c)",
        wrt=("a", "b", "c"),
    ),
    case(
        "Concat-only-middle-needs-grad",
        "Concat",
        11,
        "(float[2,3] a, float[2,1] b, float[2,2] c) => (float[2,6] y)",
        "t = Mul(b, b) y = Concat<axis = 1>(a, t, c)",
        wrt=("b",),
    ),
    case(
        "Concat-dynamic-sizes",
        "Concat",
        13,
        "(float[N,2] a, float[M,2] b) => (float[K,2] y)",
        "y = Concat<axis = 0>(a, b)",
        wrt=("a", "b"),
        feed_shapes={"a": (3, 2), "b": (2, 2)},
    ),
    case(
        "Split-attr-uneven",
        "Split",
        11,
        "(float[2,6] x) => (float[2,5] y)",
        "p, q, r = Split<axis = 1, split = [2, 1, 3]>(x) s = Mul(r, r) y = Concat<axis = 1>(s, p)",
    ),
    case(
        "Split-input-sizes",
        "Split",
        13,
        "(float[N,6] x) => (float[N,3] y)",
        f"k = Constant<value = {I64}[2] {{3, 3}}>() p, q = Split<axis = -1>(x, k) y = Mul(p, q)",
        feed_shapes={"x": (2, 6)},
    ),
    case(
        "Split-num-outputs",
        "Split",
        18,
        "(float[5,2] x) => (float[2,2] y)",
        "p, q, r = Split<axis = 0, num_outputs = 3>(x) y = Mul(q, q)",
    ),
    # ---- Slice
    case(  # YOLOv8's dist2bbox: the bounds computed from Shape at run time; the batch dynamic
        "Slice-bounds-from-shape",
        "Slice",
        17,
        "(float[N,4,5] x) => (float[N,2,5] y)",
        f"""s = Shape(x) i = Constant<value = {I64}[1] {{1}}>() c = Gather<axis = 0>(s, i)
two = Constant<value = {I64}[1] {{2}}>() h = Div(c, two) e = Mul(h, two) y = Slice(x, h, e, i)""",
        feed_shapes={"x": (2, 4, 5)},
    ),
    case(
        "Slice-negative-start-int-max",
        "Slice",
        13,
        "(float[N,6,5] x) => (float[N,3,4] y)",
        f"""s = Constant<value = {I64}[2] {{-3, 1}}>() e = Constant<value = {I64}[2] {{9223372036854775807, 100}}>()
a = Constant<value = {I64}[2] {{1, -1}}>() y = Slice(x, s, e, a)""",
        feed_shapes={"x": (2, 6, 5)},
    ),
    case(
        "Slice-steps",
        "Slice",
        11,
        "(float[2,7,6] x) => (float[2,3,2] y)",
        f"""s = Constant<value = {I64}[2] {{1, 0}}>() e = Constant<value = {I64}[2] {{7, 5}}>()
a = Constant<value = {I64}[2] {{1, 2}}>() t = Constant<value = {I64}[2] {{2, 3}}>() y = Slice(x, s, e, a, t)""",
    ),
    case(
        "Slice-negative-steps",
        "Slice",
        13,
        "(float[2,7,6] x) => (float[2,7,3] y)",
        f"""s = Constant<value = {I64}[2] {{-1, 5}}>() e = Constant<value = {I64}[2] {{-9223372036854775808, 0}}>()
a = Constant<value = {I64}[2] {{1, 2}}>() t = Constant<value = {I64}[2] {{-1, -2}}>() y = Slice(x, s, e, a, t)""",
    ),
    case(
        "Slice-default-axes",
        "Slice",
        18,
        "(float[4,5] x) => (float[2,3] y)",
        f"s = Constant<value = {I64}[2] {{1, -4}}>() e = Constant<value = {I64}[2] {{3, 4}}>() y = Slice(x, s, e)",
    ),
    # ---- Gather
    case(
        "Gather-scalar-class-token",
        "Gather",
        13,
        "(float[N,5,4] x) => (float[N,4] y)",
        f"i = Constant<value = {I64} {{0}}>() y = Gather<axis = 1>(x, i)",
        feed_shapes={"x": (2, 5, 4)},
    ),
    case(
        "Gather-scalar-negative",
        "Gather",
        11,
        "(float[5,4] x) => (float[4] y)",
        f"i = Constant<value = {I64} {{-2}}>() y = Gather<axis = 0>(x, i)",
    ),
    case(
        "Gather-1d-repeats-axis0",
        "Gather",
        13,
        "(float[5,3] x) => (float[4,3] y)",
        f"i = Constant<value = {I64}[4] {{4, -1, 0, 2}}>() y = Gather<axis = 0>(x, i)",
    ),
    case(
        "Gather-runtime-2d-axis1",
        "Gather",
        11,
        "(float[2,5,3] x, int64[2,2] i) => (float[2,2,2,3] y)",
        "y = Gather<axis = 1>(x, i)",
        make_inputs=lambda rng: {"i": np.array([[1, -1], [1, 3]], dtype=np.int64)},
    ),
    case(
        "Gather-runtime-dynamic-axis",
        "Gather",
        18,
        "(float[N,3] x, int32[3] i) => (float[3,3] y)",
        "y = Gather<axis = 0>(x, i)",
        feed_shapes={"x": (4, 3)},
        make_inputs=lambda rng: {"i": np.array([3, -4, 3], dtype=np.int32)},
    ),
    case(
        "Gather-last-axis",
        "Gather",
        21,
        "(float[2,5] x) => (float[2,3] y)",
        f"i = Constant<value = {I64}[3] {{1, 4, 1}}>() y = Gather<axis = -1>(x, i)",
    ),
    # ---- Pad / Expand / Tile
    case(
        "Pad-constant",
        "Pad",
        11,
        "(float[2,3,4] x) => (float[2,6,5] y)",
        f"p = Constant<value = {I64}[6] {{0, 1, 0, 0, 2, 1}}>() y = Pad(x, p)",
    ),
    case(
        "Pad-value-and-crop",
        "Pad",
        13,
        "(float[2,3,4] x) => (float[2,4,2] y)",
        f"""p = Constant<value = {I64}[6] {{0, 2, -1, 0, -1, -1}}>() v = Constant<value = float {{1.5}}>()
y = Pad(x, p, v)""",
    ),
    case(
        "Pad-axes-dynamic-batch",
        "Pad",
        18,
        "(float[N,3,4] x) => (float[N,5,4] y)",
        f"""p = Constant<value = {I64}[4] {{1, 0, 1, 0}}>() a = Constant<value = {I64}[2] {{-2, -1}}>()
y = Pad(x, p, , a)""",
        feed_shapes=N,
    ),
    case(
        "Pad-reflect",
        "Pad",
        13,
        "(float[2,3,4] x) => (float[2,5,7] y)",
        f'p = Constant<value = {I64}[6] {{0, 1, 2, 0, 1, 1}}>() y = Pad<mode = "reflect">(x, p)',
    ),
    case(
        "Pad-edge-dynamic-batch",
        "Pad",
        11,
        "(float[N,3,4] x) => (float[N,3,8] y)",
        f'p = Constant<value = {I64}[6] {{0, 0, 3, 0, 0, 1}}>() y = Pad<mode = "edge">(x, p)',
        feed_shapes=N,
    ),
    case(
        "Pad-wrap-axes",
        "Pad",
        19,
        "(float[2,3,4] x) => (float[2,3,7] y)",
        f"""p = Constant<value = {I64}[2] {{2, 1}}>() a = Constant<value = {I64}[1] {{-1}}>()
y = Pad<mode = "wrap">(x, p, , a)""",
    ),
    case(
        "Expand-broadcast",
        "Expand",
        13,
        "(float[3,1] x) => (float[2,3,4] y)",
        f"s = Constant<value = {I64}[3] {{2, 1, 4}}>() y = Expand(x, s)",
    ),
    case(
        "Tile-repeats",
        "Tile",
        13,
        "(float[2,3] x) => (float[4,9] y)",
        f"r = Constant<value = {I64}[2] {{2, 3}}>() y = Tile(x, r)",
    ),
    case(
        "Tile-dynamic-batch",
        "Tile",
        11,
        "(float[N,3] x) => (float[N,6] y)",
        f"r = Constant<value = {I64}[2] {{1, 2}}>() y = Tile(x, r)",
        feed_shapes={"x": (2, 3)},
    ),
]
