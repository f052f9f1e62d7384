"""Per-frame targets, and a target that follows the top detection of a class across frames.

The pipeline asks a :class:`FrameTargets` object for each explained frame's target. A plain
class index or :class:`~camcore.targets.Target` is wrapped into one that returns the same target
every frame. :class:`FollowDetection` is the hook for detection models: its per-frame target
picks, from that frame's output, the detection of a class with the best score, weighted toward
the box it picked on the previous frame (so the explanation does not jump between two similar
objects), and seeds the gradient of that detection's class score.

Output layout: one image's output row is ``(4 + C, K)`` (``channels_first``, as exported by
Ultralytics YOLOv8 and later: ``cx, cy, w, h`` then ``C`` class scores for ``K`` candidates) or
``(K, 4 + C)`` (``boxes_first``), optionally with an objectness column after the box (YOLOv5).
Other layouts (separate box and score outputs) need a subclass overriding
:meth:`FollowDetection.split`. The following policy lives here; the seed of the chosen box comes
from ``camcore.targets.DetectionBoxTarget`` when that target type exists.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol, runtime_checkable

import numpy as np

from camcore.errors import CamcoreError
from camcore.targets import ClassifierOutputTarget, Target


@runtime_checkable
class FrameTargets(Protocol):
    """Gives the target of frame ``index`` (``None``: the top-1 class)."""

    def for_frame(self, index: int) -> Target | None:
        """The target for frame ``index``; called in frame order for explained frames."""
        ...


class SameTarget:
    """The same target on every frame (``None``: each frame's top-1 class).

    Example:
        >>> SameTarget(3).for_frame(10).class_index
        3
    """

    def __init__(self, target: int | Target | None = None) -> None:
        self.target = ClassifierOutputTarget(target) if isinstance(target, int) else target

    def for_frame(self, index: int) -> Target | None:
        """The fixed target."""
        return self.target


def as_frame_targets(targets: int | Target | FrameTargets | None) -> FrameTargets:
    """Normalise the ``targets`` argument of the pipeline into a :class:`FrameTargets`."""
    if isinstance(targets, FrameTargets):
        return targets
    if targets is None or isinstance(targets, (int, Target)):
        return SameTarget(targets)
    raise CamcoreError(f"targets must be a class index, a Target or have for_frame(index); got {type(targets)}")


def box_iou(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    """IoU of ``(K, 4)`` boxes with one box, all as ``(cx, cy, w, h)``."""
    a0, a1 = boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2
    b0, b1 = box[:2] - box[2:] / 2, box[:2] + box[2:] / 2
    inter = np.clip(np.minimum(a1, b1) - np.maximum(a0, b0), 0, None).prod(axis=1)
    union = boxes[:, 2:].prod(axis=1) + box[2:].prod() - inter
    return inter / np.maximum(union, 1e-9)


class FollowDetection:
    """Follow the top detection of ``class_index`` from frame to frame.

    The score of candidate ``k`` on frame ``t`` is ``score_k · (1 - stickiness + stickiness ·
    IoU(box_k, box_{t-1}))``; the best one is explained. The seed comes from
    ``camcore.targets.DetectionBoxTarget(label, box_index=k)`` where that target type exists,
    else it is 1 on the picked detection's class score.

    Args:
        class_index: the class to follow.
        layout: ``"channels_first"``, rows ``(4 + C, K)`` (YOLOv8), or ``"boxes_first"``, ``(K, 4 + C)``.
        objectness: a fifth column holds the objectness (YOLOv5); the score is objectness x class.
        stickiness: in [0, 1]; 0 always takes the top score.

    Example:
        >>> follow = FollowDetection(0, layout="boxes_first")
        >>> row = np.array([[10, 10, 4, 4, 0.9], [50, 50, 4, 4, 0.8]], np.float32)
        >>> t = follow.for_frame(0); int(t.seed(row).argmax()), t.detection["index"]
        (4, 0)

    Each frame's target keeps what it picked in ``detection`` (``index``, ``box_cxcywh``,
    ``score``); the pipeline copies it into that frame's summary. Frames explained in parallel
    batches see the last box picked so far, which may be one batch old.
    """

    def __init__(
        self, class_index: int, layout: str = "channels_first", objectness: bool = False, stickiness: float = 0.5
    ) -> None:
        if not 0.0 <= stickiness <= 1.0:
            raise CamcoreError(f"stickiness must be in [0, 1], got {stickiness}")
        if layout not in ("channels_first", "boxes_first"):
            raise CamcoreError(f"layout must be 'channels_first' or 'boxes_first', not {layout!r}")
        self.class_index = int(class_index)
        self.layout = layout
        self.objectness = objectness
        self.stickiness = float(stickiness)
        self._last_box: np.ndarray | None = None
        self._lock = threading.Lock()

    @property
    def _offset(self) -> int:
        return 5 if self.objectness else 4

    def split(self, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(K, 4)`` boxes and ``(K,)`` scores of the followed class from one output row."""
        table = row.T if self.layout == "channels_first" else row
        if table.ndim != 2 or table.shape[1] <= self._offset + self.class_index:
            raise CamcoreError(
                f"an output row of shape {row.shape} has no score column for class {self.class_index} "
                f"(layout {self.layout!r}, objectness {self.objectness})"
            )
        scores = table[:, self._offset + self.class_index]
        if self.objectness:
            scores = scores * table[:, 4]
        return table[:, :4], scores

    def pick(self, row: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """Choose the detection in ``row``; return the seed (shaped like ``row``) and its record."""
        boxes, scores = self.split(np.asarray(row))
        with self._lock:
            weight = np.ones_like(scores)
            if self._last_box is not None and self.stickiness > 0:
                weight = 1.0 - self.stickiness + self.stickiness * box_iou(boxes, self._last_box)
            k = int(np.argmax(scores * weight))
            self._last_box = boxes[k].astype(np.float64)
        record = {"index": k, "box_cxcywh": [float(v) for v in boxes[k]], "score": float(scores[k])}
        return self._seed(row, k), record

    def _seed(self, row: np.ndarray, k: int) -> np.ndarray:
        from camcore import targets

        box_target = getattr(targets, "DetectionBoxTarget", None)
        if box_target is not None:
            return np.asarray(
                box_target(self.class_index, box_index=k, objectness=self.objectness, layout=self.layout).seed(row)
            )
        seed = np.zeros_like(row)
        if self.layout == "channels_first":
            seed[self._offset + self.class_index, k] = 1
        else:
            seed[k, self._offset + self.class_index] = 1
        return seed

    def for_frame(self, index: int) -> Target:
        """A one-frame target whose seed picks the followed detection."""
        return _DetectionTarget(self)


class _DetectionTarget(Target):
    """The target of one frame for :class:`FollowDetection`; remembers what it picked."""

    linear = False  # the seed depends on this frame's output

    def __init__(self, follower: FollowDetection) -> None:
        self.follower = follower
        self.detection: dict[str, Any] | None = None

    def seed(self, output: np.ndarray) -> np.ndarray:
        seed, self.detection = self.follower.pick(output)
        return seed
