"""The public CAM classes: each owns an :class:`~camcore.engine.Engine` and runs one registered method.

For a ``layer`` method a call is one run of the engine (outputs, activations, gradients and
whatever the method's needs compute), the method's function per target layer, and the map
assembly of :mod:`camcore.maps` (ReLU, per-layer scaling, resize to the input's spatial size
in its own layout, mean over layers, a last scaling), as pytorch-grad-cam 1.5 does it.
``aug_smooth`` averages the maps over horizontal flips × brightness factors (0.9, 1, 1.1), as
pytorch-grad-cam's default ttach transforms. A ``pipeline`` method gets a per-call
:class:`~camcore.methods.registry.MethodContext` and builds the maps itself.

Every registered method has a class here, named as in pytorch-grad-cam (``GradCAM``,
``ScoreCAM``, ...), generated from :data:`camcore.methods.METHODS`.

Example:
    >>> cam = GradCAM("resnet50.onnx")                  # default target layer
    >>> maps = cam(x)                                   # (N, H, W) float32 in [0, 1]
    >>> maps = cam(x, targets=[ClassifierOutputTarget(281)], aug_smooth=True)
    >>> cam.outputs[0].shape, list(cam.activations)     # the model outputs, the layers
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import onnx

from camcore.engine import Engine, Feeds, Result
from camcore.errors import CamcoreError
from camcore.maps import LayerLayout, ReshapeTransform, arrange, assemble, assemble_unscaled, reduce_channels
from camcore.methods import METHODS, CamMethod, method_by_key
from camcore.methods.registry import LEADING, LayerRun, MethodContext, keyword_options
from camcore.targets import Target, per_image

#: pytorch-grad-cam's default test-time augmentation: ttach HorizontalFlip × Multiply
AUG_FLIPS = (False, True)
AUG_FACTORS = (0.9, 1.0, 1.1)

__all__ = ["BaseCAM", "as_engine", "cam_class", "cam_classes"]

_Cam = TypeVar("_Cam", bound="BaseCAM")


def _method_key(value: Any) -> str:
    """A method given as a key, a class name or a CAM class (``base_method=GradCAM``)."""
    if isinstance(value, str):
        return method_by_key(value).key
    key = getattr(value, "method_key", None)
    if key:
        return str(key)
    raise CamcoreError(f"base_method must be a CAM class or a method name, not {value!r}")


class _Call:
    """One explanation: the :class:`~camcore.methods.registry.MethodContext` a method runs in.

    It records the last result made through it (the CAM's ``outputs``, ``activations`` and
    ``gradients`` after the call) and what a method leaves behind (:meth:`keep`).
    """

    def __init__(self, cam: BaseCAM, feeds: Feeds, layers: Sequence[str] | None = None) -> None:
        self.cam = cam
        self.engine = cam.engine
        self.layers = list(cam.target_layers if layers is None else layers)
        self.batch_size = cam.batch_size
        self.input_size = cam.engine.input_size(feeds)
        self.last: Result | None = None
        self.kept: dict[str, np.ndarray] = {}

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
        self.last = self.engine.run(feeds, targets, layers=self.layers if layers is None else layers,
                                    gradients=gradients, hvp=hvp, extra=extra, guided_relu=guided_relu)  # fmt: skip
        return self.last

    def grid(self, array: np.ndarray, layer: str) -> np.ndarray:
        return arrange(array, self.cam.layout(layer, array), self.input_size, self.cam.reshape_transform)

    def channel_axis(self, layer: str, array: np.ndarray) -> int:
        return self.cam.layout(layer, array).channel_axis

    def method_maps(
        self,
        method: str,
        feeds: Feeds,
        targets: Sequence[Target] | None,
        *,
        layers: Sequence[str] | None = None,
        eigen_smooth: bool = False,
    ) -> np.ndarray:
        helper = self.cam.helper(_method_key(method), self.layers if layers is None else layers)
        maps, call = helper.explain_feeds(feeds, targets, eigen_smooth)
        self.last = call.last or self.last
        return maps

    def last_outputs(self) -> np.ndarray:
        if self.last is None:
            raise CamcoreError("no run was made in this call yet")
        return self.last.outputs[self.engine.output_index]

    def keep(self, name: str, value: np.ndarray) -> None:
        self.kept[name] = value


class BaseCAM:
    """Explains an ONNX model with a registered method; see the generated classes.

    Args:
        model: a path, a ``ModelProto`` or an :class:`~camcore.engine.Engine` (shared: its
            compiled sessions serve every CAM built on it).
        target_layers: ONNX tensor or node names (``camcore layers MODEL``); None picks the
            last spatial activation.
        reshape_transform: turns a layer tensor into (N, C, *spatial); by default the layer's
            layout decides (token tensors (N, T, C) are laid on the grid their count and the
            input size imply).
        providers, threads: onnxruntime execution providers and intra-op threads.
        output: the explained output, by name (default: the first).
        batch_size: the batch of the methods' internal runs (patches, masks, noise samples).
        base_dir: the folder of an in-memory model's external data.
        **options: the method's options (``FEM(k=3)``, ``SESS(base_method=GradCAM)``, ...).
    """

    method_key: str = ""

    def __init__(
        self,
        model: str | Path | onnx.ModelProto | Engine,
        target_layers: Sequence[str] | str | None = None,
        reshape_transform: ReshapeTransform | None = None,
        *,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        output: str | None = None,
        batch_size: int = 32,
        base_dir: str | Path | None = None,
        **options: Any,
    ) -> None:
        self.method: CamMethod = method_by_key(self.method_key)
        self.options = self._check_options(options)
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise CamcoreError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        batch_size = int(batch_size)
        if isinstance(model, Engine):
            given = {"providers": providers, "threads": threads, "output": output, "base_dir": base_dir}
            if any(v is not None for v in given.values()):
                names = ", ".join(k for k, v in given.items() if v is not None)
                raise CamcoreError(f"{names} belong to the engine: set them when building it, not with an Engine")
            self.engine: Engine = model
        else:
            self.engine = Engine(model, output=output, providers=providers, threads=threads, base_dir=base_dir)
        self.target_layers: list[str] = self.engine.resolve_layers(target_layers)
        self.reshape_transform: ReshapeTransform | None = reshape_transform
        self.batch_size: int = batch_size
        m = self.method
        #: the options of the method's function, and of each need's function
        self._fn_options: dict[str, Any] = self._options_of(m.fn, (*LEADING[m.kind], *m.needs))
        self._need_options: dict[str, dict[str, Any]] = {
            name: self._options_of(need.compute, ("run",)) for name, need in m.needs.items()
        }
        self.outputs: list[np.ndarray] = []
        self.activations: dict[str, np.ndarray] = {}
        self.gradients: dict[str, np.ndarray] = {}
        self.hvp: dict[str, np.ndarray] = {}
        self._helpers: dict[tuple[str, tuple[str, ...]], BaseCAM] = {}

    def _check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        known = self.method.options
        unknown = sorted(set(options) - set(known))
        if unknown:
            allowed = ", ".join(known) or "none"
            raise CamcoreError(f"{self.method.name} has no option {unknown[0]!r}; its options: {allowed}")
        merged = {**known, **options}
        if "base_method" in merged:
            merged["base_method"] = _method_key(merged["base_method"])
        return merged

    # ------------------------------------------------------------------ the engine's facts
    @property
    def model(self) -> onnx.ModelProto:
        """The prepared model the engine runs."""
        return self.engine.model

    @property
    def input_names(self) -> list[str]:
        """The model's inputs."""
        return self.engine.input_names

    @property
    def output(self) -> str:
        """The explained output."""
        return self.engine.output

    # ------------------------------------------------------------------ copies
    def fork(self: _Cam) -> _Cam:
        """A CAM for another thread: the same method, options and layers; a forked engine
        (shared compiled sessions, its own call state)."""
        return type(self)(self.engine.fork(), self.target_layers, self.reshape_transform,
                          batch_size=self.batch_size, **self.options)  # fmt: skip

    def on_model(self: _Cam, model: str | Path | onnx.ModelProto) -> _Cam:
        """The same method, options, layers, providers and threads on another model (e.g. one
        with randomised weights, for the sanity check)."""
        engine = Engine(model, output=self.engine.output, providers=self.engine.providers,
                        threads=self.engine.threads)  # fmt: skip
        return type(self)(engine, self.target_layers, self.reshape_transform, batch_size=self.batch_size,
                          **self.options)  # fmt: skip

    def helper(self, method_key: str, layers: Sequence[str]) -> BaseCAM:
        """A CAM of another method on the same engine and ``layers`` (default options)."""
        key = (method_key, tuple(layers))
        if key not in self._helpers:
            self._helpers[key] = cam_class(method_key)(self.engine, list(layers), self.reshape_transform,
                                                       batch_size=self.batch_size)  # fmt: skip
        return self._helpers[key]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(outputs=[], activations={}, gradients={}, hvp={}, _helpers={})
        return state

    # ------------------------------------------------------------------ layouts
    def layout(self, layer: str, array: np.ndarray) -> LayerLayout:
        """The layout of ``layer``'s tensors: as the graph shows it (:meth:`Engine.layer_layout`),
        else as its rank implies (:meth:`LayerLayout.of`: tokens at rank 3, else channels first)."""
        return self.engine.layer_layout(layer) or LayerLayout.of(array)

    # ------------------------------------------------------------------ explaining
    def context(self, feeds: Feeds) -> MethodContext:
        """The context a method runs in for ``feeds`` (checked feeds of one call)."""
        return _Call(self, feeds)

    def _options_of(self, fn: Any, skip: Sequence[str]) -> dict[str, Any]:
        """This CAM's values of the options ``fn`` declares (read from its signature)."""
        accepted = keyword_options(fn, skip)
        return {k: v for k, v in self.options.items() if k in accepted}

    def _layer_maps(self, call: _Call, feeds: Feeds, targets: Sequence[Target] | None, result: Result,
                    eigen_smooth: bool) -> list[np.ndarray]:  # fmt: skip
        """The layer map M (N, *spatial) of every target layer (before the ReLU)."""
        m = self.method
        maps = []
        for layer in call.layers:
            act = call.grid(result.activations[layer], layer)
            if act.ndim < 3:
                raise CamcoreError(
                    f"layer {layer!r} has shape {tuple(act.shape)}: it has no spatial extent; choose an earlier layer"
                )
            grad = call.grid(result.gradients[layer], layer) if layer in result.gradients else None
            run = LayerRun(call, feeds, targets, layer, result)
            needs = {name: need.compute(run, **self._need_options[name]) for name, need in m.needs.items()}
            raw = m.fn(act, grad, **needs, **self._fn_options)
            maps.append(reduce_channels(raw, eigen_smooth) if m.output == "channels" else raw)
        return maps

    def explain_feeds(
        self, feeds: Feeds, targets: Sequence[Target] | None, eigen_smooth: bool = False, scaled: bool = True
    ) -> tuple[np.ndarray, _Call]:
        """The maps of checked ``feeds`` (and the call they ran in); ``scaled=False`` gives the
        unscaled maps of :func:`camcore.maps.assemble_unscaled` (pipeline methods: their own)."""
        call = _Call(self, feeds)
        m = self.method
        if m.kind == "pipeline":
            maps = np.asarray(m.fn(call, feeds, targets, eigen_smooth, **self._fn_options), dtype=np.float32)
        else:
            result = call.run(feeds, targets, gradients=m.needs_gradients, hvp=m.needs_hvp)
            layer_maps = self._layer_maps(call, feeds, targets, result, eigen_smooth)
            size = call.input_size
            if scaled:
                maps = assemble(layer_maps, size)
            else:
                maps = assemble_unscaled(layer_maps, size or tuple(layer_maps[0].shape[1:3]))
        self._keep(call)
        return maps, call

    def _keep(self, call: _Call) -> None:
        if call.last is not None:
            last = call.last
            self.outputs, self.activations, self.gradients, self.hvp = (
                last.outputs, last.activations, last.gradients, last.hvp)  # fmt: skip
        for name, value in call.kept.items():
            setattr(self, name, value)

    def _aug_smooth(self, feeds: Feeds, targets: Sequence[Target] | None, eigen_smooth: bool) -> np.ndarray:
        name, x = self.engine.image_input(feeds)
        width_axis = -1 if self.engine.input_layout == "NCHW" else -2
        cams = []
        for flip in AUG_FLIPS:
            for factor in AUG_FACTORS:
                t = np.flip(x, axis=width_axis) if flip else x
                t = np.ascontiguousarray(t * np.float32(factor), dtype=x.dtype)
                cam, _ = self.explain_feeds({**feeds, name: t}, targets, eigen_smooth)
                cams.append(cam[..., ::-1] if flip else cam)
        return np.mean(np.asarray(cams, np.float32), axis=0)

    def _checked(self, input_tensor: np.ndarray | Feeds, targets: Any) -> tuple[dict[str, np.ndarray], Any]:
        feeds = self.engine.feeds(input_tensor)
        checked = None if targets is None else per_image(targets, self.engine.batch_of(feeds))
        return feeds, checked

    def __call__(
        self,
        input_tensor: np.ndarray | Feeds,
        targets: Sequence[Target] | None = None,
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
    ) -> np.ndarray:
        """Maps of shape (N, H, W), float32 in [0, 1], at the input's spatial size.

        ``targets``: one per image (or one for all); None explains the top-1 class.
        ``aug_smooth``: average over flips and brightness factors (6 runs).
        ``eigen_smooth``: first principal component of the contributions instead of their sum.
        """
        feeds, checked = self._checked(input_tensor, targets)
        with self.engine.call():
            if aug_smooth:
                return self._aug_smooth(feeds, checked, eigen_smooth)
            return self.explain_feeds(feeds, checked, eigen_smooth)[0]

    def forward(
        self, input_tensor: np.ndarray | Feeds, targets: Sequence[Target] | None = None, eigen_smooth: bool = False
    ) -> np.ndarray:
        """pytorch-grad-cam's ``forward``: :meth:`__call__` without test-time augmentation."""
        return self(input_tensor, targets, eigen_smooth=eigen_smooth)

    def unscaled(
        self, input_tensor: np.ndarray | Feeds, targets: Sequence[Target] | None = None, eigen_smooth: bool = False
    ) -> np.ndarray:
        """Non-negative maps (N, H, W) left unscaled, for a range shared across images or frames:
        :math:`\\frac{1}{L}\\sum_l R\\max(M_l, 0)` (:func:`camcore.maps.assemble_unscaled`).
        Pipeline methods build whole maps: theirs come in [0, 1]."""
        feeds, checked = self._checked(input_tensor, targets)
        with self.engine.call():
            return self.explain_feeds(feeds, checked, eigen_smooth, scaled=False)[0]

    def __enter__(self: _Cam) -> _Cam:
        """``with GradCAM(...) as cam:`` works as in pytorch-grad-cam."""
        return self

    def __exit__(self, *exc: object) -> None:
        self.engine.close()
        self._helpers.clear()


