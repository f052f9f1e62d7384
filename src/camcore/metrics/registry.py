"""The single registry of metrics: the README table, ``camcore.metrics.__all__`` and the
tests read it; adding a metric is adding one registered class."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np

from camcore.errors import CamcoreError

if TYPE_CHECKING:
    from camcore.engine import Engine

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
def engine_of(model: Any) -> Engine:
    """The engine to score with: a CAM object's (its sessions are reused), an Engine, or a new
    one for an ONNX path or ``ModelProto``."""
    from camcore.cam import as_engine

    return as_engine(model)


def feeds_of(engine: Engine, input_tensor: np.ndarray | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Named, checked feeds; the image is the model's first input."""
    return engine.feeds(input_tensor)


def score_images(engine: Engine, feeds: Mapping[str, np.ndarray], name: str, images: np.ndarray,
                 targets: Sequence[Any], batch_size: int | None = None) -> np.ndarray:  # fmt: skip
    """Scores of ``images`` (M rows) replacing input ``name``; other inputs are repeated
    from image ``i`` when ``M`` is a multiple of the batch (row j belongs to image j // k)."""
    n = int(feeds[name].shape[0])
    k = images.shape[0] // n
    side = {key: np.repeat(v, k, 0) for key, v in feeds.items() if key != name}
    ts = [targets[j // k] for j in range(images.shape[0])]
    return engine.scores({name: images.astype(feeds[name].dtype), **side}, ts, batch_size or 32)
