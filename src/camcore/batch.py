"""The batch service below the front doors: inputs -> batches -> the CAM -> maps -> records.

``camcore explain``, ``camcore video`` and the dataset audit share it:

* :class:`TargetChoice`: what to explain, from a registered target type (``--target-type``)
  and an index (``--target``), checked against the model before any work; a
  :class:`~camcore.tasks.TaskChoice` (``--task``) also chooses the targets, and writes the
  records of what its task produced (detections, pixel areas, values);
* :class:`BatchExplainer`: groups inputs by shape, runs them ``batch_size`` at a time, and
  isolates a bad input (the batch is retried one by one, so one culprit fails alone);
* :func:`~camcore.tasks.basic.prediction_record`: a classifier's per-image predictions (softmax
  probabilities) and the class explained;
* :class:`Names`: unique output names for inputs that share a stem.

Example:
    >>> explainer = BatchExplainer(cam, TargetChoice.parse(cam.engine, "class", None), batch_size=8)
    >>> for done in explainer.run(items):                       # Item or Failed, in any order
    ...     print(done.key, done.record if isinstance(done, Explained) else done.error)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from camcore.cam import BaseCAM
from camcore.errors import CamcoreError
from camcore.targets import Target
from camcore.tasks.basic import prediction_record
from camcore.tasks.registry import TargetChoice, TaskChoice

__all__ = ["BatchExplainer", "Explained", "Failed", "Item", "Missed", "Names", "TargetChoice"]


@dataclass
class Item:
    """One input: its ``key`` (a path, a frame index), the picture the map is drawn on (uint8
    H x W x 3) and the model input made from it (no batch axis)."""

    key: str
    image: np.ndarray
    x: np.ndarray


@dataclass
class Failed:
    """An input that could not be explained, and why (one line)."""

    key: str
    error: str


@dataclass
class Missed(Failed):
    """An input its task found no target in (a detection it lacks): why, and its outputs."""

    outputs: list[np.ndarray] = field(default_factory=list)


class _Nothing(Target):
    """The seed of an image with no target, explained along with the batch and then dropped."""

    linear = True

    def __call__(self, output: np.ndarray) -> float:
        return 0.0

    def seed(self, output: np.ndarray) -> np.ndarray:
        return np.zeros_like(output)


@dataclass
class Explained:
    """One explained input: the map at the model input's size ([0, 1], or unscaled), the
    image's outputs and its record (the explained class and the top-k predictions)."""

    item: Item
    map: np.ndarray
    outputs: list[np.ndarray]
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.item.key


