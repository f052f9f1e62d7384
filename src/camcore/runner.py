"""The execution engine behind the CAM classes: :class:`OnnxRunner` runs one prepared ONNX
model for a method and implements the :class:`~camcore.methods.registry.Runner` protocol
that the method functions call.

What lives here: the compiled-session cache (augmented models, plain forward models,
models cut after a layer, per input signature), the forward-only runs and their per-call
memo (:class:`_CallMemo`), the seeds of an augmented run, target scores, downstream
scores, layer grids (``reshape_transform`` or :func:`tokens_to_grid`) and the extra arrays
a layer method may need (class weights, gradient moments). The public API (construction,
input checks, ``__call__``, ``forward``, ``aug_smooth``, the generated classes and
``method_maps``) is :mod:`camcore.cam`; :class:`camcore.cam.BaseCAM` inherits this class.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import numpy as np
import onnx

from camcore.errors import CamcoreError
from camcore.graph import Augmented, augment
from camcore.graph.parts import bias_terms, classifier_weights, downstream_model, with_outputs
from camcore.graph.shapes import TensorInfo
from camcore.methods.registry import CamMethod, Forward
from camcore.runtime import Session
from camcore.targets import ClassifierOutputTarget, Target

ReshapeTransform = Callable[[np.ndarray], np.ndarray]
Feeds = Mapping[str, np.ndarray]
#: a model cut after the target layer with at most this share of the nodes runs on one thread
#: (see :meth:`OnnxRunner.tail_forward`)
SMALL_TAIL = 0.1

__all__ = ["OnnxRunner", "tokens_to_grid"]


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


class OnnxRunner:
    """Runs one prepared ONNX model for a CAM method: the :class:`~camcore.methods.registry.Runner`
    protocol (all of it but ``method_maps``, which :class:`camcore.cam.BaseCAM` adds).

    Keeps the compiled sessions (per input signature; the batch stays dynamic) and, after
    every run, its ``outputs``, ``activations``, ``gradients`` and ``hvp``.

    Args:
        model, info: the prepared model and its tensor infos (``prepare_model``).
        output: the explained output's name.
        target_layers: the resolved layer tensors.
        reshape_transform: turns a layer tensor into (N, C, *spatial); None arranges tokens.
        providers, threads: onnxruntime execution providers and intra-op threads.
        batch_size: the batch of the methods' internal runs.
    """

    #: the method run and its merged options (set by :class:`camcore.cam.BaseCAM`)
    method: CamMethod
    options: dict[str, Any]

    def __init__(
        self,
        model: onnx.ModelProto,
        info: dict[str, TensorInfo],
        output: str,
        target_layers: list[str],
        reshape_transform: ReshapeTransform | None,
        *,
        providers: Sequence[str] | None,
        threads: int | None,
        batch_size: int,
    ) -> None:
        self.model, self.info = model, info
        initializers = {i.name for i in model.graph.initializer}
        self.input_names = [i.name for i in model.graph.input if i.name not in initializers]
        self.output = output
        self.target_layers = target_layers
        self.providers = providers
        self.threads = threads
        self.batch_size = batch_size
        self.reshape_transform = reshape_transform
        self._sessions: dict[tuple[object, ...], Any] = {}
        self._memo = _CallMemo()  # shared with the siblings (never reassigned)
        self.outputs: list[np.ndarray] = []
        self.activations: dict[str, np.ndarray] = {}
        self.gradients: dict[str, np.ndarray] = {}
        self.hvp: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ batches and targets
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
                check=False,  # onnxruntime validates it on loading (the checker took ~0.15 s of a cold call)
            )
            self._sessions[key] = (aug, Session(aug.model, self.providers, self.threads))
        return self._sessions[key]

    def _plain(self, feeds: Feeds, layers: Sequence[str] = ()) -> Session:
        """The unmodified model (plus ``layers`` as outputs): forward only, no gradients."""
        key = ("plain", tuple(layers), *self._signature(feeds))
        if key not in self._sessions:
            self._sessions[key] = Session(with_outputs(self.model, self.info, layers), self.providers, self.threads)
        return self._sessions[key]

    def _tail(self, feeds: Feeds, layer: str, act: np.ndarray, hvp: bool, guided_relu: bool) -> tuple[Any, ...]:
        """The model cut at ``layer`` (now its input; see ``downstream_model``), differentiated
        with a tensor seed: (augmented model, session, the original inputs it still needs)."""
        key = ("tail", layer, hvp, guided_relu, *self._signature(feeds))
        if key not in self._sessions:
            cut, needed = downstream_model(self.model, self.info, layer, self.output)
            shapes = {layer: [None, *act.shape[1:]], **{k: [None, *feeds[k].shape[1:]] for k in needed}}
            aug = augment(cut, [layer], output=self.output, seed="tensor", input_shapes=shapes,
                          guided_relu=guided_relu, hvp=hvp, check=False)  # fmt: skip
            small = len(cut.graph.node) <= SMALL_TAIL * len(self.model.graph.node)
            session = Session(aug.model, self.providers, 1 if small else self.threads)
            self._sessions[key] = (aug, session, needed)
        return self._sessions[key]

    # ------------------------------------------------------------------ runs and scores (the Runner protocol)
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

    # ------------------------------------------------------------------ seeds
    def _seed_feed(self, aug: Augmented, feeds: Feeds, targets: Sequence[Target] | None, n: int) -> np.ndarray:
        if aug.seed_mode == "class":
            if targets is None:
                return np.full((n,), -1, dtype=np.int64)
            return np.asarray([t.class_index for t in targets], dtype=np.int64)
        if targets is None:
            raise CamcoreError("this output needs explicit targets")
        if self._static_seed(targets):
            row = np.zeros(cast("tuple[int, ...]", self._static_output_row()), np.float32)  # not None: _static_seed
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

    # ------------------------------------------------------------------ what a layer method needs
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
        return w[classes]

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
