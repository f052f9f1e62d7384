"""The single registry of metrics: the README table, ``camcore.metrics.__all__`` and the
tests read it; adding a metric is adding one registered class."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import onnx

from camcore.errors import CamcoreError

Kind = Literal["perturbation", "localisation", "sanity"]
T = TypeVar("T", bound=type)


@dataclass(frozen=True)
class MetricInfo:
    """A registered metric: class name, kind, summary, and the better direction."""

    name: str
    cls: type
    summary: str
    kind: Kind
    #: "higher" or "lower" is better ("" where it is not a score)
    better: str = "higher"
    reference: str = ""


METRICS: dict[str, MetricInfo] = {}


def register_metric(
    summary: str, *, kind: Kind = "perturbation", better: str = "higher", reference: str = ""
) -> Callable[[T], T]:
    """Register a metric class under its class name."""

    def wrap(cls: T) -> T:
        if cls.__name__ in METRICS:
            raise RuntimeError(f"two metrics registered as {cls.__name__!r}")
        METRICS[cls.__name__] = MetricInfo(cls.__name__, cls, summary, kind, better, reference)
        return cls

    return wrap


def metric_by_name(name: str) -> MetricInfo:
    """The metric registered as ``name``; a clear error otherwise."""
    if name in METRICS:
        return METRICS[name]
    raise CamcoreError(f"unknown metric {name!r}; choose from {', '.join(sorted(METRICS))}")


# ---------------------------------------------------------------------- scoring a model
def as_runner(model: Any) -> Any:
    """A CAM object to score with: ``model`` itself if it has ``scores``, else a
    :class:`camcore.GradCAM` on the ONNX path / ModelProto (its input as the layer)."""
    if hasattr(model, "scores") and hasattr(model, "input_names"):
        return model
    if isinstance(model, (str, Path, onnx.ModelProto)):
        from camcore.cam import _CLASSES, _first_input

        return _CLASSES["GradCAM"](model, target_layers=_first_input(model))
    raise CamcoreError(f"model must be a CAM object, an ONNX path or a ModelProto, not {type(model).__name__}")


def feeds_of(runner: Any, input_tensor: np.ndarray | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Named feeds; the image is the model's first input."""
    if isinstance(input_tensor, Mapping):
        return {k: np.asarray(v) for k, v in input_tensor.items()}
    return {runner.input_names[0]: np.asarray(input_tensor)}


def resolve(runner: Any, feeds: Mapping[str, np.ndarray], targets: Sequence[Any] | None) -> list[Any]:
    """One target per image; None: the top-1 class of the clean image."""
    n = int(next(iter(feeds.values())).shape[0])
    if targets is None:
        from camcore.methods.perturbation import resolve_targets

        return resolve_targets(runner, feeds, None)
    ts = list(targets)
    if len(ts) == 1 and n > 1:
        ts *= n
    if len(ts) != n:
        raise CamcoreError(f"got {len(ts)} targets for a batch of {n} images")
    return ts


def score_images(runner: Any, feeds: Mapping[str, np.ndarray], name: str, images: np.ndarray,
                 targets: Sequence[Any], batch_size: int | None = None) -> np.ndarray:  # fmt: skip
    """Scores of ``images`` (M rows) replacing input ``name``; other inputs are repeated
    from image ``i`` when ``M`` is a multiple of the batch (row j belongs to image j // k)."""
    n = int(feeds[name].shape[0])
    k = images.shape[0] // n
    side = {key: np.repeat(v, k, 0) for key, v in feeds.items() if key != name}
    ts = [targets[j // k] for j in range(images.shape[0])]
    return np.asarray(runner.scores({name: images.astype(feeds[name].dtype), **side}, ts, batch_size))
