"""Cases for elementwise arithmetic and activations."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tests.graph.rule_cases import RuleCase, close_to, near_kinks


def unary(
    op: str,
    attrs: str = "",
    opset: int = 17,
    shape: str = "2,3,4",
    pos: bool = False,
    kinks: tuple[float, ...] = (),
) -> RuleCase:
    """``y = op(x)``; ``pos`` feeds strictly positive x (Log, Sqrt, ...), ``kinks`` places x on
    both sides of the op's branch points (see :func:`~tests.graph.rule_cases.near_kinks`)."""
    text = f"""<ir_version: 8, opset_import: ["" : {opset}]>
g (float[{shape}] x) => (float[{shape}] y) {{ y = {op}{attrs}(x) }}"""
    dims = tuple(int(d) for d in shape.split(","))
    make = None
    if pos:
        make = lambda rng: {"x": (rng.uniform(0.5, 2.0, dims)).astype(np.float32)}  # noqa: E731
    elif kinks:
        near = near_kinks(dims, kinks)
        make = lambda rng: {"x": near(rng)}  # noqa: E731
    return RuleCase(f"{op}{attrs}-op{opset}", op, text, make_inputs=make)


def _x_near(shape: tuple[int, ...], kinks: tuple[float, ...]):  # type: ignore[no-untyped-def]
    near = near_kinks(shape, kinks)
    return lambda rng: {"x": near(rng)}


def _near_ties(sa: tuple[int, ...], sb: tuple[int, ...]):  # type: ignore[no-untyped-def]
    """``b`` random, ``a`` within ±LADDER of (its broadcast of) ``b``: close, never tied."""

    def make(rng: np.random.Generator) -> dict[str, np.ndarray]:
        b = rng.standard_normal(sb).astype(np.float32)
        return {"a": close_to(np.broadcast_to(b, sa), rng), "b": b}

    return make


def binary(
    op: str,
    sa: str,
    sb: str,
    so: str,
    opset: int = 17,
    wrt: tuple[str, ...] = ("a", "b"),
    pos_b: bool = False,
    make: Callable[[np.random.Generator], dict[str, np.ndarray]] | None = None,
) -> RuleCase:
    text = f"""<ir_version: 8, opset_import: ["" : {opset}]>
g (float[{sa}] a, float[{sb}] b) => (float[{so}] y) {{ y = {op}(a, b) }}"""
    if pos_b:
        dims = tuple(int(d) for d in sb.split(","))
        make = lambda rng: {"b": rng.uniform(0.5, 2.0, dims).astype(np.float32)}  # noqa: E731
    return RuleCase(f"{op}-{sa}-{sb}", op, text, wrt=wrt, make_inputs=make)


