"""The single registry of CAM methods. The API classes, ``__all__``, the CLI choices, the README
table, the type stub and the tests all read it; adding a method is adding one registered function.

A method is one of two kinds:

``layer``
    ``fn(activations, gradients, *needs, **options) -> array`` for one target layer. The
    activations and gradients are (N, C, *spatial), arranged by the map assembly
    (:func:`camcore.maps.arrange`). With ``output="channels"`` it returns the per-channel
    contributions (N, C, *spatial), which the assembly sums over channels (or projects on their
    first principal component with ``eigen_smooth``); with ``output="map"`` the layer map
    (N, *spatial) itself. Extra arrays come from the method's declared :class:`Need` s, each a
    function beside the method that computes one array from the run (:class:`LayerRun`).
``pipeline``
    ``fn(context, feeds, targets, eigen_smooth, **options) -> (N, H, W)``: the whole
    explanation, built from what :class:`MethodContext` offers (runs with extra gradients,
    forward scores, another method's maps, re-running the part of the model after a layer).
    Wrappers (SESS, RefineCAM, FinerCAM), FullGrad and the perturbation methods are pipelines.

A method's options are declared once, as keyword parameters with defaults: those of its
function (after the fixed leading parameters) and, for a layer method, those of its needs'
functions (after ``run``). The registry reads them from the signatures.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

if TYPE_CHECKING:
    from camcore.engine import Engine, Result
    from camcore.targets import Target

Kind = Literal["layer", "pipeline"]
Feeds = Mapping[str, np.ndarray]
#: the fixed leading parameters of a method function, by kind
LEADING = {"layer": ("activations", "gradients"), "pipeline": ("context", "feeds", "targets", "eigen_smooth")}


class MethodContext(Protocol):
    """What a method may ask of the CAM running it (the extension point). Implemented by
    :class:`camcore.cam.BaseCAM`'s per-call context.

    Feeds map input names to arrays; targets are one :class:`camcore.targets.Target` per image,
    or None (the top-1 class).
    """

    #: the engine: runs, scores, the model cut after a layer, graph facts
    engine: Engine
    #: the target layers (tensor names)
    layers: list[str]
    #: the batch of the method's internal runs (masked inputs, ablated copies, patches)
    batch_size: int
    #: the image input's (height, width) in this call, in its own layout
    input_size: tuple[int, int] | None

    def run(
        self,
        feeds: Feeds,
        targets: Sequence[Target] | None,
        *,
        layers: Sequence[str] | None = None,
        gradients: bool = True,
        hvp: bool = False,
        extra: Sequence[str] = (),
        guided_relu: bool = False,
    ) -> Result:
        """:meth:`camcore.engine.Engine.run` (default: the target layers); its outputs become
        the CAM's ``outputs``, ``activations`` and ``gradients``."""
        ...

    def grid(self, array: np.ndarray, layer: str) -> np.ndarray:
        """A tensor of ``layer`` as (N, C, *spatial) (its layout or the ``reshape_transform``)."""
        ...

    def channel_axis(self, layer: str, array: np.ndarray) -> int:
        """The channel axis of a tensor of ``layer`` as the model gives it (Ablation-CAM ablates it)."""
        ...

    def method_maps(
        self,
        method: str,
        feeds: Feeds,
        targets: Sequence[Target] | None,
        *,
        layers: Sequence[str] | None = None,
        eigen_smooth: bool = False,
    ) -> np.ndarray:
        """The final (N, H, W) maps of another registered method on these inputs."""
        ...

    def last_outputs(self) -> np.ndarray:
        """The explained output of the last run made through :meth:`run` or :meth:`method_maps`."""
        ...

    def keep(self, name: str, value: np.ndarray) -> None:
        """Leave ``value`` on the CAM as attribute ``name`` (e.g. Guided Grad-CAM's attribution)."""
        ...


@dataclass(frozen=True)
class LayerRun:
    """What a :class:`Need` sees: one target layer of one explanation run."""

    context: MethodContext
    feeds: Feeds
    targets: Sequence[Target] | None
    layer: str
    result: Result


@dataclass(frozen=True)
class Need:
    """An extra array a layer method receives under its need's name, computed by
    ``compute(run: LayerRun, **options)``. ``hvp``: the run must also return H·A."""

    compute: Callable[..., np.ndarray]
    hvp: bool = False


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
    #: extra arrays a layer method receives as keyword arguments, by name
    needs: Mapping[str, Need] = field(default_factory=dict)
    #: constructor options of the class and their defaults (read from the signatures)
    options: Mapping[str, Any] = field(default_factory=dict)
    #: the map depends on a random draw (no golden parity)
    random: bool = False
    #: the paper / the reference implementation's class, for the docs
    reference: str = ""

    @property
    def needs_hvp(self) -> bool:
        """Whether the explanation run must return the Hessian-vector product."""
        return any(n.hvp for n in self.needs.values())


METHODS: dict[str, CamMethod] = {}


def keyword_options(fn: Callable[..., Any], skip: Sequence[str]) -> dict[str, Any]:
    """The parameters of ``fn`` other than ``skip``, with their defaults.

    Raises:
        RuntimeError: a parameter has no default (every option needs one), or ``fn`` takes ``**kwargs``.
    """
    out: dict[str, Any] = {}
    for p in inspect.signature(fn).parameters.values():
        if p.name in skip:
            continue
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or p.default is p.empty:
            raise RuntimeError(f"{fn.__qualname__}: option {p.name!r} needs a default (and no *args/**kwargs)")
        out[p.name] = p.default
    return out


def register_method(
    name: str,
    key: str,
    summary: str,
    *,
    kind: Kind = "layer",
    output: Literal["channels", "map"] = "channels",
    needs_gradients: bool = True,
    needs: Mapping[str, Need] | None = None,
    random: bool = False,
    reference: str = "",
) -> Callable[[Callable[..., np.ndarray]], Callable[..., np.ndarray]]:
    """Register ``fn`` as method ``name`` (the pytorch-grad-cam class name) under CLI ``key``;
    its options are read from its signature (and its needs')."""
    needs = dict(needs or {})
    if needs and kind != "layer":
        raise RuntimeError(f"method {name}: only layer methods declare needs")

    def wrap(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        if key in METHODS or any(m.name == name for m in METHODS.values()):
            raise RuntimeError(f"two CAM methods registered as {key!r} / {name!r}")
        options = keyword_options(fn, (*LEADING[kind], *needs))
        for need in needs.values():
            for option, default in keyword_options(need.compute, ("run",)).items():
                if options.setdefault(option, default) != default:
                    raise RuntimeError(f"method {name}: option {option!r} has two defaults")
        METHODS[key] = CamMethod(
            name, key, fn, summary, kind, output, needs_gradients, needs, options, random, reference
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
