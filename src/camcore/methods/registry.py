"""The single registry of CAM methods. The API classes, ``__all__``, the CLI choices,
the README table and the tests all read it; adding a method is adding one registered
function.

A method is one of three kinds:

``layer``
    ``fn(activations, gradients, **needs) -> array`` for one target layer. The
    activations and gradients are (N, C, *spatial) (tokens already arranged as a
    grid); ``needs`` names the extra arrays the pipeline computes for it (``hvp``,
    ``class_weights``, ``grad_moments``). With ``output="channels"`` it returns the
    per-channel contributions (N, C, *spatial), which the pipeline sums over channels,
    or projects on their first principal component with ``eigen_smooth``; with
    ``output="map"`` it returns the map (N, *spatial) itself.
``pipeline``
    ``fn(runner, feeds, targets, eigen_smooth, **options) -> (N, H, W)``: the whole
    explanation, built from what :class:`Runner` offers (augmented runs with extra
    gradients, plain forward scores, the maps of another method, re-running the part
    of the model downstream of a layer). Wrappers (SESS, RefineCAM, FinerCAM),
    FullGrad and the perturbation methods are pipelines.

Every method declares the options its class accepts, with their defaults.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

Kind = Literal["layer", "pipeline"]
#: extra arrays a layer method may ask for, beyond activations and gradients
LAYER_NEEDS = frozenset({"hvp", "class_weights", "grad_moments"})


@dataclass(frozen=True)
class Forward:
    """What one augmented run returned, per target layer (tokens not yet arranged).

    ``gradients`` is empty for a run without gradients; ``hvp`` holds ``H·A`` (the
    Hessian of the score times the activation) when asked for; ``extra`` the
    gradients of the extra tensors asked for (the input, bias terms) by tensor name.
    """

    outputs: list[np.ndarray]
    activations: dict[str, np.ndarray]
    gradients: dict[str, np.ndarray]
    hvp: dict[str, np.ndarray] = field(default_factory=dict)
    extra: dict[str, np.ndarray] = field(default_factory=dict)


class Runner(Protocol):
    """What a pipeline method may ask of the CAM object running it (the extension point).

    Implemented by :class:`camcore.cam.BaseCAM`: the runs and scores by the engine it
    inherits, :class:`camcore.runner.OnnxRunner`, ``method_maps`` by the API class itself.
    Feeds map input names to arrays; targets are one :class:`camcore.targets.Target` per
    image or None (top-1).
    """

    target_layers: list[str]
    input_names: list[str]
    #: the batch of the method's internal runs (masked inputs, ablated copies, patches)
    batch_size: int
    #: the outputs of the last run on the inputs explained (``method_maps`` of a layer method,
    #: ``run_augmented``)
    outputs: list[np.ndarray]

    @property
    def output_index(self) -> int:
        """The position of the explained output in ``outputs`` and ``Forward.outputs``."""
        ...

    def run_augmented(
        self,
        feeds: Mapping[str, np.ndarray],
        targets: Sequence[Any] | None,
        *,
        layers: Sequence[str] | None = None,
        gradients: bool = True,
        hvp: bool = False,
        extra: Sequence[str] = (),
        guided_relu: bool = False,
    ) -> Forward:
        """One run of the augmented model: outputs, activations, gradients (+ extras)."""
        ...

    def layer_grid(self, array: np.ndarray, input_hw: tuple[int, int] | None) -> np.ndarray:
        """A layer tensor as (N, C, *spatial): reshape_transform or the token grid."""
        ...

    def method_maps(
        self,
        method: str,
        feeds: Mapping[str, np.ndarray],
        targets: Sequence[Any] | None,
        *,
        layers: Sequence[str] | None = None,
        eigen_smooth: bool = False,
    ) -> np.ndarray:
        """The final (N, H, W) maps of another registered method on these inputs."""
        ...

    def scores(
        self, feeds: Mapping[str, np.ndarray], targets: Sequence[Any] | None, batch_size: int | None = None
    ) -> np.ndarray:
        """Forward only: the target score of every image, (N,), in memory-bounded batches."""
        ...

    def downstream_scores(
        self,
        layer: str,
        feeds: Mapping[str, np.ndarray],
        activations: np.ndarray,
        targets: Sequence[Any],
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Scores with ``layer``'s tensor replaced by ``activations`` (M, ...), running only
        the nodes downstream of it; ``feeds`` (batch 1 or M) feed any path around the layer."""
        ...

    def outputs_of(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        """Forward only: the explained output."""
        ...

    def bias_terms(self) -> list[tuple[str, np.ndarray]]:
        """(tensor, per-channel bias) of every Conv / BatchNormalization bias (FullGrad)."""
        ...


@dataclass(frozen=True)
class CamMethod:
    """A registered method: its public class name, CLI key, function and summary."""

    name: str
    key: str
    fn: Callable[..., np.ndarray]
    summary: str
    kind: Kind = "layer"
    #: layer methods: "channels" (contributions, summed or eigen-projected) or "map"
    output: Literal["channels", "map"] = "channels"
    needs_gradients: bool = True
    #: extra arrays a layer method receives as keyword arguments (see LAYER_NEEDS)
    needs: tuple[str, ...] = ()
    #: constructor options of the class and their defaults
    options: Mapping[str, Any] = field(default_factory=dict)
    #: the map depends on a random draw (no golden parity)
    random: bool = False
    #: the paper / the reference implementation's class, for the docs
    reference: str = ""


METHODS: dict[str, CamMethod] = {}


def register_method(
    name: str,
    key: str,
    summary: str,
    *,
    kind: Kind = "layer",
    output: Literal["channels", "map"] = "channels",
    needs_gradients: bool = True,
    needs: Sequence[str] = (),
    options: Mapping[str, Any] | None = None,
    random: bool = False,
    reference: str = "",
) -> Callable[[Callable[..., np.ndarray]], Callable[..., np.ndarray]]:
    """Register ``fn`` as method ``name`` (the pytorch-grad-cam class name) under CLI ``key``."""
    unknown = set(needs) - LAYER_NEEDS
    if unknown:
        raise RuntimeError(f"method {name}: unknown needs {sorted(unknown)}; known: {sorted(LAYER_NEEDS)}")

    def wrap(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        if key in METHODS or any(m.name == name for m in METHODS.values()):
            raise RuntimeError(f"two CAM methods registered as {key!r} / {name!r}")
        METHODS[key] = CamMethod(
            name, key, fn, summary, kind, output, needs_gradients, tuple(needs), dict(options or {}), random, reference
        )
        return fn

    return wrap


def method_by_key(key: str) -> CamMethod:
    """The method registered as CLI ``key`` or class ``name``; a clear error otherwise."""
    from camcore.errors import CamcoreError

    if key in METHODS:
        return METHODS[key]
    for m in METHODS.values():
        if m.name == key:
            return m
    raise CamcoreError(f"unknown method {key!r}; choose from {', '.join(sorted(METHODS))}")
