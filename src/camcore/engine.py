"""The execution engine: one object that owns the compiled sessions of one model and runs them.

An :class:`Engine` is built from a model path or ``ModelProto`` (and the output to explain). It
compiles, once per (layers, seed mode, input signature), the augmented model of
:func:`camcore.graph.augment` (the batch dynamic; once per batch size too where a gradient rule
needs it static) and keeps the other sessions the methods ask for: the plain model
with extra outputs (forward only), the model cut after a layer (re-running only the nodes
downstream of it) and, differentiated, that cut. Each run returns a typed :class:`Result`.

The engine knows nothing of methods: it runs what it is asked (layers, gradients, a
Hessian-vector product, the gradients of extra tensors, guided ReLUs) and answers graph facts
(bias terms, the classifier after a layer). The CAM classes own one; metrics, video and the
dataset audit use it through these public names.

* :meth:`Engine.fork` gives a copy for another thread: it shares the compiled sessions
  (onnxruntime's ``run`` is thread-safe) and has its own call memo.
* An engine pickles: the model travels as bytes (or its path when it is too big for bytes)
  and the sessions are rebuilt on the other side when first used (a Ray worker, say).

Why one file of about 550 lines: it is one class and the two small caches only it uses; its parts
(input checks, session tables, runs, scores, graph facts) share the same state and change together.

Example:
    >>> engine = Engine("resnet50.onnx")
    >>> result = engine.run({"input": x}, None, layers=["/layer4/layer4.2/relu_2/Relu_output_0"])
    >>> result.outputs[0].shape, result.gradients[layer].shape             # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import numbers
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import onnx

from camcore.errors import CamcoreError, InputError, ShapeError
from camcore.graph import Augmented, augment, prepare_model
from camcore.graph.layers import explained_output, resolve_target_layers
from camcore.graph.layouts import LayerKind, image_layout, layer_layouts
from camcore.graph.parts import bias_terms, classifier_weights, downstream_model, root_layers, with_outputs
from camcore.graph.shapes import TensorInfo
from camcore.maps import InputLayout, LayerLayout, spatial_size
from camcore.runtime import Session, select_providers
from camcore.targets import Target, per_image, top1_targets

__all__ = ["SMALL_TAIL", "Engine", "Feeds", "Result"]

Feeds = Mapping[str, np.ndarray]
#: a model cut after the target layer with at most this share of the nodes runs on one thread
#: (see :meth:`Engine.run`)
SMALL_TAIL = 0.1
_MAX_PICKLE_BYTES = 1_800_000_000
_V = TypeVar("_V")


@dataclass(frozen=True)
class Result:
    """What one run returned, per layer tensor (as the model gives it, not yet arranged).

    ``gradients`` is empty for a run without gradients; ``hvp`` holds ``H·A`` (the Hessian of
    the score times the activation) when asked for; ``extra`` the gradients of the extra
    tensors asked for (the input, bias terms), by tensor name.
    """

    outputs: list[np.ndarray]
    activations: dict[str, np.ndarray]
    gradients: dict[str, np.ndarray]
    hvp: dict[str, np.ndarray] = field(default_factory=dict)
    extra: dict[str, np.ndarray] = field(default_factory=dict)


class _CallMemo:
    """The last forward-only run inside one call, so that a method and the methods it calls
    share it (Finer-CAM picks its classes from the outputs, then its base method's seeds and
    activations come from the same run).

    A run matches by the identity of the feed arrays (held here, so no id is reused) and the
    layers it returned; the memo is emptied when a call starts and ends, so an array changed
    in place between calls is never answered from it.
    """

    def __init__(self) -> None:
        self.active = False
        self.feeds: dict[str, np.ndarray] = {}
        self.result: Result | None = None

    def reset(self, active: bool) -> None:
        self.active, self.feeds, self.result = active, {}, None

    def get(self, feeds: Feeds, layers: Sequence[str]) -> Result | None:
        res = self.result
        if res is None or feeds.keys() != self.feeds.keys() or any(feeds[k] is not v for k, v in self.feeds.items()):
            return None
        if not set(layers) <= res.activations.keys():
            return None
        return Result(res.outputs, {k: res.activations[k] for k in layers}, {})

    def put(self, feeds: Feeds, result: Result) -> None:
        if self.active:
            self.feeds, self.result = dict(feeds), result


class _Compiled:
    """The compiled sessions and graph facts of one model, shared by an engine and its forks.

    One table per kind of value; a value is built once, under a lock, however many threads
    ask for it at the same time.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.augmented: dict[tuple[object, ...], tuple[Augmented, Session]] = {}
        self.plain: dict[tuple[object, ...], Session] = {}
        self.cuts: dict[tuple[object, ...], tuple[Session, list[str]]] = {}
        self.tails: dict[tuple[object, ...], tuple[Augmented, Session, list[str], list[str]]] = {}
        self.facts: dict[tuple[object, ...], Any] = {}

    def get(self, table: dict[tuple[object, ...], _V], key: tuple[object, ...], build: Callable[[], _V]) -> _V:
        value = table.get(key)
        if value is None:
            with self.lock:
                value = table.get(key)
                if value is None:
                    value = table[key] = build()
        return value

    def sessions(self) -> Iterator[tuple[str, Session]]:
        """Every compiled session with its kind: augmented, plain, cut or tail."""
        for _, session in list(self.augmented.values()):
            yield "augmented", session
        for session in list(self.plain.values()):
            yield "plain", session
        for session, _ in list(self.cuts.values()):
            yield "cut", session
        for _, session, _, _ in list(self.tails.values()):
            yield "tail", session

    def clear(self) -> None:
        for table in (self.augmented, self.plain, self.cuts, self.tails, self.facts):
            table.clear()