CASES = [
    binary("Add", "2,3,4", "2,3,4", "2,3,4"),
    binary("Add", "2,3,4", "3,1", "2,3,4"),
    binary("Sub", "2,1,4", "3,1", "2,3,4"),
    binary("Mul", "2,3,4", "4", "2,3,4"),
    binary("Mul", "1,3,1", "2,1,4", "2,3,4"),
    binary("Div", "2,3,4", "3,1", "2,3,4", pos_b=True),
    # symbolic dims that may or may not be broadcast: the reduction axes are decided at run time
    RuleCase(
        "Add-dynamic-broadcast-op13",
        "Add",
        """<ir_version: 8, opset_import: ["" : 13]>
g (float[N,3] a, float[M,1] b) => (float[?,3] y) { y = Add(a, b) }""",
        wrt=("a", "b"),
        feed_shapes={"a": (2, 3), "b": (1, 1)},
    ),
    RuleCase(
        "Mul-dynamic-broadcast-lower-rank-op17",
        "Mul",
        """<ir_version: 8, opset_import: ["" : 17]>
g (float[N,3,4] a, float[M,4] b) => (float[?,3,4] y) { y = Mul(a, b) }""",
        wrt=("a", "b"),
        feed_shapes={"a": (2, 3, 4), "b": (1, 4)},
    ),
    RuleCase(
        "Sub-dynamic-not-broadcast-op13",
        "Sub",
        """<ir_version: 8, opset_import: ["" : 13]>
g (float[N,3,4] a, float[M,4] b) => (float[?,3,4] y) { y = Sub(a, b) }""",
        wrt=("a", "b"),
        feed_shapes={"a": (2, 3, 4), "b": (3, 4)},
    ),
    # the same from opset 14 (Reshape's allowzero): static reduction axes, portable to OpenVINO
    RuleCase(
        "Add-dynamic-broadcast-op14",
        "Add",
        """<ir_version: 8, opset_import: ["" : 14]>
g (float[N,3] a, float[M,1] b) => (float[?,3] y) { y = Add(a, b) }""",
        wrt=("a", "b"),
        feed_shapes={"a": (2, 3), "b": (1, 1)},
    ),
    RuleCase(
        "Sub-dynamic-not-broadcast-op17",
        "Sub",
        """<ir_version: 8, opset_import: ["" : 17]>
g (float[N,3,4] a, float[M,4] b) => (float[?,3,4] y) { y = Sub(a, b) }""",
        wrt=("a", "b"),
        feed_shapes={"a": (2, 3, 4), "b": (3, 4)},
    ),
    RuleCase(
        "Pow-base-and-exponent",
        "Pow",
        """<ir_version: 8, opset_import: ["" : 15]>
g (float[2,3] a, float[3] b) => (float[2,3] y) { y = Pow(a, b) }""",
        wrt=("a", "b"),
        make_inputs=lambda rng: {"a": rng.uniform(0.5, 2, (2, 3)).astype(np.float32)},
    ),
    RuleCase(
        "Pow-scalar-exponent",
        "Pow",
        """<ir_version: 8, opset_import: ["" : 13]>
g (float[2,3] x) => (float[2,3] y) { e = Constant<value = float {3.0}>() y = Pow(x, e) }""",
    ),
    unary("Neg"),
    RuleCase(
        "Sign-times-x",
        "Sign",
        """<ir_version: 8, opset_import: ["" : 17]>
g (float[2,6] x) => (float[2,6] y) { s = Sign(x) y = Mul(s, x) }""",
        make_inputs=_x_near((2, 6), (0.0,)),
    ),
    unary("Abs", kinks=(0.0,)),
    unary("Reciprocal", pos=True),
    unary("Exp"),
    unary("Log", pos=True),
    unary("Sqrt", pos=True),
    unary("Erf"),
    unary("Identity"),
    unary("Dropout", opset=13),
    RuleCase(
        "Cast-to-double-and-back",
        "Cast",
        """<ir_version: 8, opset_import: ["" : 13]>
g (float[2,3] x) => (float[2,3] y) { d = Cast<to = 11>(x) e = Mul(d, d) y = Cast<to = 1>(e) }""",
    ),
    RuleCase(
        "Where",
        "Where",
        """<ir_version: 8, opset_import: ["" : 16]>
g (float[4,3] x, float[3] z) => (float[4,3] y) { c = Greater(x, z) y = Where(c, x, z) }""",
        wrt=("x", "z"),
        make_inputs=lambda rng: {  # x within ±LADDER of z: the condition flips near every entry
            "x": close_to(np.broadcast_to(z := rng.standard_normal(3).astype(np.float32), (4, 3)), rng),
            "z": z,
        },
    ),
    RuleCase(
        "Sum-variadic-broadcast",
        "Sum",
        """<ir_version: 8, opset_import: ["" : 13]>
g (float[2,3] x, float[3] z) => (float[2,3] y) { y = Sum(x, z, x) }""",
        wrt=("x", "z"),
    ),
    RuleCase(
        "Mean-variadic",
        "Mean",
        """<ir_version: 8, opset_import: ["" : 13]>
g (float[2,3] x, float[2,1] z) => (float[2,3] y) { y = Mean(x, z) }""",
        wrt=("x", "z"),
    ),
    # Min/Max: the inputs differ by ±LADDER only, so a tie test with a tolerance fails
    binary("Min", "2,3,4", "3,4", "2,3,4", make=_near_ties((2, 3, 4), (3, 4))),
    binary("Max", "2,3,4", "2,3,4", "2,3,4", make=_near_ties((2, 3, 4), (2, 3, 4))),
    # activations: inputs on both sides of each branch point
    unary("Relu", kinks=(0.0,)),
    unary("LeakyRelu", "<alpha = 0.1>", kinks=(0.0,)),
    RuleCase(
        "PRelu-channel-slope",
        "PRelu",
        """<ir_version: 8, opset_import: ["" : 16]>
g (float[2,3,4,4] x) => (float[2,3,4,4] y) {
  s = Constant<value = float[3,1,1] {0.1, 0.2, 0.3}>()
  y = PRelu(x, s) }""",
        make_inputs=_x_near((2, 3, 4, 4), (0.0,)),
    ),
    unary("Elu", "<alpha = 0.7>", kinks=(0.0,)),
    unary("Sigmoid"),
    unary("Tanh"),
    unary("Softplus"),
    RuleCase(
        "Clip-inputs",
        "Clip",
        """<ir_version: 8, opset_import: ["" : 13]>
g (float[2,3,5] x) => (float[2,3,5] y) {
  lo = Constant<value = float {-0.5}>() hi = Constant<value = float {0.6}>()
  y = Clip(x, lo, hi) }""",
        make_inputs=_x_near((2, 3, 5), (-0.5, 0.6)),
    ),
    RuleCase(
        "Clip-min-only-opset11",
        "Clip",
        """<ir_version: 7, opset_import: ["" : 11]>
g (float[2,3,4] x) => (float[2,3,4] y) { lo = Constant<value = float {0.0}>() y = Clip(x, lo) }""",
        make_inputs=_x_near((2, 3, 4), (0.0,)),
    ),
    RuleCase(
        "Clip-relu6-opset11",
        "Clip",
        """<ir_version: 7, opset_import: ["" : 11]>
g (float[4,8] x) => (float[4,8] y) {
  lo = Constant<value = float {0.0}>() hi = Constant<value = float {6.0}>()
  y = Clip(x, lo, hi) }""",
        make_inputs=_x_near((4, 8), (0.0, 6.0)),
    ),
    RuleCase(
        "Clip-max-only-opset13",
        "Clip",
        """<ir_version: 8, opset_import: ["" : 13]>
g (float[2,3,4] x) => (float[2,3,4] y) { hi = Constant<value = float {0.25}>() y = Clip(x, , hi) }""",
        make_inputs=_x_near((2, 3, 4), (0.25,)),
    ),
    # HardSigmoid: alpha·x + beta leaves (0, 1) at x = -beta/alpha and (1 - beta)/alpha
    unary("HardSigmoid", "<alpha = 0.3, beta = 0.4>", shape="2,3,5", kinks=(-0.4 / 0.3, 0.6 / 0.3)),
    unary("HardSigmoid", opset=13, shape="2,3,5", kinks=(-2.5, 2.5)),  # defaults alpha 0.2, beta 0.5
    RuleCase(
        "HardSwish-wide-range",
        "HardSwish",
        """<ir_version: 8, opset_import: ["" : 14]>
g (float[4,8] x) => (float[4,8] y) { y = HardSwish(x) }""",
        make_inputs=lambda rng: {
            "x": near_kinks((4, 8), (-3.0, 3.0), fill=lambda r, n: r.uniform(-5, 5, n))(rng),
        },
    ),
    unary("Gelu", opset=20),
    unary("Gelu", '<approximate = "tanh">', opset=20),
    unary("Softmax", "<axis = 1>", opset=13),
    unary("Softmax", "<axis = 1>", opset=11),
    unary("LogSoftmax", "<axis = -1>", opset=13),
    unary("LogSoftmax", "<axis = 1>", opset=12),
    # the default axis: -1 from opset 13, 1 (and the input coerced to 2-D there) before
    unary("Softmax", opset=11),
    unary("LogSoftmax", opset=12),
    unary("Softmax", opset=13),
]
