"""Cases for the straight-through estimator of QuantizeLinear/DequantizeLinear.

A quantizer is a step function: its finite differences are zero or huge. The rule is checked
against its definition instead (:attr:`RuleCase.oracle`): the same model with each
QuantizeLinear -> DequantizeLinear pair replaced by Identity. Everything after a pair is
linear here, so the straight-through gradient does not depend on where the quantizer rounds.
"""

from __future__ import annotations

from tests.graph.rule_cases import RuleCase

_IR = {10: 5, 13: 7, 19: 9, 21: 10}


def pair(
    op: str,
    opset: int,
    qtype: str,
    scale: str,
    zero_point: str,
    attrs: str = "",
    shape: str = "2,3,4",
    tag: str = "per-tensor",
) -> RuleCase:
    """``y = DequantizeLinear(QuantizeLinear(2·x)) · c``: the rule through the pair, scaled on both
    sides so that a gradient passed through unchanged is told apart from one read off the seed.
    ``scale`` and ``zero_point`` are ``"dims|values"`` (no dims: a scalar)."""
    s_dims, s_values = scale.split("|")
    zp_dims, zp_values = zero_point.split("|")
    s_type = f"float[{s_dims}]" if s_dims else "float"
    zp_type = f"{qtype}[{zp_dims}]" if zp_dims else qtype
    consts = f"{s_type} s = {{{s_values}}}, {zp_type} zp = {{{zp_values}}}, float two = {{2.0}}, float c = {{-1.5}}"
    head = f'<ir_version: {_IR[opset]}, opset_import: ["" : {opset}]>\ng (float[{shape}] x) => (float[{shape}] y)'
    text = f"""{head} <{consts}> {{
    x2 = Mul(x, two)
    q = QuantizeLinear{attrs}(x2, s, zp)
    d = DequantizeLinear{attrs}(q, s, zp)
    y = Mul(d, c)
}}"""
    oracle = f"""{head} <float two = {{2.0}}, float c = {{-1.5}}> {{
    x2 = Mul(x, two)
    d = Identity(x2)
    y = Mul(d, c)
}}"""
    return RuleCase(f"{op}-{tag}-{qtype}-op{opset}", op, text, oracle=oracle)


_SHARED = """<ir_version: 8, opset_import: ["" : 17]>
g (float[2,3,4] x) => (float[2,3,4] y) <float s = {0.02}, int8 zp = {3}, float c = {0.5}> {
    q = QuantizeLinear(x, s, zp)
    a = DequantizeLinear(q, s, zp)
    b = DequantizeLinear(q, s, zp)
    sq = Mul(x, x)
    bc = Mul(b, c)
    ab = Add(a, bc)
    y = Add(ab, sq)
}"""

_SHARED_ORACLE = """<ir_version: 8, opset_import: ["" : 17]>
g (float[2,3,4] x) => (float[2,3,4] y) <float c = {0.5}> {
    a = Identity(x)
    b = Identity(x)
    sq = Mul(x, x)
    bc = Mul(b, c)
    ab = Add(a, bc)
    y = Add(ab, sq)
}"""

CASES = [
    # opset 10: per-tensor only
    pair("QuantizeLinear", 10, "uint8", "|0.05", "|128"),
    pair("DequantizeLinear", 10, "int8", "|0.05", "|-2"),
    # opset 13: per-axis scales and zero points
    pair("QuantizeLinear", 13, "int8", "3|0.02, 0.05, 0.1", "3|0, -3, 5", "<axis = 1>", tag="per-channel"),
    pair(
        "DequantizeLinear", 13, "uint8", "4|0.02, 0.05, 0.1, 0.03", "4|128, 120, 0, 255", "<axis = -1>", tag="last-axis"
    ),
    pair("QuantizeLinear", 19, "int8", "|0.03", "|0"),
    pair("DequantizeLinear", 19, "uint8", "2|0.02, 0.05", "2|100, 140", "<axis = 0>", tag="per-channel"),
    # opset 21: per-axis and blocked (block_size along axis 2)
    pair("QuantizeLinear", 21, "int8", "3|0.02, 0.05, 0.1", "3|1, 0, -1", "<axis = 1>", tag="per-channel"),
    pair("DequantizeLinear", 21, "uint8", "|0.04", "|128"),
    pair(
        "DequantizeLinear",
        21,
        "int8",
        "2,3,2|0.02, 0.05, 0.1, 0.03, 0.04, 0.06, 0.02, 0.05, 0.1, 0.03, 0.04, 0.06",
        "2,3,2|0, 1, -1, 2, 0, 0, 3, -3, 0, 1, 1, 0",
        "<axis = 2, block_size = 2>",
        tag="blocked",
    ),
    # one quantized tensor read by two DequantizeLinear nodes: its float gradients are summed
    RuleCase("QuantizeLinear-two-readers-op17", "QuantizeLinear", _SHARED, oracle=_SHARED_ORACLE),
]