class Engine:
    """Runs one ONNX model for the methods: outputs, activations, gradients, scores.

    Args:
        model: a path or a ``ModelProto`` (copied; the caller's stays as it is). An in-memory
            model whose weights are external data needs ``base_dir``, the folder its
            ``location`` entries are relative to.
        output: the output to explain, by name (default: the first).
        providers, threads: onnxruntime execution providers and intra-op threads.
        base_dir: where an in-memory model's external data lives.

    Example:
        >>> engine = Engine("model.onnx", threads=1)
        >>> engine.outputs_of({"input": x}).shape                            # doctest: +SKIP
        (2, 1000)
    """

    def __init__(
        self,
        model: str | Path | onnx.ModelProto,
        *,
        output: str | None = None,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        base_dir: str | Path | None = None,
    ) -> None:
        if threads is not None:
            if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1:
                raise CamcoreError(f"threads must be an integer >= 1, got {threads!r}")
            threads = int(threads)
        select_providers(providers)  # unknown providers fail here, before any work
        proto, info = prepare_model(model, base_dir=base_dir)
        self.source = str(model) if isinstance(model, (str, Path)) else None
        self._setup(proto, info, output, providers, threads)

    def _setup(
        self,
        proto: onnx.ModelProto,
        info: dict[str, TensorInfo],
        output: str | None,
        providers: Sequence[str] | None,
        threads: int | None,
    ) -> None:
        self.model, self.info = proto, info
        self.output = explained_output(proto, output)
        self.providers = None if providers is None else list(providers)
        self.threads = threads
        initializers = {i.name for i in proto.graph.initializer}
        #: the model's inputs (initializers that are also graph inputs left out)
        self.input_names = [i.name for i in proto.graph.input if i.name not in initializers]
        self.output_names = [o.name for o in proto.graph.output]
        #: the explained output's position in ``Result.outputs``
        self.output_index = self.output_names.index(self.output)
        #: the image input's layout (its first input), read from the graph
        self.input_layout: InputLayout = image_layout(proto, info, self.input_names[0])
        self._layer_kinds: dict[str, LayerKind] | None = None
        self._compiled = _Compiled()
        self._memo = _CallMemo()

    # ------------------------------------------------------------------ copies
    def fork(self) -> Engine:
        """A copy for another thread: the same model and compiled sessions, its own call memo."""
        twin = object.__new__(Engine)
        twin.__dict__.update(self.__dict__)
        twin._memo = _CallMemo()
        return twin

    def __getstate__(self) -> dict[str, Any]:
        if self.model.ByteSize() <= _MAX_PICKLE_BYTES:
            model: bytes | str = self.model.SerializeToString()
        elif self.source is not None:
            model = self.source
        else:
            raise CamcoreError("an in-memory model over 1.8 GB cannot be pickled: build the engine from its path")
        return {"model": model, "output": self.output, "providers": self.providers, "threads": self.threads,
                "source": self.source}  # fmt: skip

    def __setstate__(self, state: dict[str, Any]) -> None:
        model = state["model"]
        proto, info = prepare_model(onnx.load_from_string(model) if isinstance(model, bytes) else model)
        self.source = state["source"]
        self._setup(proto, info, state["output"], state["providers"], state["threads"])

    def close(self) -> None:
        """Drop the compiled sessions (they are rebuilt when needed again)."""
        self._compiled.clear()

    def sessions(self) -> list[tuple[str, Session]]:
        """Every compiled session and its kind (``augmented``, ``plain``, ``cut``, ``tail``)."""
        return list(self._compiled.sessions())

    @contextlib.contextmanager
    def call(self) -> Iterator[Engine]:
        """One explanation: forward-only runs of the same feed arrays are made once inside it
        (nested calls share the outer one)."""
        if self._memo.active:
            yield self
            return
        self._memo.reset(active=True)
        try:
            yield self
        finally:
            self._memo.reset(active=False)

    # ------------------------------------------------------------------ inputs
    def feeds(self, input_tensor: np.ndarray | Feeds) -> dict[str, np.ndarray]:
        """Named, checked feeds: one array (the model has one input) or a dict by input name.

        Raises:
            InputError: an unknown input, a wrong dtype, rank or static size, an empty
                array or NaN/Inf.
        """
        if isinstance(input_tensor, Mapping):
            feeds = {k: np.asarray(v) for k, v in input_tensor.items()}
        else:
            if len(self.input_names) != 1:
                raise InputError(f"the model has inputs {self.input_names}: pass a dict of arrays by name")
            feeds = {self.input_names[0]: np.asarray(input_tensor)}
        for name, value in feeds.items():
            self._check_input(name, value)
        missing = [k for k in self.input_names if k not in feeds]
        if missing:
            raise InputError(f"missing model input(s) {missing}; the inputs are {self.input_names}")
        sizes = {int(v.shape[0]) for v in feeds.values() if v.ndim}
        if len(sizes) > 1:
            raise InputError(f"the inputs have different batch sizes {sorted(sizes)}")
        return feeds

    def _check_input(self, name: str, value: np.ndarray) -> None:
        ti: TensorInfo | None = self.info.get(name)
        if ti is None or name not in self.input_names:
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
                if isinstance(want_dim, int) and want_dim > 0 and want_dim != got:
                    raise InputError(
                        f"input {name!r} needs size {want_dim} on axis {axis} (shape "
                        f"{list(ti.shape)}), got shape {tuple(value.shape)}"
                    )
        if value.size == 0:
            raise InputError(f"input {name!r} is empty (shape {tuple(value.shape)})")
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            raise InputError(f"input {name!r} contains NaN or Inf")

    @staticmethod
    def batch_of(feeds: Feeds) -> int:
        """The batch size of ``feeds``."""
        return int(next(iter(feeds.values())).shape[0])

    def image_input(self, feeds: Feeds) -> tuple[str, np.ndarray]:
        """The name and array of the model's image input (its first input), which must be 4-D."""
        name = self.input_names[0]
        x = feeds[name]
        if x.ndim != 4:
            raise CamcoreError(f"this method needs a 4-D image input; {name!r} has shape {tuple(x.shape)}")
        return name, x

    def input_size(self, feeds: Feeds) -> tuple[int, int] | None:
        """The image input's (height, width) in its own layout; None when it is not 4-D."""
        name = self.input_names[0]
        x = feeds[name] if name in feeds else next(iter(feeds.values()))
        return spatial_size(x, self.input_layout)

    def output_shape(self) -> tuple[int | str | None, ...] | None:
        """The explained output's declared shape (dims int, symbolic str or None)."""
        ti = self.info.get(self.output)
        return None if ti is None else ti.shape

    def class_count(self) -> int | None:
        """The number of classes of an (N, classes) output, when static."""
        shape = self.output_shape()
        if shape is None or len(shape) != 2 or not isinstance(shape[1], int) or shape[1] < 1:
            return None
        return shape[1]

    def check_classes(self, targets: Sequence[Target]) -> None:
        """Raise a one-line error for a class target outside the output's classes."""
        classes = self.class_count()
        for t in targets:
            k = t.class_index
            if k is None:
                continue
            if k < 0 or (classes is not None and k >= classes):
                raise CamcoreError(f"target class {k} is out of range for {classes} classes")

    def layer_layout(self, layer: str) -> LayerLayout | None:
        """The layout of ``layer``'s tensor as the graph shows it; None where it shows none
        (:func:`~camcore.graph.layouts.layer_layouts`)."""
        if self._layer_kinds is None:
            self._layer_kinds = layer_layouts(self.model, self.info)
        kind = self._layer_kinds.get(layer)
        return None if kind is None else LayerLayout(kind)

    def resolve_layers(self, target_layers: Sequence[str] | str | None) -> list[str]:
        """Tensor names for ``target_layers`` (tensor or node names); None: the default layer."""
        return resolve_target_layers(self.model, self.info, self.output, target_layers)

    # ------------------------------------------------------------------ sessions
    @staticmethod
    def _signature(feeds: Feeds) -> tuple[object, ...]:
        return tuple((k, v.shape[1:]) for k, v in sorted(feeds.items()))

    def compiled(
        self, feeds: Feeds, seed_mode: str, layers: Sequence[str], hvp: bool = False, guided_relu: bool = False
    ) -> tuple[Augmented, Session]:
        """The augmented model and its session for this input signature: the batch stays dynamic
        unless a gradient rule needs it static (see :meth:`_per_batch`)."""
        layers = list(layers)
        key = (seed_mode, tuple(layers), hvp, guided_relu, *self._signature(feeds))

        def build(batch: int | None) -> tuple[Augmented, Session]:
            shapes = {k: [batch, *v.shape[1:]] for k, v in feeds.items()}
            aug = augment(self.model, layers, output=self.output, seed=seed_mode,  # type: ignore[arg-type]
                          input_shapes=shapes, guided_relu=guided_relu, hvp=hvp,
                          check=False)  # onnxruntime validates it on loading (the checker took ~0.15 s)  # fmt: skip
            return aug, Session(aug.model, self.providers, self.threads)

        return self._per_batch(self._compiled.augmented, key, self.batch_of(feeds), build)

    def _per_batch(
        self,
        table: dict[tuple[object, ...], _V],
        key: tuple[object, ...],
        batch: int,
        build: Callable[[int | None], _V],
    ) -> _V:
        """``build(None)`` (the batch dynamic: one session for every batch size), or, once it has
        raised a ShapeError (a rule needs a static batch, e.g. a Slice along it), ``build(batch)``
        per batch size, the feeds' batch fixed in the graph."""
        flag = ("batch fixed", id(table), *key)
        if flag not in self._compiled.facts:
            try:
                return self._compiled.get(table, key, lambda: build(None))
            except ShapeError:
                self._compiled.facts[flag] = True
        return self._compiled.get(table, (*key, batch), lambda: build(batch))

    def _plain(self, feeds: Feeds, layers: Sequence[str]) -> Session:
        """The unmodified model (plus ``layers`` as outputs): forward only."""
        key = (tuple(layers), *self._signature(feeds))
        build = lambda: Session(with_outputs(self.model, self.info, layers), self.providers, self.threads)  # noqa: E731
        return self._compiled.get(self._compiled.plain, key, build)

    def _cut(self, feeds: Feeds, layer: str) -> tuple[Session, list[str]]:
        """The model after ``layer`` (now its input), and the original inputs it still needs."""

        def build() -> tuple[Session, list[str]]:
            cut, needed = downstream_model(self.model, self.info, layer, self.output)
            return Session(cut, self.providers, self.threads), needed

        return self._compiled.get(self._compiled.cuts, (layer, *self._signature(feeds)), build)

    def _tail(
        self, feeds: Feeds, layers: Sequence[str], acts: Mapping[str, np.ndarray], hvp: bool, guided_relu: bool
    ) -> tuple[Augmented, Session, list[str], list[str]]:
        """The model cut at ``layers`` (at their roots, :func:`~camcore.graph.parts.root_layers`),
        differentiated with a tensor seed; with the roots it takes and the original inputs it
        still needs."""
        layers = list(layers)
        roots = root_layers(self.model, layers)

        def build(batch: int | None) -> tuple[Augmented, Session, list[str], list[str]]:
            cut, needed = downstream_model(self.model, self.info, layers, self.output)
            shapes = {**{r: [batch, *acts[r].shape[1:]] for r in roots},
                      **{k: [batch, *feeds[k].shape[1:]] for k in needed}}  # fmt: skip
            aug = augment(cut, layers, output=self.output, seed="tensor", input_shapes=shapes,
                          guided_relu=guided_relu, hvp=hvp, check=False)  # fmt: skip
            small = len(cut.graph.node) <= SMALL_TAIL * len(self.model.graph.node)
            return aug, Session(aug.model, self.providers, 1 if small else self.threads), roots, needed

        key = (tuple(layers), hvp, guided_relu, *self._signature(feeds))
        return self._per_batch(self._compiled.tails, key, int(acts[roots[0]].shape[0]), build)

    # ------------------------------------------------------------------ runs
    def forward(self, feeds: Feeds, layers: Sequence[str] = ()) -> Result:
        """Forward only: every output and the activations of ``layers``; made once per feed
        arrays inside :meth:`call`."""
        res = self._memo.get(feeds, layers)
        if res is None:
            names = [*self.output_names, *layers]
            got = self._plain(feeds, layers).run(feeds, names)
            res = Result([got[k] for k in self.output_names], {k: got[k] for k in layers}, {})
            self._memo.put(feeds, res)
        return res

    def outputs_of(self, feeds: Feeds, layers: Sequence[str] = ()) -> np.ndarray:
        """Forward only: the explained output (``layers`` also returned, for a later
        :meth:`forward` of the same arrays in the call)."""
        return self.forward(feeds, layers).outputs[self.output_index]

    def run(
        self,
        feeds: Feeds,
        targets: Sequence[Target] | None,
        *,
        layers: Sequence[str],
        gradients: bool = True,
        hvp: bool = False,
        extra: Sequence[str] = (),
        guided_relu: bool = False,
    ) -> Result:
        """One explanation run: outputs, the activations of ``layers`` and, with ``gradients``,
        the gradients of the target score with respect to them; ``extra`` tensors (an input,
        bias terms) get gradients too, in ``Result.extra``.

        ``targets``: one per image (or one for all) or None (the top-1 class, chosen in the
        graph). Class targets seed the graph with an int64 class per image; other targets give
        a seed shaped like the output. A seed that depends on the output (softmax, Finer-CAM,
        similarity, a detection chosen from the outputs) takes a forward-only run, which gives
        the outputs, hence the seeds, and the layers' activations A; the model cut at the
        layers (at those no other layer feeds), differentiated, then maps (A, seed) to
        ∂<seed, y>/∂A running only the nodes after them: the network runs once, not twice. So
        does a seed known beforehand when the call has already made that forward run (a task
        chose the targets from the outputs). A cut with at most ``SMALL_TAIL`` of the nodes (a pooling and a
        classifier) runs on one thread: a thread pool's idle workers would spin on the cores
        the next forward pass needs.
        """
        layers = list(layers)
        extra = [e for e in extra if e not in layers]
        if not gradients and not extra and not hvp:
            return self.forward(feeds, layers)
        n = self.batch_of(feeds)
        checked = None if targets is None else per_image(targets, n)
        class_mode = checked is None or all(t.class_index is not None for t in checked)
        if checked is not None and not class_mode and layers and not extra and (
                not self._static_seed(checked) or self._memo.get(feeds, layers) is not None):  # fmt: skip
            return self._tail_run(feeds, checked, layers, gradients, hvp, guided_relu)
        aug, session = self.compiled(feeds, "class" if class_mode else "tensor", [*layers, *extra], hvp, guided_relu)
        if class_mode and checked is not None:
            self.check_classes(checked)
        got = session.run({**feeds, aug.seed_input: self._seed_feed(aug, feeds, checked, n)})
        return Result(
            [got[name] for name in aug.original_outputs],
            {k: got[aug.activation_outputs[k]] for k in layers},
            {k: got[aug.gradient_outputs[k]] for k in layers} if gradients else {},
            {k: got[v] for k, v in aug.hvp_outputs.items() if k in layers},
            {k: got[aug.gradient_outputs[k]] for k in extra},
        )

    def _tail_run(
        self, feeds: Feeds, targets: Sequence[Target], layers: list[str], gradients: bool, hvp: bool,
        guided_relu: bool,
    ) -> Result:  # fmt: skip
        """:meth:`run` for output-dependent seeds: a forward pass (or the call's, when one was
        made), then the model cut at the layers, differentiated."""
        plain = self.forward(feeds, layers)
        out = plain.outputs[self.output_index]
        seed = np.stack([t.seed(out[i]) for i, t in enumerate(targets)]).astype(out.dtype)
        aug, session, roots, needed = self._tail(feeds, layers, plain.activations, hvp, guided_relu)
        names = [aug.gradient_outputs[k] for k in layers] + ([aug.hvp_outputs[k] for k in layers] if hvp else [])
        got = session.run({**{r: plain.activations[r] for r in roots}, **{k: feeds[k] for k in needed},
                           aug.seed_input: seed}, names)  # fmt: skip
        return Result(
            plain.outputs,
            {k: plain.activations[k] for k in layers},
            {k: got[aug.gradient_outputs[k]] for k in layers} if gradients else {},
            {k: got[aug.hvp_outputs[k]] for k in layers} if hvp else {},
        )

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

    def _static_seed(self, targets: Sequence[Target]) -> bool:
        """Whether the seeds are known before the forward pass (linear targets, static output)."""
        return all(t.linear for t in targets) and self._static_output_row() is not None

    def _static_output_row(self) -> tuple[int, ...] | None:
        shape = self.output_shape()
        if shape is None or not all(isinstance(d, int) and d > 0 for d in shape[1:]):
            return None
        return tuple(int(d) for d in shape[1:])  # type: ignore[arg-type]

    # ------------------------------------------------------------------ scores
    def targets_for(self, feeds: Feeds, targets: Sequence[Target] | None, layers: Sequence[str] = ()) -> list[Target]:
        """One target per image: ``targets`` broadcast, or the top-1 class of each image's output
        (a forward run that also returns ``layers``, for a later run of the same arrays)."""
        n = self.batch_of(feeds)
        if targets is not None:
            return per_image(targets, n)
        return top1_targets(self.outputs_of(feeds, layers))

    def scores(
        self, feeds: Feeds, targets: Sequence[Target] | None, batch_size: int = 32, layers: Sequence[str] = ()
    ) -> np.ndarray:
        """Forward only, ``batch_size`` rows at a time: the target score per image, (N,).

        With ``targets=None`` the score is the top-1 logit. ``layers``: the method's layers, so that
        the runs share the forward session of its other runs (each session's idle threads spin for
        a while after a run and slow the next session's run on a small machine).
        """
        n = self.batch_of(feeds)
        checked = None if targets is None else per_image(targets, n)
        out = []
        for s in range(0, n, batch_size):
            part = {k: v[s : s + batch_size] for k, v in feeds.items()}
            rows = self.outputs_of(part, layers)
            for j, row in enumerate(rows):
                out.append(float(np.max(row)) if checked is None else float(checked[s + j](row)))
        return np.asarray(out, dtype=np.float64)

    def downstream_scores(
        self, layer: str, feeds: Feeds, activations: np.ndarray, targets: Sequence[Target], batch_size: int = 32
    ) -> np.ndarray:
        """Scores with ``layer`` set to each of ``activations`` (M, ...), running only the nodes
        after it (a cut model: ``layer`` is its input). ``feeds`` hold batch 1 or M rows for the
        paths that bypass the layer; ``targets`` one per row (or one for all)."""
        session, needed = self._cut(feeds, layer)
        m = activations.shape[0]
        ts = per_image(targets, m)
        out = []
        for s in range(0, m, batch_size):
            chunk = activations[s : s + batch_size]
            side = {k: (feeds[k] if feeds[k].shape[0] == m else np.repeat(feeds[k][:1], len(chunk), 0))
                    for k in needed}  # fmt: skip
            side = {k: v[s : s + batch_size] if v.shape[0] == m else v for k, v in side.items()}
            rows = session.run({layer: chunk, **side}, [self.output])[self.output]
            out += [float(ts[s + j](row)) for j, row in enumerate(rows)]
        return np.asarray(out, dtype=np.float64)

    # ------------------------------------------------------------------ graph facts
    def bias_terms(self) -> list[tuple[str, np.ndarray]]:
        """(tensor, per-channel bias) of every Conv / BatchNormalization bias term (FullGrad)."""
        return cast("list[tuple[str, np.ndarray]]",
                    self._compiled.get(self._compiled.facts, ("bias_terms",),
                                       lambda: bias_terms(self.model, self.info)))  # fmt: skip

    def classifier_weights(self, layer: str) -> np.ndarray:
        """W (classes, C) of the linear classifier after the global pooling of ``layer`` (CAM)."""
        return cast("np.ndarray",
                    self._compiled.get(self._compiled.facts, ("classifier", layer),
                                       lambda: classifier_weights(self.model, self.info, layer)))  # fmt: skip
