"""The public CAM classes: one pipeline, the registered methods plug in.

For a ``layer`` method the pipeline follows pytorch-grad-cam 1.5: one augmented run
(outputs, activations, gradients and whatever else the method needs); per target
layer the method's contributions, summed over channels (or projected on their first
principal component with ``eigen_smooth``), ReLU, per-image min-max scaling and a
bilinear resize to the input size; then the mean over target layers and a last
min-max scaling. ``aug_smooth`` averages the maps over horizontal flips × brightness
factors (0.9, 1, 1.1), as pytorch-grad-cam's default ttach transforms. A ``pipeline``
method gets the CAM object itself as its :class:`~camcore.methods.registry.Runner`.

What lives here is the API: :class:`BaseCAM` (construction, input and option checks,
``__call__``, ``forward``, ``layer_maps``, ``aug_smooth``, ``method_maps``) and the
generated classes. The execution engine it inherits (compiled sessions, augmented and
forward-only runs, seeds, scores, layer grids) is :class:`camcore.runner.OnnxRunner`.
``scale_cam_image`` and ``tokens_to_grid`` are re-exported from where they live.

Every registered method has a class here, named as in pytorch-grad-cam (``GradCAM``,
``ScoreCAM``, ...), generated from :data:`camcore.methods.METHODS`.

Example:
    >>> cam = GradCAM("resnet50.onnx")                  # default target layer
    >>> maps = cam(x)                                   # (N, H, W) float32 in [0, 1]
    >>> maps = cam(x, targets=[ClassifierOutputTarget(281)], aug_smooth=True)
    >>> cam.outputs[0].shape, list(cam.activations)     # the model outputs, the layers
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import onnx

from camcore.errors import CamcoreError, InputError
from camcore.graph import prepare_model
from camcore.graph.layers import explained_output_and_layers
from camcore.graph.shapes import TensorInfo
from camcore.methods import METHODS, CamMethod, method_by_key
from camcore.methods.image import scale_cam_image
from camcore.methods.projection import project_2d
from camcore.methods.registry import Forward
from camcore.runner import SMALL_TAIL as SMALL_TAIL  # the engine's constant, importable here as before
from camcore.runner import Feeds, OnnxRunner, ReshapeTransform, tokens_to_grid
from camcore.targets import Target

#: pytorch-grad-cam's default test-time augmentation: ttach HorizontalFlip × Multiply
AUG_FLIPS = (False, True)
AUG_FACTORS = (0.9, 1.0, 1.1)

__all__ = ["BaseCAM", "scale_cam_image", "tokens_to_grid"]


@functools.cache
def _parameters(fn: Callable[..., Any]) -> frozenset[str] | None:
    """The parameter names of ``fn``; None when it takes ``**options`` (then every option)."""
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params)


def _method_key(value: Any) -> str:
    """A method given as a key, a class name or a CAM class (``base_method=GradCAM``)."""
    if isinstance(value, str):
        return method_by_key(value).key
    key = getattr(value, "method_key", None)
    if key:
        return str(key)
    raise CamcoreError(f"base_method must be a CAM class or a method name, not {value!r}")


_Cam = TypeVar("_Cam", bound="BaseCAM")


class BaseCAM(OnnxRunner):
    """Explains an ONNX model with a registered method; see the generated classes.

    Args:
        model: a path or a ModelProto.
        target_layers: ONNX tensor or node names (``camcore layers MODEL``); None picks the
            last spatial activation.
        reshape_transform: turns a layer tensor into (N, C, *spatial); by default token
            tensors (N, T, C) are arranged on the grid the token count and the input size imply.
        providers, threads: onnxruntime execution providers and intra-op threads.
        output: the explained output, by name (default: the first).
        batch_size: the batch of the methods' internal runs (patches, masks, noise samples).
        **options: the method's options (``FEM(k=3)``, ``SESS(base_method=GradCAM)``, ...).
    """

    method_key: str = ""

    def __init__(
        self,
        model: str | Path | onnx.ModelProto,
        target_layers: Sequence[str] | str | None = None,
        reshape_transform: ReshapeTransform | None = None,
        *,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        output: str | None = None,
        batch_size: int = 32,
        **options: Any,
    ) -> None:
        self.method: CamMethod = method_by_key(self.method_key)
        self.options = self._check_options(options)
        proto, info = prepare_model(model)
        output, layers = explained_output_and_layers(proto, info, output, target_layers)
        if batch_size < 1:
            raise CamcoreError(f"batch_size must be >= 1, got {batch_size}")
        super().__init__(
            proto, info, output, layers, reshape_transform, providers=providers, threads=threads, batch_size=batch_size
        )
        self._siblings: dict[str, BaseCAM] = {}
        self._last: tuple[Feeds, Sequence[Target] | None, Forward] = ({}, None, Forward([], {}, {}))

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

    # ------------------------------------------------------------------ inputs
    def _feeds(self, input_tensor: np.ndarray | Feeds) -> dict[str, np.ndarray]:
        if isinstance(input_tensor, Mapping):
            feeds = {k: np.asarray(v) for k, v in input_tensor.items()}
        else:
            if len(self.input_names) != 1:
                raise InputError(f"the model has inputs {self.input_names}: pass a dict of arrays by name")
            feeds = {self.input_names[0]: np.asarray(input_tensor)}
        for name, value in feeds.items():
            self._check_input(name, value)
        return feeds

    def _check_input(self, name: str, value: np.ndarray) -> None:
        ti: TensorInfo | None = self.info.get(name)
        if ti is None:
            raise InputError(f"{name!r} is not a model input; inputs are {self.input_names}")
        want = onnx.helper.tensor_dtype_to_np_dtype(ti.elem_type)
        if value.dtype != want:
            raise InputError(f"input {name!r} must be {want} (got {value.dtype}); convert and normalise it first")
        if ti.shape is not None:
            if value.ndim != len(ti.shape):
                raise InputError(
                    f"input {name!r} must have {len(ti.shape)} dims {list(ti.shape)}, got shape {value.shape}"
                )
            for axis, (want_dim, got) in enumerate(zip(ti.shape, value.shape)):
                if isinstance(want_dim, int) and want_dim != got:
                    raise InputError(
                        f"input {name!r} needs size {want_dim} on axis {axis} (shape "
                        f"{list(ti.shape)}), got shape {value.shape}"
                    )
        if value.size == 0:
            raise InputError(f"input {name!r} is empty (shape {value.shape})")
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            raise InputError(f"input {name!r} contains NaN or Inf")

    def _input_hw(self, feeds: Feeds) -> tuple[int, int] | None:
        first = feeds[self.input_names[0]] if self.input_names[0] in feeds else next(iter(feeds.values()))
        return (int(first.shape[-2]), int(first.shape[-1])) if first.ndim >= 4 else None

    # ------------------------------------------------------------------ maps of another method (the Runner protocol)
    def method_maps(
        self,
        method: str,
        feeds: Feeds,
        targets: Sequence[Target] | None,
        *,
        layers: Sequence[str] | None = None,
        eigen_smooth: bool = False,
    ) -> np.ndarray:
        """The final maps of another registered method, sharing this object's sessions."""
        key = _method_key(method)
        sibling = self._siblings.get(key)
        if sibling is None:
            sibling = object.__new__(_class_for(key))
            sibling.__dict__.update(self.__dict__)
            sibling.method = method_by_key(key)
            sibling.options = dict(sibling.method.options)
            sibling._siblings = {}
            self._siblings[key] = sibling
        sibling.target_layers = list(self.target_layers if layers is None else layers)
        maps = sibling._explain(dict(feeds), self._targets(targets, self._batch(feeds)), eigen_smooth)
        self._keep(Forward(sibling.outputs, sibling.activations, sibling.gradients, sibling.hvp))
        return maps

    # ------------------------------------------------------------------ the layer pipeline
    def forward(self, input_tensor: np.ndarray | Feeds, targets: Sequence[Target] | None = None) -> dict[str, Any]:
        """One augmented run with what the method needs: fills ``outputs``, ``activations``,
        ``gradients`` (and ``hvp``); :meth:`layer_maps` then turns them into maps."""
        feeds = self._feeds(input_tensor)
        self._forward(feeds, self._targets(targets, self._batch(feeds)))
        return feeds

    def _forward(self, feeds: Feeds, targets: Sequence[Target] | None) -> None:
        """:meth:`forward` on inputs and targets already checked."""
        m = self.method
        fwd = self.run_augmented(feeds, targets, gradients=m.needs_gradients, hvp="hvp" in m.needs)
        self._last = (feeds, targets, fwd)

    def _fn_options(self) -> dict[str, Any]:
        """The options the method's function accepts (its signature, read once per function)."""
        accepted = _parameters(self.method.fn)
        return {k: v for k, v in self.options.items() if accepted is None or k in accepted}

    def layer_maps(self, input_hw: tuple[int, int] | None, eigen_smooth: bool = False) -> list[np.ndarray]:
        """The raw (pre-ReLU) map (N, *spatial) of every target layer, from the last :meth:`forward`."""
        m = self.method
        if m.kind != "layer":
            raise CamcoreError(f"{m.name} is a pipeline method: call it, it has no per-layer maps")
        feeds, targets, fwd = self._last
        opts = self._fn_options()
        maps = []
        for layer in self.target_layers:
            act = self.layer_grid(fwd.activations[layer], input_hw)
            if act.ndim < 3:
                raise CamcoreError(
                    f"layer {layer!r} has shape {act.shape}: it has no spatial extent; choose an earlier layer"
                )
            grad = self.layer_grid(fwd.gradients[layer], input_hw) if layer in fwd.gradients else None
            needs: dict[str, Any] = {}
            if "hvp" in m.needs:
                needs["hvp"] = self.layer_grid(fwd.hvp[layer], input_hw)
            if "class_weights" in m.needs:
                needs["class_weights"] = self._class_weights(layer, fwd, targets)
            if "grad_moments" in m.needs:
                needs["grad_moments"] = self._grad_moments(feeds, targets, layer, fwd, input_hw)
            raw = m.fn(act, grad, **needs, **opts)
            if m.output == "channels":
                raw = project_2d(raw) if eigen_smooth else raw.sum(axis=1)
            maps.append(raw)
        self._keep(fwd)
        return maps

    def _explain(self, feeds: Feeds, targets: Sequence[Target] | None, eigen_smooth: bool) -> np.ndarray:
        if self.method.kind == "pipeline":
            opts = self._fn_options()
            return np.asarray(self.method.fn(self, feeds, targets, eigen_smooth, **opts), dtype=np.float32)
        size = self._input_hw(feeds)
        self._forward(feeds, targets)
        per_layer = [scale_cam_image(np.maximum(raw, 0), size)[:, None] for raw in self.layer_maps(size, eigen_smooth)]
        stacked = np.maximum(np.concatenate(per_layer, axis=1), 0)
        return scale_cam_image(stacked.mean(axis=1))

    def _aug_smooth(self, feeds: Feeds, targets: Sequence[Target] | None, eigen_smooth: bool) -> np.ndarray:
        name = self.input_names[0]
        x = feeds[name]
        if x.ndim != 4:
            raise CamcoreError(f"aug_smooth needs a 4-D image input; {name!r} has shape {x.shape}")
        cams = []
        for flip in AUG_FLIPS:
            for factor in AUG_FACTORS:
                t = x[..., ::-1] if flip else x
                t = np.ascontiguousarray(t * np.float32(factor), dtype=x.dtype)
                cam = self._explain({**feeds, name: t}, targets, eigen_smooth)
                cams.append(cam[..., ::-1] if flip else cam)
        return np.mean(np.asarray(cams, np.float32), axis=0)

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
        feeds = self._feeds(input_tensor)
        checked = self._targets(targets, self._batch(feeds))
        self._memo.reset(active=True)
        try:
            if aug_smooth:
                return self._aug_smooth(feeds, checked, eigen_smooth)
            return self._explain(feeds, checked, eigen_smooth)
        finally:
            self._memo.reset(active=False)

    def __enter__(self: _Cam) -> _Cam:
        """``with GradCAM(...) as cam:`` works as in pytorch-grad-cam."""
        return self

    def __exit__(self, *exc: object) -> None:
        self._sessions.clear()
        self._siblings.clear()


# ---------------------------------------------------------------------- generated classes
_CLASSES: dict[str, type[BaseCAM]] = {}


def _class_for(key: str) -> type[BaseCAM]:
    return _CLASSES[METHODS[key].name]


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


def _first_input(model: str | Path | onnx.ModelProto) -> list[str]:
    proto, _ = prepare_model(model)
    inits = {i.name for i in proto.graph.initializer}
    return [next(i.name for i in proto.graph.input if i.name not in inits)]