class BatchExplainer:
    """Explains a stream of :class:`Item` s with a CAM, in batches of equal input shape.

    Args:
        cam: the CAM object (its engine, method, layers).
        target: what to explain (:class:`TargetChoice` or :class:`~camcore.tasks.TaskChoice`);
            None when every batch brings its own targets.
        task: the records' task (default: ``target`` when it is a task choice; else a
            classifier's :func:`prediction_record`).
        batch_size: inputs per run, at most.
        top_k: predictions per record (0: none).
        aug_smooth, eigen_smooth: as for the CAM's call.
        scaled: maps in [0, 1] per image (True) or unscaled (:meth:`BaseCAM.unscaled`).
        class_names: names for the records.
    """

    def __init__(
        self,
        cam: BaseCAM,
        target: TargetChoice | TaskChoice | None,
        *,
        batch_size: int = 8,
        top_k: int = 5,
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
        scaled: bool = True,
        class_names: Sequence[str] | None = None,
        task: TaskChoice | None = None,
    ) -> None:
        if batch_size < 1:
            raise CamcoreError(f"batch size must be >= 1, got {batch_size}")
        if top_k < 0:
            raise CamcoreError(f"top-k must be >= 0, got {top_k}")
        if aug_smooth and not scaled:
            raise CamcoreError("aug_smooth gives scaled maps only")
        self.cam, self.target = cam, target
        self.task = task if task is not None else (None if isinstance(target, TargetChoice) else target)
        self.batch_size, self.top_k = batch_size, top_k
        self.aug_smooth, self.eigen_smooth, self.scaled = aug_smooth, eigen_smooth, scaled
        self.class_names = list(class_names) if class_names else None

    def run(self, items: Iterable[Item | Failed]) -> Iterator[Explained | Failed]:
        """Explain ``items`` (a :class:`Failed` passes straight through), ``batch_size`` at a time.

        Inputs are grouped by shape as they come; a group runs when it is full and every group
        at the end. A batch that fails is retried input by input, so only the culprit fails.
        """
        groups: dict[tuple[int, ...], list[Item]] = {}
        for item in items:
            if isinstance(item, Failed):
                yield item
                continue
            group = groups.setdefault(tuple(item.x.shape), [])
            group.append(item)
            if len(group) >= self.batch_size:
                yield from self._isolated(group)
                group.clear()
        for group in groups.values():
            if group:
                yield from self._isolated(group)

    def _isolated(self, items: list[Item]) -> Iterator[Explained | Failed]:
        try:
            done: list[Explained | Failed] = list(self.explain(items))
        except CamcoreError as exc:
            if len(items) == 1:
                done = [Failed(items[0].key, str(exc))]
            else:
                done = [d for item in items for d in self._isolated([item])]
        yield from done

    def explain(self, items: Sequence[Item], targets: Sequence[Target | None] | None = None) -> list[Explained]:
        """Explain one batch of inputs of equal shape (errors propagate). ``targets``: one per
        item (None: its top-1 class) instead of the :class:`TargetChoice`'s; top-1 and explicit
        targets run as two batches."""
        return cast("list[Explained]", self._explain(items, targets, None))

    def explain_found(self, items: Sequence[Item]) -> list[Explained | Missed]:
        """Explain one batch by the task choice's targets, where an input may have none (a
        detection it lacks): that input comes back :class:`Missed` (why, and its outputs) and the
        others are explained in the same run (the missed one's seed is zero)."""
        return self._explain(items, None, {})

    def _explain(self, items: Sequence[Item], targets: Sequence[Target | None] | None,
                 misses: dict[int, str] | None) -> list[Explained | Missed]:  # fmt: skip
        engine = self.cam.engine
        x = np.stack([item.x for item in items])
        feeds = engine.feeds(x)
        with engine.call():
            if targets is None:
                if self.target is None:
                    raise CamcoreError("no targets: pass a TargetChoice or one target per item")
                if misses is not None and isinstance(self.target, TaskChoice):
                    targets = self.target.targets(engine, feeds, self.cam.target_layers, misses)
                    targets = [_Nothing() if i in misses else t for i, t in enumerate(targets)]
                    if len(misses) == len(items):
                        outputs = engine.forward(feeds, self.cam.target_layers).outputs
                        return [Missed(item.key, misses[i], [np.asarray(o[i]) for o in outputs])
                                for i, item in enumerate(items)]  # fmt: skip
                else:
                    targets = self.target.targets(engine, feeds, self.cam.target_layers)
            if len(targets) != len(items):
                raise CamcoreError(f"got {len(targets)} targets for {len(items)} inputs")
            top1 = [i for i, t in enumerate(targets) if t is None]
            if 0 < len(top1) < len(items):  # top-1 and explicit targets cannot share one run
                done = dict(zip(top1, self.explain([items[i] for i in top1], [None] * len(top1))))
                rest = [i for i in range(len(items)) if i not in done]
                done.update(zip(rest, self.explain([items[i] for i in rest], [targets[i] for i in rest])))
                return [done[i] for i in range(len(items))]
            maps = self._maps(feeds, None if top1 else cast("list[Target]", list(targets)))
        outputs = self.cam.outputs
        explained = engine.output_index
        done_items: list[Explained | Missed] = []
        for i, item in enumerate(items):
            rows = [np.asarray(o[i]) for o in outputs]
            if misses and i in misses:
                done_items.append(Missed(item.key, misses[i], rows))
                continue
            if self.task is not None:
                record = self.task.record(rows, targets[i], self.top_k, self.class_names)
            else:
                record = prediction_record(rows[explained], targets[i], self.top_k, self.class_names)
            done_items.append(Explained(item, maps[i], rows, record))
        return done_items

    def _maps(self, feeds: dict[str, np.ndarray], targets: list[Target] | None) -> np.ndarray:
        if self.aug_smooth:
            return self.cam(feeds, targets, aug_smooth=True, eigen_smooth=self.eigen_smooth)
        return self.cam.explain_feeds(feeds, targets, self.eigen_smooth, scaled=self.scaled)[0]


class Names:
    """Unique output stems: ``cat``, then ``cat_2``, ``cat_3``... for inputs sharing a stem.

    Example:
        >>> names = Names(); names("a/cat.jpg"), names("b/cat.png")
        ('cat', 'cat_2')
    """

    def __init__(self) -> None:
        self.used: set[str] = set()

    def __call__(self, path: str | Path) -> str:
        base = Path(path).stem or "input"
        stem, k = base, 1
        while stem in self.used:
            k += 1
            stem = f"{base}_{k}"
        self.used.add(stem)
        return stem
