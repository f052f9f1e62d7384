"""Targets on classifier and regression outputs: a logit, its softmax probability, ShapleyCAM's
ReST, a binary logit, every raw score, a regression value, Finer-CAM's weighted difference."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from camcore.errors import CamcoreError
from camcore.targets.registry import Target, TargetType, as_int, check_class, register_target, softmax


def _classes_of(shape: tuple[Any, ...] | None) -> int | None:
    return shape[1] if shape is not None and len(shape) == 2 and isinstance(shape[1], int) and shape[1] > 0 else None


def _check_class_output(kind: str, index: int | None, shape: tuple[Any, ...] | None) -> None:
    if shape is not None and len(shape) != 2:
        raise CamcoreError(
            f"--target-type {kind} needs an (N, classes) output, but the model's has shape {list(shape)}; "
            "use --target-type raw (every score) or regression --target I (one value)"
        )
    classes = _classes_of(shape)
    if index is not None and (index < 0 or (classes is not None and index >= classes)):
        raise CamcoreError(f"--target {index} is out of range for {classes} classes (0..{(classes or 0) - 1})")


def _class_target(index: int | None, row: np.ndarray | None) -> Target | None:
    return None if index is None else ClassifierOutputTarget(index)


@register_target(
    TargetType(
        "class",
        "the logit of a class (default: each image's top-1)",
        _class_target,
        lambda index: False,
        lambda index, shape: _check_class_output("class", index, shape),
    )
)
@dataclass(frozen=True)
class ClassifierOutputTarget(Target):
    """T = z[category]: the logit of ``category`` (pytorch-grad-cam's target).

    Example:
        >>> cam(x, targets=[ClassifierOutputTarget(281)])  # doctest: +SKIP
    """

    category: int
    linear = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "category", as_int(self.category, "ClassifierOutputTarget's category"))

    @property
    def class_index(self) -> int:  # type: ignore[override]
        return int(self.category)

    def __call__(self, output: np.ndarray) -> float:
        # ``[..., k]`` also takes a batch of rows (as pytorch-grad-cam): an array there, kept as is
        return output[..., self.category]  # type: ignore[return-value]


def _softmax_target(index: int | None, row: np.ndarray | None) -> Target:
    if index is None:
        assert row is not None, "needs_output: the row is given"
        index = int(np.argmax(row))
    return ClassifierOutputSoftmaxTarget(index)


@register_target(
    TargetType(
        "softmax",
        "the softmax probability of a class (default: the top-1)",
        _softmax_target,
        lambda index: index is None,
        lambda index, shape: _check_class_output("softmax", index, shape),
    )
)
@dataclass(frozen=True)
class ClassifierOutputSoftmaxTarget(Target):
    """T = softmax(z)[k]; seed p_k (e_k − p).

    Example:
        >>> s = ClassifierOutputSoftmaxTarget(0).seed(np.array([0.0, 0.0])); s.tolist()
        [0.25, -0.25]
    """

    category: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "category", as_int(self.category, "ClassifierOutputSoftmaxTarget's category"))

    def __call__(self, output: np.ndarray) -> float:
        # ``[..., k]`` also takes a batch of rows (as pytorch-grad-cam): an array there, kept as is
        return softmax(output)[..., self.category]  # type: ignore[return-value]

    def seed(self, output: np.ndarray) -> np.ndarray:
        check_class(self.category, output)
        p = softmax(output.astype(np.float64))
        s = -p[self.category] * p
        s[self.category] += p[self.category]
        return s.astype(output.dtype)


@register_target()
@dataclass(frozen=True)
class ClassifierOutputReST(Target):
    """T = z_k − CE(z, k) = 2 z_k − logsumexp(z) (ShapleyCAM's ReST target); seed 2 e_k − p."""

    category: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "category", as_int(self.category, "ClassifierOutputReST's category"))

    def __call__(self, output: np.ndarray) -> float:
        z = output.astype(np.float64)
        return float(2 * z[self.category] - (z.max() + np.log(np.exp(z - z.max()).sum())))

    def seed(self, output: np.ndarray) -> np.ndarray:
        check_class(self.category, output)
        s = -softmax(output.astype(np.float64))
        s[self.category] += 2.0
        return s.astype(output.dtype)


def _check_binary(index: int | None, shape: tuple[Any, ...] | None) -> None:
    if index not in (None, 0, 1):
        raise CamcoreError(f"--target-type binary takes --target 0 or 1, got {index}")
    row = [] if shape is None else list(shape[1:])
    if shape is not None and not (row == [] or (len(row) == 1 and (not isinstance(row[0], int) or row[0] <= 1))):
        raise CamcoreError(
            f"--target-type binary needs a single-logit output (N,) or (N, 1), but the model's has shape "
            f"{list(shape)}; use --target-type class"
        )


@register_target(
    TargetType(
        "binary",
        "±the single logit of a binary classifier (--target 1, default, or 0)",
        lambda index, row: BinaryClassifierOutputTarget(1 if index is None else index),
        lambda index: False,
        _check_binary,
    )
)
@dataclass(frozen=True)
class BinaryClassifierOutputTarget(Target):
    """T = ±output for a single-logit binary classifier: + for ``category`` 1, − otherwise."""

    category: int
    linear = True

    def __post_init__(self) -> None:
        category = as_int(self.category, "BinaryClassifierOutputTarget's category")
        if category not in (0, 1):
            raise CamcoreError(f"BinaryClassifierOutputTarget's category must be 0 or 1, got {category}")
        object.__setattr__(self, "category", category)

    def __call__(self, output: np.ndarray) -> float:
        return float(np.sum(output)) * (1.0 if self.category == 1 else -1.0)

    def seed(self, output: np.ndarray) -> np.ndarray:
        return np.full_like(output, 1.0 if self.category == 1 else -1.0)


def _check_raw(index: int | None, shape: tuple[Any, ...] | None) -> None:
    if index is not None:
        raise CamcoreError("--target-type raw sums every score: it takes no --target")


@register_target(
    TargetType(
        "raw",
        "the sum of all raw scores (detectors, OCR, any output)",
        lambda index, row: RawScoresOutputTarget(),
        lambda index: False,
        _check_raw,
        task="raw",
    )
)
@dataclass(frozen=True)
class RawScoresOutputTarget(Target):
    """T = Σ output: every score at once (pytorch-grad-cam sums the raw scores)."""

    linear = True

    def __call__(self, output: np.ndarray) -> float:
        return float(np.sum(output))

    def seed(self, output: np.ndarray) -> np.ndarray:
        return np.ones_like(output)


def _check_regression(index: int | None, shape: tuple[Any, ...] | None) -> None:
    if shape is None:
        return
    size = int(np.prod([d for d in shape[1:]])) if all(isinstance(d, int) and d > 0 for d in shape[1:]) else None
    if index is None and size not in (None, 1):
        raise CamcoreError(
            f"--target-type regression without --target needs one value per image, but the output has shape "
            f"{list(shape)}; pass --target I (0..{(size or 1) - 1})"
        )
    if index is not None and (index < 0 or (size is not None and index >= size)):
        raise CamcoreError(f"--target {index} is out of range for an output of {size} value(s) per image")


@register_target(
    TargetType(
        "regression",
        "a scalar output, or its --target-th value (flattened)",
        lambda index, row: RegressionOutputTarget(index),
        lambda index: False,
        _check_regression,
        task="regress",
    )
)
@dataclass(frozen=True)
class RegressionOutputTarget(Target):
    """T = output[index] of a regression head (the whole scalar output when ``index`` is None).

    Example:
        >>> cam(x, targets=[RegressionOutputTarget()])  # doctest: +SKIP
    """

    index: int | tuple[int, ...] | None = None
    linear = True

    def __post_init__(self) -> None:
        if self.index is not None and not isinstance(self.index, tuple):
            object.__setattr__(self, "index", as_int(self.index, "RegressionOutputTarget's index"))

    def __call__(self, output: np.ndarray) -> float:
        if self.index is None:
            return float(output.reshape(-1)[0])
        return float(output[self.index] if isinstance(self.index, tuple) else output.reshape(-1)[self.index])

    def seed(self, output: np.ndarray) -> np.ndarray:
        s = np.zeros_like(output)
        if self.index is None:
            if output.size != 1:
                raise CamcoreError(f"RegressionOutputTarget() needs a scalar output per image, got shape "
                                   f"{output.shape}; pass index=")  # fmt: skip
            s.reshape(-1)[0] = 1.0
        elif isinstance(self.index, tuple):
            s[self.index] = 1.0
        else:
            s.reshape(-1)[self.index] = 1.0
        return s


@register_target()
@dataclass(frozen=True)
class FinerWeightedTarget(Target):
    """Finer-CAM's target: T = Σ_j p_j (z_m − α z_j) / (Σ_j p_j + 1e-9), p = softmax(z)."""

    main_category: int
    comparison_categories: Sequence[int] = field(default=(), compare=False)
    alpha: float = 1.0

    def __call__(self, output: np.ndarray) -> float:
        z = output.astype(np.float64)
        p = softmax(z)
        js = list(self.comparison_categories)
        num = sum(p[j] * (z[self.main_category] - self.alpha * z[j]) for j in js)
        return float(num / (sum(p[j] for j in js) + 1e-9))

    def seed(self, output: np.ndarray) -> np.ndarray:
        z = output.astype(np.float64)
        p = softmax(z)
        m, js = self.main_category, list(self.comparison_categories)
        num = sum(p[j] * (z[m] - self.alpha * z[j]) for j in js)
        den = sum(p[j] for j in js) + 1e-9
        d_num, d_den = np.zeros_like(z), np.zeros_like(z)
        for j in js:
            dp = -p[j] * p
            dp[j] += p[j]  # d p_j / d z = p_j (e_j − p)
            d_num += dp * (z[m] - self.alpha * z[j])
            d_num[m] += p[j]
            d_num[j] -= self.alpha * p[j]
            d_den += dp
        return ((d_num * den - num * d_den) / den**2).astype(output.dtype)


def top1_targets(outputs: np.ndarray) -> list[Target]:
    """``ClassifierOutputTarget`` of each image's top-1 class, from an (N, classes) output."""
    if outputs.ndim != 2:
        raise CamcoreError(
            f"the top-1 class needs an (N, classes) output, but it has shape {tuple(outputs.shape)}; pass targets "
            "(or --target-type raw, regression, ... on the command line)"
        )
    return [ClassifierOutputTarget(int(k)) for k in np.argmax(outputs, axis=-1)]
