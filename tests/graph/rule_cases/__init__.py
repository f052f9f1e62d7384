"""Finite-difference cases for the gradient rules, one module per rule family.

Each module defines ``CASES: list[RuleCase]``. A case is a tiny model in ONNX text,
the tensors to differentiate with respect to (``wrt``), and the op it covers. The
registry test fails when a registered rule has no case.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


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


def all_cases() -> list[RuleCase]:
    """Every case of every family module in this package."""
    cases: list[RuleCase] = []
    for mod in pkgutil.iter_modules(__path__):
        cases.extend(importlib.import_module(f"{__name__}.{mod.name}").CASES)
    return cases
