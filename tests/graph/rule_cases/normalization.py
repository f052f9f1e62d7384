"""Cases for normalization layers (inference mode)."""

from __future__ import annotations

import numpy as np

from tests.graph.rule_cases import RuleCase


def case(name: str, op: str, opset: int, sig: str, body: str, **kw: object) -> RuleCase:
    text = f'<ir_version: 8, opset_import: ["" : {opset}]>\ng {sig} {{\n{body}\n}}'
    return RuleCase(f"{name}-op{opset}", op, text, **kw)  # type: ignore[arg-type]


BN_PARAMS = """s = Constant<value = float[3] {0.5, -1.2, 2.0}>() b = Constant<value = float[3] {0.1, 0.2, -0.3}>()
m = Constant<value = float[3] {0.3, -0.1, 0.0}>() v = Constant<value = float[3] {0.8, 1.5, 0.2}>()"""
GAMMA3 = "s = Constant<value = float[3] {0.5, -1.2, 2.0}>() b = Constant<value = float[3] {0.1, 0.2, -0.3}>()"
GAMMA_2x4 = "s = Constant<value = float[2,4] {0.5, -1.2, 2.0, 1.1, 0.9, 0.3, -0.7, 1.4}>()"

CASES = [
    case(
        "BatchNormalization-nchw",
        "BatchNormalization",
        15,
        "(float[2,3,4,4] x) => (float[2,3,4,4] y)",
        f"{BN_PARAMS}\ny = BatchNormalization<epsilon = 0.01>(x, s, b, m, v)",
    ),
    case(
        "BatchNormalization-dynamic-batch",
        "BatchNormalization",
        11,
        "(float[N,3,5] x) => (float[N,3,5] y)",
        f"{BN_PARAMS}\ny = BatchNormalization(x, s, b, m, v)",
        feed_shapes={"x": (2, 3, 5)},
    ),
    case(
        "BatchNormalization-rank2",
        "BatchNormalization",
        14,
        "(float[4,3] x) => (float[4,3] y)",
        f"{BN_PARAMS}\ny = BatchNormalization<training_mode = 0>(x, s, b, m, v)",
    ),
    case(
        "InstanceNormalization-nchw",
        "InstanceNormalization",
        11,
        "(float[2,3,3,4] x) => (float[2,3,3,4] y)",
        f"{GAMMA3}\ny = InstanceNormalization<epsilon = 0.001>(x, s, b)",
    ),
    case(
        "InstanceNormalization-dynamic-batch",
        "InstanceNormalization",
        13,
        "(float[N,3,6] x) => (float[N,3,6] y)",
        f"{GAMMA3}\ny = InstanceNormalization(x, s, b)",
        feed_shapes={"x": (2, 3, 6)},
    ),
    case(
        "LayerNormalization-last-axis",
        "LayerNormalization",
        17,
        "(float[2,3,4] x) => (float[2,3,4] y)",
        "s = Constant<value = float[4] {0.5, -1.2, 2.0, 1.1}>()\n"
        "b = Constant<value = float[4] {0.1, 0.2, -0.3, 0.0}>()\n"
        "y = LayerNormalization<axis = -1, epsilon = 0.001>(x, s, b)",
    ),
    case(
        "LayerNormalization-last-two-axes-no-bias",
        "LayerNormalization",
        18,
        "(float[N,3,2,4] x) => (float[N,3,2,4] y)",
        f"{GAMMA_2x4}\ny = LayerNormalization<axis = -2>(x, s)",
        feed_shapes={"x": (2, 3, 2, 4)},
    ),
    case(
        "LayerNormalization-mean-invstd-outputs",
        "LayerNormalization",
        21,
        "(float[3,5] x) => (float[3,5] y)",
        "s = Constant<value = float[5] {0.5, -1.2, 2.0, 1.1, 0.7}>()\n"
        "z, mu, r = LayerNormalization<axis = 1>(x, s) t = Mul(z, r) y = Add(t, mu)",
        make_inputs=lambda rng: {"x": (rng.standard_normal((3, 5)) * 0.5 + 1.0).astype(np.float32)},
    ),
]
