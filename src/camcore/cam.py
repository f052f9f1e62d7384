"""The public CAM classes: one pipeline, the registered methods plug in.

For a ``layer`` method the pipeline follows pytorch-grad-cam 1.5: one augmented run
(outputs, activations, gradients and whatever else the method needs); per target
layer the method's contributions, summed over channels (or projected on their first
principal component with ``eigen_smooth``), ReLU, per-image min-max scaling and a
bilinear resize to the input size; then the mean over target layers and a last
min-max scaling. ``aug_smooth`` averages the maps over horizontal flips × brightness
factors (0.9, 1, 1.1), as pytorch-grad-cam's default ttach transforms. A ``pipeline``
method gets the CAM object itself as its :class:`~camcore.methods.registry.Runner`.

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
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from camcore.errors import CamcoreError, InputError
from camcore.graph import Augmented, augment, prepare_model, resolve_layers
from camcore.graph.layers import candidate_layers, default_layer
from camcore.graph.parts import bias_terms, classifier_weights, downstream_model, with_outputs
from camcore.graph.shapes import TensorInfo
from camcore.methods import METHODS, CamMethod, method_by_key
from camcore.methods.image import scale_cam_image
from camcore.methods.projection import project_2d
from camcore.methods.registry import Forward
from camcore.runtime import Session
from camcore.targets import ClassifierOutputTarget, Target

ReshapeTransform = Callable[[np.ndarray], np.ndarray]
Feeds = Mapping[str, np.ndarray]
#: pytorch-grad-cam's default test-time augmentation: ttach HorizontalFlip × Multiply
AUG_FLIPS = (False, True)
AUG_FACTORS = (0.9, 1.0, 1.1)
#: a model cut after the target layer with at most this share of the nodes runs on one thread
#: (see :meth:`BaseCAM.tail_forward`)
SMALL_TAIL = 0.1

__all__ = ["BaseCAM", "scale_cam_image", "tokens_to_grid"]


def tokens_to_grid(tokens: np.ndarray, input_hw: tuple[int, int] | None = None) -> np.ndarray:
    """(N, T, C) transformer tokens -> (N, C, h, w); a leading class token is dropped.

    The grid is inferred from the token count and the input's aspect ratio: T or T-1
    must factor as h·w with h/w closest to the input's H/W. Nothing is hard-coded.

    Example:
        >>> tokens_to_grid(np.zeros((2, 1 + 14 * 14, 192)), (224, 224)).shape
        (2, 192, 14, 14)
    """
    n, t, c = tokens.shape
    ratio = input_hw[0] / input_hw[1] if input_hw else 1.0
    for count, skip in ((t, 0), (t - 1, 1)):
        grid = _factor_grid(count, ratio)
        if grid is not None:
            h, w = grid
            return tokens[:, skip:, :].reshape(n, h, w, c).transpose(0, 3, 1, 2)
    raise CamcoreError(f"cannot arrange {t} tokens as a grid (with or without a class token); pass reshape_transform")


def _factor_grid(count: int, ratio: float) -> tuple[int, int] | None:
    best: tuple[int, int] | None = None
    for h in range(1, count + 1):
        if count % h:
            continue
        w = count // h
        if best is None or abs(math.log(h / w / ratio)) < abs(math.log(best[0] / best[1] / ratio)):
            best = (h, w)
    if best is None or (min(best) == 1 and count > 3):
        return None
    return best


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


class _CallMemo:
    """The last forward-only run inside one call, so that a pipeline and the method it calls
    share it (Finer-CAM picks its classes from the outputs, then its base method's seeds
    and activations come from the same run).

    A run matches by the identity of the feed arrays (held here, so no id is reused) and
    the layers it returned; the memo is emptied when a call starts and ends, so an array
    changed in place between calls is never answered from it.
    """

    def __init__(self) -> None:
        self.active = False
        self.feeds: dict[str, np.ndarray] = {}
        self.forward: Forward | None = None

    def reset(self, active: bool) -> None:
        self.active, self.feeds, self.forward = active, {}, None

    def get(self, feeds: Feeds, layers: Sequence[str]) -> Forward | None:
        fwd = self.forward
        if fwd is None or feeds.keys() != self.feeds.keys() or any(feeds[k] is not v for k, v in self.feeds.items()):
            return None
        if not set(layers) <= fwd.activations.keys():
            return None
        return Forward(fwd.outputs, {k: fwd.activations[k] for k in layers}, {})

    def put(self, feeds: Feeds, fwd: Forward) -> None:
        if self.active:
            self.feeds, self.forward = dict(feeds), fwd


class BaseCAM:
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
        self.model, self.info = prepare_model(model)
        graph = self.model.graph
        initializers = {i.name for i in graph.initializer}
        self.input_names = [i.name for i in graph.input if i.name not in initializers]
        outputs = [o.name for o in graph.output]
        self.output = output or outputs[0]
        if self.output not in outputs:
            raise CamcoreError(f"unknown output {self.output!r}; the model's outputs are {outputs}")
        if target_layers is None:
            layer = default_layer(candidate_layers(self.model, self.info, self.output))
            if layer is None:
                raise CamcoreError(
                    "no default target layer (no 4-D activation with spatial extent); "
                    "pass target_layers (see `camcore layers MODEL`)"
                )
            self.target_layers = [layer.tensor]
        else:
            if isinstance(target_layers, str):
                target_layers = [target_layers]
            self.target_layers = resolve_layers(self.model, list(target_layers))
        if batch_size < 1:
            raise CamcoreError(f"batch_size must be >= 1, got {batch_size}")
        self.providers = providers
        self.threads = threads
        self.batch_size = batch_size
        self.reshape_transform = reshape_transform
        self._sessions: dict[tuple[object, ...], Any] = {}
        self._siblings: dict[str, BaseCAM] = {}
        self._memo = _CallMemo()  # shared with the siblings (never reassigned)
        self.outputs: list[np.ndarray] = []
        self.activations: dict[str, np.ndarray] = {}
        self.gradients: dict[str, np.ndarray] = {}
        self.hvp: dict[str, np.ndarray] = {}
        self._last: tuple[Feeds, list[Target] | None, Forward] = ({}, None, Forward([], {}, {}))

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

    def _targets(self, targets: Sequence[Target] | None, n: int) -> list[Target] | None:
        if targets is None:
            return None
        targets = list(targets)
        if len(targets) == 1 and n > 1:
            targets = targets * n
        if len(targets) != n:
            raise CamcoreError(f"got {len(targets)} targets for a batch of {n} images")
        return targets

    @staticmethod
    def _batch(feeds: Feeds) -> int:
        return int(next(iter(feeds.values())).shape[0])

    def _input_hw(self, feeds: Feeds) -> tuple[int, int] | None:
        first = feeds[self.input_names[0]] if self.input_names[0] in feeds else next(iter(feeds.values()))
        return (int(first.shape[-2]), int(first.shape[-1])) if first.ndim >= 4 else None

    # ------------------------------------------------------------------ sessions
    def _signature(self, feeds: Feeds) -> tuple[object, ...]:
        return tuple((k, v.shape[1:]) for k, v in sorted(feeds.items()))

    def compiled(
        self,
        feeds: Feeds,
        seed_mode: str,
        layers: Sequence[str] | None = None,
        hvp: bool = False,
        guided_relu: bool = False,
    ) -> tuple[Augmented, Session]:
        """The augmented model and session for this input signature (batch stays dynamic)."""
        layers = list(self.target_layers if layers is None else layers)
        key = ("aug", seed_mode, tuple(layers), hvp, guided_relu, *self._signature(feeds))
        if key not in self._sessions:
            shapes = {k: [None, *v.shape[1:]] for k, v in feeds.items()}
            aug = augment(
                self.model,
                layers,
                output=self.output,
                seed=seed_mode,  # type: ignore[arg-type]
                input_shapes=shapes,
                guided_relu=guided_relu,
                hvp=hvp,
            )
            self._sessions[key] = (aug, Session(aug.model, self.providers, self.threads))
        return self._sessions[key]  # type: ignore[no-any-return]

    def _plain(self, feeds: Feeds, layers: Sequence[str] = ()) -> Session:
        """The unmodified model (plus ``layers`` as outputs): forward only, no gradients."""
        key = ("plain", tuple(layers), *self._signature(feeds))
        if key not in self._sessions:
            self._sessions[key] = Session(with_outputs(self.model, self.info, layers), self.providers, self.threads)
        return self._sessions[key]  # type: ignore[no-any-return]

    def _tail(self, feeds: Feeds, layer: str, act: np.ndarray, hvp: bool, guided_relu: bool) -> tuple[Any, ...]:
        """The model cut at ``layer`` (now its input; see ``downstream_model``), differentiated
        with a tensor seed: (augmented model, session, the original inputs it still needs)."""
        key = ("tail", layer, hvp, guided_relu, *self._signature(feeds))
        if key not in self._sessions:
            cut, needed = downstream_model(self.model, self.info, layer, self.output)
            shapes = {layer: [None, *act.shape[1:]], **{k: [None, *feeds[k].shape[1:]] for k in needed}}
            aug = augment(cut, [layer], output=self.output, seed="tensor", input_shapes=shapes,
                          guided_relu=guided_relu, hvp=hvp)  # fmt: skip
            small = len(cut.graph.node) <= SMALL_TAIL * len(self.model.graph.node)
            session = Session(aug.model, self.providers, 1 if small else self.threads)
            self._sessions[key] = (aug, session, needed)
        return self._sessions[key]  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ the Runner protocol
    @property
    def output_index(self) -> int:
        """The explained output's position in :attr:`outputs` and ``Forward.outputs``."""
        return [o.name for o in self.model.graph.output].index(self.output)

    def outputs_of(self, feeds: Feeds) -> np.ndarray:
        """Forward only: the explained output. The run also returns the target layers, so that a
        method's forward-only run of the same arrays later in the call is free."""
        return self._plain_forward(feeds, self.target_layers).outputs[self.output_index]

    def _plain_forward(self, feeds: Feeds, layers: Sequence[str]) -> Forward:
        """Forward only: every graph output and ``layers``; run once per feed arrays in a call."""
        fwd = self._memo.get(feeds, layers)
        if fwd is None:
            names = [o.name for o in self.model.graph.output]
            res = self._plain(feeds, layers).run(feeds, [*names, *layers])
            fwd = Forward([res[k] for k in names], {k: res[k] for k in layers}, {})
            self._memo.put(feeds, fwd)
        return fwd

    def scores(self, feeds: Feeds, targets: Sequence[Target] | None, batch_size: int | None = None) -> np.ndarray:
        """Forward only, in batches of ``batch_size``: the target score per image, (N,).

        With ``targets=None`` the score is the top-1 logit.
        """
        step = batch_size or self.batch_size
        n = self._batch(feeds)
        out = []
        for s in range(0, n, step):
            part = {k: v[s : s + step] for k, v in feeds.items()}
            rows = self.outputs_of(part)
            for j, row in enumerate(rows):
                out.append(float(np.max(row)) if targets is None else float(targets[s + j](row)))
        return np.asarray(out, dtype=np.float64)

    def downstream_scores(
        self,
        layer: str,
        feeds: Feeds,
        activations: np.ndarray,
        targets: Sequence[Target],
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Scores with ``layer`` set to each of ``activations`` (M, ...), running only the nodes
        after it (a cut model: ``layer`` is its input). ``feeds`` hold batch 1 or M rows for
        the paths that bypass the layer; ``targets`` one per row (or one for all)."""
        step = batch_size or self.batch_size
        key = ("down", layer, *self._signature(feeds))
        if key not in self._sessions:
            cut, needed = downstream_model(self.model, self.info, layer, self.output)
            self._sessions[key] = (Session(cut, self.providers, self.threads), needed)
        session, needed = self._sessions[key]
        m = activations.shape[0]
        ts = list(targets) * m if len(targets) == 1 else list(targets)
        out = []
        for s in range(0, m, step):
            chunk = activations[s : s + step]
            side = {k: (feeds[k] if feeds[k].shape[0] == m else np.repeat(feeds[k][:1], len(chunk), 0))
                    for k in needed}  # fmt: skip
            side = {k: v[s : s + step] if v.shape[0] == m else v for k, v in side.items()}
            rows = session.run({layer: chunk, **side}, [self.output])[self.output]
            out += [float(ts[s + j](row)) for j, row in enumerate(rows)]
        return np.asarray(out, dtype=np.float64)

    def bias_terms(self) -> list[tuple[str, np.ndarray]]:
        """(tensor, per-channel bias) of every Conv / BatchNormalization bias term."""
        return bias_terms(self.model, self.info)

    def layer_grid(self, array: np.ndarray, input_hw: tuple[int, int] | None) -> np.ndarray:
        """A layer tensor as (N, C, *spatial): ``reshape_transform``, or the token grid."""
        if self.reshape_transform is not None:
            return np.asarray(self.reshape_transform(array))
        if array.ndim == 3:
            return tokens_to_grid(array, input_hw)
        return array

    def run_augmented(
        self,
        feeds: Feeds,
        targets: Sequence[Target] | None,
        *,
        layers: Sequence[str] | None = None,
        gradients: bool = True,
        hvp: bool = False,
        extra: Sequence[str] = (),
        guided_relu: bool = False,
    ) -> Forward:
        """One run: outputs, activations of ``layers`` (default: the target layers) and,
        with ``gradients``, their gradients; ``extra`` tensors (an input, bias terms) get
        gradients too, in ``Forward.extra``. Fills ``outputs``/``activations``/``gradients``."""
        layers = list(self.target_layers if layers is None else layers)
        extra = [e for e in extra if e not in layers]
        if not gradients and not extra and not hvp:
            return self._keep(self._plain_forward(feeds, layers))
        n = self._batch(feeds)
        targets = self._targets(targets, n)
        class_mode = targets is None or all(t.class_index is not None for t in targets)
        if targets is not None and not class_mode and not self._static_seed(targets) and len(layers) == 1 and not extra:
            return self._keep(self.tail_forward(feeds, targets, layers[0], gradients, hvp, guided_relu))
        every = [*layers, *extra]
        aug, session = self.compiled(feeds, "class" if class_mode else "tensor", every, hvp, guided_relu)
        if class_mode and targets is not None:
            self._check_classes(targets)
        seed = self._seed_feed(aug, feeds, targets, n)
        res = session.run({**feeds, aug.seed_input: seed})
        fwd = Forward(
            [res[name] for name in aug.original_outputs],
            {k: res[aug.activation_outputs[k]] for k in layers},
            {k: res[aug.gradient_outputs[k]] for k in layers} if gradients else {},
            {k: res[v] for k, v in aug.hvp_outputs.items() if k in layers},
            {k: res[aug.gradient_outputs[k]] for k in extra},
        )
        return self._keep(fwd)

    def tail_forward(
        self, feeds: Feeds, targets: Sequence[Target], layer: str, gradients: bool, hvp: bool, guided_relu: bool
    ) -> Forward:
        """:meth:`run_augmented` for seeds that depend on the output (softmax, Finer-CAM's
        weighting, similarity targets) and one layer: a forward-only run gives the outputs,
        hence the seeds, and the layer's activation A; the model cut at the layer,
        differentiated, then maps (A, seed) to ∂<seed, y>/∂A running only the nodes after
        the layer. The network runs once, not twice (a forward for the seeds, then the full
        augmented model). A cut with at most ``SMALL_TAIL`` of the nodes (a pooling and a
        classifier) runs on one thread: a thread pool's idle workers would spin on the cores
        the next forward pass needs."""
        plain = self._plain_forward(feeds, [layer])
        out = plain.outputs[self.output_index]
        seed = np.stack([t.seed(out[i]) for i, t in enumerate(targets)]).astype(out.dtype)
        act = plain.activations[layer]
        aug, session, needed = self._tail(feeds, layer, act, hvp, guided_relu)
        names = [aug.gradient_outputs[layer]] + ([aug.hvp_outputs[layer]] if hvp else [])
        res = session.run({layer: act, **{k: feeds[k] for k in needed}, aug.seed_input: seed}, names)
        grads = {layer: res[names[0]]} if gradients else {}
        return Forward(plain.outputs, {layer: act}, grads, {layer: res[names[-1]]} if hvp else {})

    def _keep(self, fwd: Forward) -> Forward:
        self.outputs, self.activations, self.gradients, self.hvp = fwd.outputs, fwd.activations, fwd.gradients, fwd.hvp
        return fwd

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

    # ------------------------------------------------------------------ seeds
    def _seed_feed(self, aug: Augmented, feeds: Feeds, targets: Sequence[Target] | None, n: int) -> np.ndarray:
        if aug.seed_mode == "class":
            if targets is None:
                return np.full((n,), -1, dtype=np.int64)
            return np.asarray([t.class_index for t in targets], dtype=np.int64)
        if targets is None:
            raise CamcoreError("this output needs explicit targets")
        if self._static_seed(targets):
            row = np.zeros(self._static_output_row(), np.float32)  # type: ignore[arg-type]
            return np.stack([t.seed(row) for t in targets]).astype(np.float32)
        out = self.outputs_of(feeds)
        return np.stack([t.seed(out[i]) for i, t in enumerate(targets)]).astype(out.dtype)

    def _static_seed(self, targets: Sequence[Target] | None) -> bool:
        """Whether the seeds are known before the forward pass (linear targets, static output)."""
        return targets is not None and all(t.linear for t in targets) and self._static_output_row() is not None

    def _static_output_row(self) -> tuple[int, ...] | None:
        ti = self.info.get(self.output)
        if ti is None or ti.shape is None or not all(isinstance(d, int) for d in ti.shape[1:]):
            return None
        return tuple(int(d) for d in ti.shape[1:])  # type: ignore[arg-type]

    def _check_classes(self, targets: Sequence[Target]) -> None:
        ti = self.info.get(self.output)
        classes = ti.shape[-1] if ti is not None and ti.shape else None
        for t in targets:
            k = t.class_index
            if k is None or k < 0 or (isinstance(classes, int) and k >= classes):
                raise CamcoreError(f"target class {k} is out of range for {classes} classes")

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

    def _explained_classes(self, fwd: Forward, targets: Sequence[Target] | None) -> np.ndarray:
        if targets is None:
            return np.asarray(np.argmax(fwd.outputs[self.output_index], axis=-1)).reshape(-1)
        if any(t.class_index is None for t in targets):
            raise CamcoreError(f"{self.method.name} needs class targets (ClassifierOutputTarget)")
        return np.asarray([t.class_index for t in targets])

    def _class_weights(self, layer: str, fwd: Forward, targets: Sequence[Target] | None) -> np.ndarray:
        key = ("classifier", layer)
        if key not in self._sessions:
            self._sessions[key] = classifier_weights(self.model, self.info, layer)
        w = self._sessions[key]
        classes = self._explained_classes(fwd, targets)
        if classes.max() >= w.shape[0]:
            raise CamcoreError(f"class {classes.max()} is out of range for a classifier of {w.shape[0]} classes")
        return w[classes]  # type: ignore[no-any-return]

    def _grad_moments(
        self, feeds: Feeds, targets: Sequence[Target] | None, layer: str, clean: Forward, hw: tuple[int, int] | None
    ) -> np.ndarray:
        """(mean G, mean G², mean G³) over ``num_samples`` noisy copies of the image input."""
        opts = self.options
        samples, std = int(opts["num_samples"]), float(opts["std"])
        rng = np.random.default_rng(opts["seed"])
        n = self._batch(feeds)
        if targets is None:
            targets = [ClassifierOutputTarget(int(k)) for k in self._explained_classes(clean, None)]
        name = self.input_names[0]
        moments = None
        for _ in range(samples):
            noisy = dict(feeds)
            x = feeds[name]
            noisy[name] = (x + rng.normal(0.0, std, x.shape)).astype(x.dtype)
            g = self.layer_grid(self.run_augmented(noisy, targets, layers=[layer]).gradients[layer], hw)
            g = g.astype(np.float64)
            step = np.stack([g, g**2, g**3])
            moments = step if moments is None else moments + step
        assert moments is not None and moments.shape[1] == n
        return (moments / samples).astype(np.float32)

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

    def __enter__(self) -> BaseCAM:
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
