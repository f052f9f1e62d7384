"""Finite-difference cases for the gradient rules, one module per rule family.

Each module defines ``CASES: list[RuleCase]``. A case is a tiny model in ONNX text,
the tensors to differentiate with respect to (``wrt``), and the op it covers. The
registry test fails when a registered rule has no case.

Inputs come from a generator seeded by the case id (stable across processes). Rules with
branch points (Relu at 0, HardSwish at ±3, Clip at its bounds, Max/Min ties, ...) get inputs
placed on both sides of every kink at fixed distances (:data:`LADDER`), so that a threshold
moved by more than ``LADDER[0]`` fails whatever the seed; no input is closer to a kink than
``LADDER[0]``, a thousand finite-difference steps, so the central differences stay valid.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

#: distances from a branch point at which inputs are placed (both sides of every kink)
LADDER = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)
#: the closest an input gets to a kink: 1000 steps of the finite differences (eps = 1e-6)
GAP = LADDER[0]

Maker = Callable[[np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class RuleCase:
    """One finite-difference check: ``op`` is the op type whose rule it exercises."""

    id: str
    op: str
    text: str
    wrt: tuple[str, ...] = ("x",)
    #: custom input values, name -> array (default: standard normal per declared shape)
    make_inputs: Callable[[np.random.Generator], dict[str, np.ndarray]] | None = None
    #: augment(..., input_shapes=...) for models whose inputs are symbolic
    input_shapes: dict[str, list[int | str | None]] | None = None
    #: concrete shapes to feed when the declared ones are symbolic
    feed_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    rtol: float = 1e-3
    atol: float = 1e-4
    #: ONNX text of the model whose finite differences define the rule, where the op's own are
    #: useless (the straight-through estimator of a quantizer, a step function: the model with
    #: each QuantizeLinear -> DequantizeLinear pair replaced by Identity); same inputs and output
    oracle: str | None = None


def all_cases() -> list[RuleCase]:
    """Every case of every family module in this package."""
    cases: list[RuleCase] = []
    for mod in pkgutil.iter_modules(__path__):
        cases.extend(importlib.import_module(f"{__name__}.{mod.name}").CASES)
    return cases


def keep_away(values: np.ndarray, kinks: Sequence[float], gap: float = GAP) -> np.ndarray:
    """``values`` with every entry closer than ``gap`` to a kink pushed out to ``kink ± gap``."""
    out = np.array(values, dtype=np.float64)
    for k in kinks:
        close = np.abs(out - k) < gap
        out[close] = k + np.where(out[close] >= k, gap, -gap)
    return out


def near_kinks(
    shape: Sequence[int], kinks: Sequence[float], fill: Callable[[np.random.Generator, int], np.ndarray] | None = None
) -> Maker:
    """Inputs of ``shape`` holding ``kink ± d`` for every kink and every ``d`` in :data:`LADDER`
    (shuffled), the other entries from ``fill`` (standard normal) kept :data:`GAP` away from the kinks."""
    ladder = [k + s * d for k in kinks for d in LADDER for s in (-1.0, 1.0)]
    size = math.prod(shape)
    assert len(ladder) <= size, f"{len(ladder)} branch-point inputs do not fit in {size} entries"

    def make(rng: np.random.Generator) -> np.ndarray:
        rest = fill(rng, size - len(ladder)) if fill is not None else rng.standard_normal(size - len(ladder))
        values = np.concatenate([np.asarray(ladder), keep_away(rest, kinks)])
        return rng.permutation(values).reshape(shape).astype(np.float32)

    return make


def close_to(base: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``base`` moved by ±d, d cycling through :data:`LADDER`: near ties with ``base``, never equal."""
    d = rng.permutation(np.resize(np.asarray(LADDER), base.shape).ravel()).reshape(base.shape)
    return (base + np.where(rng.random(base.shape) < 0.5, -d, d)).astype(np.float32)


def near_ties(shape: Sequence[int], spread: float = 0.02) -> Maker:
    """Distinct values with many near ties: three coarse levels 0.5 apart (a window often holds
    several values of its top level) plus a shuffled fine ramp over ``spread``, with steps of at
    least 2e-5 (20 finite-difference steps: the order of two values never flips)."""
    size = math.prod(shape)
    step = spread / size
    assert step >= 2e-5, f"{size} entries are too many for distinct near ties"

    def make(rng: np.random.Generator) -> np.ndarray:
        coarse = rng.integers(0, 3, size) * 0.5
        fine = rng.permutation(size) * step
        return (coarse + fine).reshape(shape).astype(np.float32)

    return make
