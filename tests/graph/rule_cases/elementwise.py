"""Cases for elementwise arithmetic and activations."""

from __future__ import annotations

import numpy as np

from tests.graph.rule_cases import RuleCase


def unary(op: str, attrs: str = "", opset: int = 17, shape: str = "2,3,4", pos: bool = False) -> RuleCase:
    """``y = op(x)``; ``pos`` feeds strictly positive x (Log, Sqrt, ...)."""
    text = f"""<ir_version: 8, opset_import: ["" : {opset}]>
g (float[{shape}] x) => (float[{shape}] y) {{ y = {op}{attrs}(x) }}"""
    make = None
    if pos:
        dims = tuple(int(d) for d in shape.split(","))
        make = lambda rng: {"x": (rng.uniform(0.5, 2.0, dims)).astype(np.float32)}  # noqa: E731
    return RuleCase(f"{op}{attrs}-op{opset}", op, text, make_inputs=make)


def binary(
    op: str, sa: str, sb: str, so: str, opset: int = 17, wrt: tuple[str, ...] = ("a", "b"), pos_b: bool = False
) -> RuleCase:
    text = f"""<ir_version: 8, opset_import: ["" : {opset}]>
g (float[{sa}] a, float[{sb}] b) => (float[{so}] y) {{ y = {op}(a, b) }}"""
    make = None
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
g (float[2,3] x) => (float[2,3] y) { s = Sign(x) y = Mul(s, x) }""",
    ),
    unary("Abs"),
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
g (float[2,3] x, float[3] z) => (float[2,3] y) { c = Greater(x, z) y = Where(c, x, z) }""",
        wrt=("x", "z"),
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
    binary("Min", "2,3,4", "3,4", "2,3,4"),
    binary("Max", "2,3,4", "2,3,4", "2,3,4"),
    # activations
    unary("Relu"),
    unary("LeakyRelu", "<alpha = 0.1>"),
    RuleCase(
        "PRelu-channel-slope",
        "PRelu",
        """<ir_version: 8, opset_import: ["" : 16]>
g (float[2,3,4,4] x) => (float[2,3,4,4] y) {
  s = Constant<value = float[3,1,1] {0.1, 0.2, 0.3}>()
  y = PRelu(x, s) }""",
    ),
    unary("Elu", "<alpha = 0.7>"),
    unary("Sigmoid"),
    unary("Tanh"),
    unary("Softplus"),
    RuleCase(
        "Clip-inputs",
        "Clip",
        """<ir_version: 8, opset_import: ["" : 13]>
g (float[2,3,4] x) => (float[2,3,4] y) {
  lo = Constant<value = float {-0.5}>() hi = Constant<value = float {0.6}>()
  y = Clip(x, lo, hi) }""",
    ),
    RuleCase(
        "Clip-min-only-opset11",
        "Clip",
        """<ir_version: 7, opset_import: ["" : 11]>
g (float[2,3,4] x) => (float[2,3,4] y) { lo = Constant<value = float {0.0}>() y = Clip(x, lo) }""",
    ),
    unary("HardSigmoid", "<alpha = 0.3, beta = 0.4>"),
    RuleCase(
        "HardSwish-wide-range",
        "HardSwish",
        """<ir_version: 8, opset_import: ["" : 14]>
g (float[4,8] x) => (float[4,8] y) { y = HardSwish(x) }""",
        make_inputs=lambda rng: {"x": rng.uniform(-5, 5, (4, 8)).astype(np.float32)},
    ),
    unary("Gelu", opset=20),
    unary("Gelu", '<approximate = "tanh">', opset=20),
    unary("Softmax", "<axis = 1>", opset=13),
    unary("Softmax", "<axis = 1>", opset=11),
    unary("LogSoftmax", "<axis = -1>", opset=13),
    unary("LogSoftmax", "<axis = 1>", opset=12),
]
