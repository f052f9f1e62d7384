"""The single registry of CAM methods. The API, the CLI choices, the README table and
the tests all read it; adding a method is adding one registered function."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: (activations (N, C, *spatial), gradients (N, C, *spatial)) -> raw map (N, *spatial)
MapFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class CamMethod:
    """A registered method: its public class name, CLI key, map function and summary."""

    name: str
    key: str
    fn: MapFn
    summary: str
    needs_gradients: bool = True


METHODS: dict[str, CamMethod] = {}


def register_method(name: str, key: str, summary: str, needs_gradients: bool = True) -> Callable[[MapFn], MapFn]:
    """Register ``fn`` as method ``name`` (the pytorch-grad-cam class name) under CLI ``key``."""

    def wrap(fn: MapFn) -> MapFn:
        if key in METHODS:
            raise RuntimeError(f"two CAM methods registered as {key!r}")
        METHODS[key] = CamMethod(name, key, fn, summary, needs_gradients)
        return fn

    return wrap


def method_by_key(key: str) -> CamMethod:
    from camcore.errors import CamcoreError

    if key not in METHODS:
        raise CamcoreError(f"unknown method {key!r}; choose from {', '.join(sorted(METHODS))}")
    return METHODS[key]