# ---------------------------------------------------------------------- generated classes
_CLASSES: dict[str, type[BaseCAM]] = {}


def _make_class(m: CamMethod) -> type[BaseCAM]:
    opts = ", ".join(f"{k}={v!r}" for k, v in m.options.items())
    doc = (
        f"{m.summary}.\n\n"
        f"``{m.name}(model, target_layers=None, reshape_transform=None{', ' + opts if opts else ''})"
        f"(input_tensor, targets=None, aug_smooth=False, eigen_smooth=False)`` -> (N, H, W) in [0, 1].\n\n"
        f"The method: :func:`{m.fn.__module__}.{m.fn.__name__}`.\n\n{inspect.getdoc(m.fn) or ''}"
    )
    return type(m.name, (BaseCAM,), {"method_key": m.key, "__doc__": doc, "__module__": __name__})


for _m in METHODS.values():
    _CLASSES[_m.name] = globals()[_m.name] = _make_class(_m)
__all__ += sorted(_CLASSES)


def cam_classes() -> dict[str, type[BaseCAM]]:
    """Every public CAM class by name, one per registered method."""
    return dict(_CLASSES)


def cam_class(method: str) -> type[BaseCAM]:
    """The public CAM class of a method, by CLI key or class name."""
    return _CLASSES[method_by_key(method).name]


def as_engine(model: str | Path | onnx.ModelProto | Engine | BaseCAM) -> Engine:
    """The engine of a CAM object, an engine itself, or a new one for a path or ``ModelProto``."""
    if isinstance(model, BaseCAM):
        return model.engine
    if isinstance(model, Engine):
        return model
    if isinstance(model, (str, Path, onnx.ModelProto)):
        return Engine(model)
    raise CamcoreError(
        f"model must be a CAM object, an Engine, an ONNX path or a ModelProto, not {type(model).__name__}"
    )
