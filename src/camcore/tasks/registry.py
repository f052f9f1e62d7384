"""The task registry: what the explained output means, how its targets are chosen and what
the summary says about it. See :mod:`camcore.tasks`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from camcore.errors import CamcoreError
from camcore.targets import TARGET_TYPES, Target, TargetType

if TYPE_CHECKING:
    from camcore.engine import Engine

Shape = tuple[Any, ...]


@dataclass(frozen=True)
class TargetChoice:
    """What to explain in every image: a registered :class:`~camcore.targets.TargetType` and
    its ``--target`` index (None: the type's default, e.g. the top-1 class)."""

    kind: TargetType
    index: int | None = None

    @staticmethod
    def parse(engine: Engine, name: str, index: int | None) -> TargetChoice:
        """The choice ``--target-type name --target index``, checked against ``engine``'s output.

        Raises:
            CamcoreError: an unknown type, or an index or output the type cannot explain.
        """
        if name not in TARGET_TYPES:
            raise CamcoreError(f"unknown target type {name!r}; choose from {', '.join(TARGET_TYPES)}")
        kind = TARGET_TYPES[name]
        kind.check(index, engine.output_shape())
        return TargetChoice(kind, index)

    def targets(self, engine: Engine, feeds: dict[str, np.ndarray], layers: Sequence[str] = ()) -> list[Target | None]:
        """One target per image of ``feeds`` (None: the top-1 class, chosen in the graph). A
        target read off the outputs takes a forward run that also returns ``layers``, so the
        explanation's own forward run of the same arrays is not made twice."""
        n = engine.batch_of(feeds)
        if self.kind.needs_output(self.index):
            return [self.kind.build(self.index, row) for row in engine.outputs_of(feeds, layers)]
        return [self.kind.build(self.index, None)] * n


def shape_text(shape: Shape | None) -> str:
    """``(N, 84, 8400)``: a shape as the summary names it (the batch axis is N, unknown dims ?)."""
    if shape is None:
        return "(unknown rank)"
    dims = ["N", *("?" if not isinstance(d, int) or d < 1 else str(d) for d in shape[1:])]
    return "(" + ", ".join(dims) + ")"


def static(shape: Shape | None) -> tuple[int, ...] | None:
    """The dims after the batch axis, when all are known."""
    if shape is None or not all(isinstance(d, int) and d > 0 for d in shape[1:]):
        return None
    return tuple(int(d) for d in shape[1:])


@dataclass(frozen=True)
class Outputs:
    """What the task is told about the model: every output's shape (batch axis first) and
    element type, the output explained, whether ``--output`` named it, and the input size."""

    shapes: dict[str, Shape | None]
    explained: str
    explicit: bool = False
    input_hw: tuple[int, int] | None = None
    int_outputs: frozenset[str] = frozenset()
    #: the number of class names in the model's metadata (None: it lists none)
    classes: int | None = None
    #: ``--detection-layout``, when given
    layout: str | None = None
    #: the outputs whose channel axis the graph shows: ``channels_first`` or ``channels_last``
    layouts: dict[str, str] = field(default_factory=dict)
    #: the image input is NHWC
    input_nhwc: bool = False

    @property
    def shape(self) -> Shape | None:
        return self.shapes[self.explained]


@dataclass(frozen=True)
class Found:
    """A task's reading of the outputs: the output to explain, why, and a task-specific layout."""

    output: str
    layout: Any = None


@dataclass(frozen=True)
class TaskOptions:
    """The task flags as given (None: not given)."""

    target: int | None = None
    target_type: str | None = None
    detection: int | None = None
    box: tuple[float, float, float, float] | None = None
    region: tuple[float, float, float, float] | None = None
    score_threshold: float | None = None
    layout: str | None = None

    @property
    def threshold(self) -> float:
        return 0.25 if self.score_threshold is None else self.score_threshold


#: option field -> its flag, for the one-line refusals
FLAGS = {"target": "--target", "target_type": "--target-type", "detection": "--detection", "box": "--box",
         "region": "--region", "score_threshold": "--score-threshold", "layout": "--detection-layout"}  # fmt: skip


@dataclass(frozen=True)
class Task:
    """One task: ``match(outputs, forced)`` reads the outputs (None: not this task; ``forced``:
    named by ``--task``, so read leniently or raise saying why not); ``options`` the
    :class:`TaskOptions` fields it accepts; ``target(choice, rows)`` one image's target from
    all its output rows (None: the top-1 class, chosen in the graph); ``record(choice, rows,
    target, k, names)`` its summary record; ``check(choice)`` refuses bad options before any
    work."""

    name: str
    help: str
    match: Callable[[Outputs, bool], Found | None]
    options: frozenset[str]
    target: Callable[[TaskChoice, list[np.ndarray]], Target | None]
    record: Callable[[TaskChoice, list[np.ndarray], Target | None, int, Sequence[str] | None], dict[str, Any]]
    check: Callable[[TaskChoice], None] = lambda choice: None


#: ``--task``: name -> :class:`Task`, in the order the shape rules try them
TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Register ``task`` (its shape rule is tried after those registered before it)."""
    if task.name in TASKS:
        raise RuntimeError(f"two tasks registered as {task.name!r}")
    TASKS[task.name] = task
    return task


@dataclass(frozen=True)
class TaskChoice:
    """The task of a run and its options, checked against the model: what ``explain`` and
    ``video`` explain in every image, and what their records say."""

    task: Task
    source: str
    found: Found
    outputs: Outputs
    options: TaskOptions = field(default_factory=TaskOptions)
    classes: TargetChoice | None = None

    @property
    def output(self) -> str:
        return self.found.output

    def index(self, name: str) -> int:
        return list(self.outputs.shapes).index(name)

    def targets(self, engine: Engine, feeds: dict[str, np.ndarray], layers: Sequence[str] = (),
                misses: dict[int, str] | None = None) -> list[Target | None]:  # fmt: skip
        """One target per image of ``feeds``, chosen from all its outputs (a forward run that
        also returns ``layers``, so the explanation does not run the network twice); a
        classifier's from its target type.

        ``misses``: where an image has no target (``--detection 3`` in an image with two
        detections), its index gets the reason here and its target is None, instead of the
        :class:`CamcoreError` that stops the batch.
        """
        if self.classes is not None:
            return self.classes.targets(engine, feeds, layers)
        outputs = engine.forward(feeds, layers).outputs
        got: list[Target | None] = []
        for i in range(engine.batch_of(feeds)):
            try:
                got.append(self.task.target(self, [o[i] for o in outputs]))
            except CamcoreError as exc:
                if misses is None:
                    raise
                misses[i] = str(exc)
                got.append(None)
        return got

    def record(
        self, rows: list[np.ndarray], target: Target | None, k: int, names: Sequence[str] | None
    ) -> dict[str, Any]:
        """One image's record: what the task produced and what was explained."""
        return self.task.record(self, rows, target, k, names)

    def summary(self) -> dict[str, Any]:
        """The run's task fields of summary.json."""
        out: dict[str, Any] = {"task": self.task.name, "task_source": self.source, "explained_output": self.output}
        layout = getattr(self.found.layout, "describe", None)
        if layout is not None:
            out["layout"] = layout
        if "score_threshold" in self.task.options:
            out["score_threshold"] = self.options.threshold
        for key in ("detection", "box", "region"):
            if getattr(self.options, key) is not None:
                out[key] = getattr(self.options, key)
        return out


def _output_layouts(engine: Engine) -> dict[str, str]:
    """The channel axis the graph shows for each output (:meth:`Engine.layer_layout`), read
    through a final ``Softmax``/``LogSoftmax`` over the last axis, which keeps the axes."""
    if not hasattr(engine, "layer_layout"):
        return {}
    producers = {o: node for node in engine.model.graph.node for o in node.output}
    found: dict[str, str] = {}
    for name in engine.output_names:
        tensor, layout = name, engine.layer_layout(name)
        while layout is None and tensor in producers and producers[tensor].op_type in ("Softmax", "LogSoftmax"):
            node = producers[tensor]
            opset = next((o.version for o in engine.model.opset_import if o.domain in ("", "ai.onnx")), 13)
            axis = next((a.i for a in node.attribute if a.name == "axis"), -1 if opset >= 13 else 1)
            shape = engine.info[tensor].shape if tensor in engine.info else None
            if shape is None or axis % len(shape) != len(shape) - 1:
                break
            tensor = node.input[0]
            layout = engine.layer_layout(tensor)
        if layout is not None:
            found[name] = layout.kind
    return found


def choose_task(engine: Engine, name: str | None, options: TaskOptions, *, explicit_output: bool = False,
                input_hw: tuple[int, int] | None = None, shapes: dict[str, Shape | None] | None = None,
                class_count: int | None = None) -> TaskChoice:  # fmt: skip
    """The task of ``engine``'s explained output: ``name`` (``--task``), the task of an explicit
    ``--target-type``, else the first registered task whose shape rule matches (``raw`` matches
    anything); then the options are checked against it.

    ``shapes``: the outputs' shapes when observed (a forward run) rather than declared;
    ``class_count``: the number of class names the model's metadata lists (it tells a
    transposed YOLOv8 head from a YOLOv5 one, :mod:`camcore.tasks.detect`).

    Raises:
        CamcoreError: an unknown task, a task the outputs cannot be, or an option the task
            does not take (one line naming the task and where it came from).
    """
    import onnx

    declared = {n: engine.info[n].shape if n in engine.info else None for n in engine.output_names}
    ints = frozenset(n for n in engine.output_names if n in engine.info and engine.info[n].elem_type in
                     (onnx.TensorProto.INT64, onnx.TensorProto.INT32))  # fmt: skip
    outputs = Outputs({**declared, **(shapes or {})}, engine.output, explicit_output, input_hw, ints, class_count,
                      options.layout, _output_layouts(engine), getattr(engine, "input_layout", "NCHW") == "NHWC")

    tt = options.target_type
    if name is not None:
        if name not in TASKS:
            raise CamcoreError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
        task, source = TASKS[name], "--task"
    elif tt is not None:
        task, source = TASKS[TARGET_TYPES[tt].task], f"--target-type {tt}"
    else:
        task = next(t for t in TASKS.values() if t.match(outputs, False) is not None)
        source = f"detected from output shape {shape_text(outputs.shape)}"
    found = task.match(outputs, True)
    if found is None:
        reads = next(t.name for t in TASKS.values() if t.match(outputs, False) is not None)
        raise CamcoreError(f"--task {task.name}{'' if source == '--task' else f' (from {source})'} does not fit the "
                           f"output {engine.output!r} of shape {shape_text(outputs.shape)}, which reads as --task "
                           f"{reads}")  # fmt: skip
    if tt is not None:  # the target type's own checks, before those of the task
        if TARGET_TYPES[tt].task != task.name:
            raise CamcoreError(f"--target-type {tt} is a {TARGET_TYPES[tt].task} target, but the task is "
                               f"{task.name} ({source})")  # fmt: skip
        TARGET_TYPES[tt].check(options.target, outputs.shape)
    for key, flag in FLAGS.items():
        if getattr(options, key) is not None and key not in task.options and key != "target_type":
            takers = [t.name for t in TASKS.values() if key in t.options]
            raise CamcoreError(f"{flag} applies to --task {' or '.join(takers)}, but the task is {task.name} "
                               f"({source})")  # fmt: skip
    classes = None
    if task.name == "classify":  # the classifier keeps its target types
        classes = TargetChoice.parse(engine, tt or "class", options.target)
    choice = TaskChoice(task, source, found, outputs, options, classes)
    task.check(choice)
    return choice


def choose_task_for(cam: Any, name: str | None, options: TaskOptions, *, explicit_output: bool,
                    input_hw: tuple[int, int] | None, nhwc: bool,
                    rebuild: Callable[[str], Any]) -> tuple[Any, TaskChoice]:  # fmt: skip
    """The run's :class:`TaskChoice` (:func:`choose_task`) and the CAM that explains its output,
    for the front doors: ``rebuild(output)`` makes a CAM on another output when the task explains
    one that ``--output`` did not name (a detector's scores next to its boxes). An explained
    output of unknown shape is observed once on a blank input of ``input_hw`` (in the model's
    layout, ``nhwc`` or not); the model's class names (its metadata) tell detection heads apart.

    Returns:
        (cam, choice)
    """
    from camcore.preprocess import read_model_metadata

    def pick(cam: Any) -> TaskChoice:
        engine = cam.engine
        shape = engine.output_shape()
        shapes: dict[str, Shape | None] | None = None
        if (shape is None or not all(isinstance(d, int) and d > 0 for d in shape[1:])) and input_hw:
            h, w = input_hw
            blank = np.zeros((1, h, w, 3) if nhwc else (1, 3, h, w), np.float32)
            got = engine.forward(engine.feeds(blank)).outputs
            shapes = {n: (None, *o.shape[1:]) for n, o in zip(engine.output_names, got)}
        names = read_model_metadata(engine.model, engine.source).class_names
        return choose_task(engine, name, options, explicit_output=explicit_output, input_hw=input_hw,
                           shapes=shapes, class_count=len(names) if names else None)  # fmt: skip

    choice = pick(cam)
    if choice.output != cam.engine.output:
        cam = rebuild(choice.output)
        choice = pick(cam)
    return cam, choice
