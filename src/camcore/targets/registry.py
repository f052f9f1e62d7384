"""The target base class and the registries of targets and of their command-line forms.

A target is a scalar function T of one image's output (its row of the explained output); its
``seed`` is dT/d output there, the seed of the backward pass. See :mod:`camcore.targets`.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from camcore.errors import CamcoreError


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax."""
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


#: every public target class, by name (the package's ``__all__`` reads it)
TARGETS: dict[str, type[Target]] = {}


@dataclass(frozen=True)
class TargetType:
    """A target's command-line form: ``--target-type NAME [--target INDEX]``.

    ``build(index, row)`` makes one image's target from ``--target`` (None when omitted) and,
    when ``needs_output(index)``, the image's output row (None otherwise); a None target means
    the top-1 class, chosen in the graph. ``check(index, shape)`` refuses, before any work, an
    index or an output (its declared shape, batch axis included) that cannot work. ``task``:
    the :mod:`camcore.tasks` task it explains (``--target-type`` names the task when ``--task``
    does not).
    """

    name: str
    help: str
    build: Callable[[int | None, np.ndarray | None], Target | None]
    needs_output: Callable[[int | None], bool]
    check: Callable[[int | None, tuple[Any, ...] | None], None]
    task: str = "classify"


#: ``camcore explain --target-type``: name -> its :class:`TargetType`
TARGET_TYPES: dict[str, TargetType] = {}
_T = TypeVar("_T", bound=type)


def register_target(cli: TargetType | None = None) -> Callable[[_T], _T]:
    """Register a target class by its name, and its command-line form ``cli`` if it has one."""

    def wrap(cls: _T) -> _T:
        if cls.__name__ in TARGETS or (cli is not None and cli.name in TARGET_TYPES):
            raise RuntimeError(f"two targets registered as {cls.__name__!r}")
        TARGETS[cls.__name__] = cls
        if cli is not None:
            TARGET_TYPES[cli.name] = cli
        return cls

    return wrap


def as_int(value: Any, what: str) -> int:
    """``value`` as an int, refusing floats, bools and strings with a one-line error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise CamcoreError(f"{what} must be an integer, got {value!r}")
    return int(value)


def per_image(targets: Any, n: int) -> list[Target]:
    """``targets`` as one :class:`Target` per image: a list of n, or one for all.

    Raises:
        CamcoreError: not a sequence of targets, or a length that is neither 1 nor n.
    """
    if isinstance(targets, Target) or not isinstance(targets, Sequence) or isinstance(targets, str):
        raise CamcoreError(
            f"targets must be a list of Target objects (one per image, or one for all), e.g. "
            f"[ClassifierOutputTarget(3)]; got {type(targets).__name__}"
        )
    bad = next((t for t in targets if not isinstance(t, Target)), None)
    if bad is not None:
        raise CamcoreError(
            f"every target must be a Target (e.g. ClassifierOutputTarget(3)), got {type(bad).__name__} {bad!r}"
        )
    out = list(targets)
    if len(out) == 1 and n > 1:
        out = out * n
    if len(out) != n:
        raise CamcoreError(f"got {len(out)} targets for a batch of {n} images")
    return out


def check_class(k: int, output: np.ndarray) -> None:
    if output.ndim != 1 or not -output.shape[0] <= k < output.shape[0]:
        raise CamcoreError(f"class {k} is out of range for an output of shape {output.shape}")


class Target:
    """Base class: ``__call__`` is T(one image's output); ``seed`` its gradient there."""

    class_index: int | None = None
    #: the seed does not depend on the output's values
    linear: bool = False

    def __call__(self, output: np.ndarray) -> float:
        raise NotImplementedError

    def seed(self, output: np.ndarray) -> np.ndarray:
        """dT/d output at ``output`` (one image's output), shaped like it."""
        if self.class_index is None:
            raise NotImplementedError
        check_class(self.class_index, output)
        s = np.zeros_like(output)
        s[self.class_index] = 1.0
        return s
