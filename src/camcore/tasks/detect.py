"""``--task detect``: detection heads, raw (YOLOv5/v8-style) or with NMS in the graph.

Layouts, read off the output shapes (N is the batch, A candidates, C classes, D kept detections):

* ``channels_first`` (N, 4 + C, A): YOLOv8/11; cx, cy, w, h then class scores;
* ``boxes_first`` (N, A, 5 + C): YOLOv5/7; cx, cy, w, h, objectness, class scores;

  for both, A must be a count the input's grids give (:func:`anchor_counts`: 8400 or 25200 at
  640 x 640), or at least twice the channels when the input size is unknown, so a text
  recogniser's (N, T, classes) is not read as a detector (``--task detect`` drops this check);
* ``nms`` (N, D, 6), D <= 1000: NMS in the graph; x0, y0, x1, y1, score, class;
* ``separate`` (N, A, 4) boxes (x0, y0, x1, y1) and (N, A, C) scores: the scores are explained;
* ``separate_nms`` (N, D, 4) boxes, (N, D) scores and optionally (N, D) integer labels: the
  scores are explained.

Boxes are in the model input's pixels. A raw head's candidates at or above the score
threshold go through class-wise greedy NMS (IoU 0.5) to list the detections; the explained
value is the class score of one candidate (:class:`~camcore.targets.DetectionBoxTarget` on a
raw head, the score entry otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from camcore.errors import CamcoreError
from camcore.targets import DetectionBoxTarget, RegressionOutputTarget, Target
from camcore.targets.detection import box_iou
from camcore.tasks.registry import Found, Outputs, Task, TaskChoice, register_task, shape_text, static

NMS_IOU = 0.5
MAX_KEPT = 1000


@dataclass(frozen=True)
class DetectionLayout:
    """How one image's outputs hold the detections; ``siblings``: other outputs read (boxes, labels)."""

    kind: str
    boxes: str | None = None
    labels: str | None = None
    #: the class channels; the rest of a candidate's values are mask coefficients (YOLOv8-seg:
    #: 4 + 80 + 32, the 32 weighing a (32, h, w) prototype output)
    classes: int | None = None

    @property
    def siblings(self) -> tuple[str, ...]:
        return tuple(s for s in (self.boxes, self.labels) if s is not None)

    @property
    def describe(self) -> str:
        extra = "".join(f", {k} from {v!r}" for k, v in (("boxes", self.boxes), ("labels", self.labels)) if v)
        if self.classes is not None:
            extra += f", {self.classes} classes (the rest mask coefficients)"
        return self.kind + extra


def anchor_counts(hw: tuple[int, int]) -> set[int]:
    """The candidate counts a grid head can have on an H x W input: k·Σ ceil(H/s)·ceil(W/s)
    over 1 to 4 consecutive strides s of 1, 2, 4, ..., 128 and k = 1, 2, 3 anchors per cell
    (YOLOv8 at 640 x 640: 80² + 40² + 20² = 8400; YOLOv5: 3 x 8400 = 25200)."""
    cells = [-(-hw[0] // s) * -(-hw[1] // s) for s in (1, 2, 4, 8, 16, 32, 64, 128)]
    sums = {sum(cells[i : i + n]) for i in range(len(cells)) for n in range(1, 5) if i + n <= len(cells)}
    return {k * c for c in sums for k in (1, 2, 3)}


def _anchors(count: int, channels: int, outputs: Outputs, forced: bool) -> bool:
    """Whether ``count`` candidates of ``channels`` values read as a grid head: a count the
    input's grids give and more than the channels (any count >= 2·channels when the input size
    is unknown); any larger
    count when ``--task detect`` says so."""
    if forced or outputs.input_hw is None:
        return count > channels if forced else count >= 2 * channels
    return count > channels and count in anchor_counts(outputs.input_hw)


def _match(outputs: Outputs, forced: bool) -> Found | None:
    shapes = {n: static(s) for n, s in outputs.shapes.items()}
    # separate outputs: a scores output and a sibling (N, A, 4) with the same A
    for scores, dims in shapes.items():
        if dims is None or (outputs.explicit and scores != outputs.explained) or scores in outputs.int_outputs:
            continue
        boxes = next((n for n, d in shapes.items() if n != scores and d == (dims[0], 4)), None)
        if boxes is None:
            continue
        if len(dims) == 2 and dims[1] != 4:
            return Found(scores, DetectionLayout("separate", boxes=boxes))
        if len(dims) == 1:
            labels = next((n for n, d in shapes.items() if n in outputs.int_outputs and d == dims), None)
            return Found(scores, DetectionLayout("separate_nms", boxes=boxes, labels=labels))
    dims = shapes[outputs.explained]
    if dims is None or len(dims) != 2:
        return None
    a, b = dims
    # a segmenting head's prototypes: an output (k, h, w) whose k masks its candidates weigh
    protos = [d for n, d in shapes.items() if n != outputs.explained and d is not None and len(d) == 3]
    masks = max((d[0] for d in protos), default=0)
    if b == 6 and a <= MAX_KEPT:
        return Found(outputs.explained, DetectionLayout("nms"))
    if a > 4 and _anchors(b, a, outputs, forced):
        classes = a - 4 - masks if 0 < masks < a - 4 else None
        return Found(outputs.explained, DetectionLayout("channels_first", classes=classes))
    if b > 5 and _anchors(a, b, outputs, forced):
        classes = b - 5 - masks if 0 < masks < b - 5 else None
        return Found(outputs.explained, DetectionLayout("boxes_first", classes=classes))
    return None


@dataclass
class Candidates:
    """One image's candidates: xyxy boxes (A, 4), best class and its score, and the per-class
    scores (A, C) when the head has them."""

    boxes: np.ndarray
    classes: np.ndarray
    scores: np.ndarray
    per_class: np.ndarray | None
    nms_done: bool


def _xyxy(cxcywh: np.ndarray) -> np.ndarray:
    c, half = cxcywh[:, :2], cxcywh[:, 2:4] / 2
    return np.concatenate([c - half, c + half], axis=1)


def candidates(choice: TaskChoice, rows: list[np.ndarray]) -> Candidates:
    """Decode one image's rows (every output, in order) by the choice's layout."""
    layout: DetectionLayout = choice.found.layout
    row = np.asarray(rows[choice.index(choice.output)], np.float64)
    if layout.kind in ("channels_first", "boxes_first"):
        r = row.T if layout.kind == "channels_first" else row
        start = 4 if layout.kind == "channels_first" else 5
        per_class = r[:, start:] if layout.classes is None else r[:, start : start + layout.classes]
        if layout.kind == "boxes_first":
            per_class = per_class * r[:, 4:5]  # confidence = objectness x class score
        classes = np.argmax(per_class, axis=1)
        return Candidates(_xyxy(r[:, :4]), classes, per_class[np.arange(len(r)), classes], per_class, False)
    if layout.kind == "nms":
        return Candidates(row[:, :4], row[:, 5].astype(np.int64), row[:, 4], None, True)
    boxes = np.asarray(rows[choice.index(layout.boxes)], np.float64) if layout.boxes else np.zeros((len(row), 4))
    if layout.kind == "separate":
        classes = np.argmax(row, axis=1)
        return Candidates(boxes, classes, row[np.arange(len(row)), classes], row, False)
    labels = rows[choice.index(layout.labels)].astype(np.int64) if layout.labels else np.zeros(len(row), np.int64)
    return Candidates(boxes, labels.reshape(-1), row, None, True)


def detections(c: Candidates, threshold: float) -> list[int]:
    """The candidates at or above ``threshold``, best first, after class-wise greedy NMS (unless
    the graph did it)."""
    order = [int(i) for i in np.argsort(-c.scores, kind="stable") if c.scores[i] >= threshold]
    if c.nms_done:
        return order
    kept: list[int] = []
    for i in order:
        same = [j for j in kept if c.classes[j] == c.classes[i]]
        if not same or box_iou(c.boxes[i], c.boxes[same]).max() <= NMS_IOU:
            kept.append(i)
    return kept


def _select(choice: TaskChoice, c: Candidates) -> tuple[int, int, int | None]:
    """(candidate, class, rank among the detections or None) of the explained detection."""
    opts = choice.options
    dets = detections(c, opts.threshold)
    label = opts.target
    if opts.detection is not None:
        if opts.detection >= len(dets):
            raise CamcoreError(f"--detection {opts.detection}: this image has {len(dets)} detection(s) with score "
                               f">= {opts.threshold:g}")  # fmt: skip
        i = dets[opts.detection]
        return i, int(c.classes[i]), opts.detection
    pool = dets or list(range(len(c.scores)))
    if label is not None:
        if c.per_class is not None:  # every candidate scores every class: the best for this one
            col = c.per_class[:, label]
            pool = [i for i in pool if c.classes[i] == label] or [int(j) for j in np.argsort(-col, kind="stable")]
        else:
            pool = [i for i in pool if c.classes[i] == label] or [
                i for i in range(len(c.scores)) if c.classes[i] == label]  # fmt: skip
        if not pool:
            raise CamcoreError(f"--target {label}: no detection of class {label} in this image")
    if opts.box is not None:
        iou = box_iou(np.asarray(opts.box, np.float64), c.boxes[pool])
        i = pool[int(np.argmax(iou))]
    else:
        score = c.scores if label is None or c.per_class is None else c.per_class[:, label]
        i = max(pool, key=lambda j: (score[j], -j))
    cls = int(c.classes[i]) if label is None else label
    return i, cls, dets.index(i) if i in dets else None


def _target(choice: TaskChoice, rows: list[np.ndarray]) -> Target:
    i, cls, _ = _select(choice, candidates(choice, rows))
    kind = choice.found.layout.kind
    if kind in ("channels_first", "boxes_first"):
        return DetectionBoxTarget(label=cls, box_index=i, objectness=kind == "boxes_first",
                                  layout="channels_first" if kind == "channels_first" else "boxes_first")  # fmt: skip
    return RegressionOutputTarget({"nms": (i, 4), "separate": (i, cls)}.get(kind, (i,)))


def _entry(c: Candidates, i: int, cls: int, names: Sequence[str] | None) -> dict[str, Any]:
    score = c.scores[i] if c.per_class is None else c.per_class[i, cls]
    out: dict[str, Any] = {"box": [round(float(v), 2) for v in c.boxes[i]], "class": cls, "score": float(score)}
    if names:
        out["name"] = names[cls] if 0 <= cls < len(names) else None
    return out


def _record(choice: TaskChoice, rows: list[np.ndarray], target: Target | None, k: int,
            names: Sequence[str] | None) -> dict[str, Any]:  # fmt: skip
    c = candidates(choice, rows)
    i, cls, rank = _select(choice, c)
    explained = {"detection": rank, "candidate": i, **_entry(c, i, cls, names)}
    record: dict[str, Any] = {"explained_class": cls, "explained": explained}
    if names and 0 <= cls < len(names):
        record["explained_name"] = names[cls]
    dets = detections(c, choice.options.threshold)
    record["detection_count"] = len(dets)
    record["detections"] = [_entry(c, j, int(c.classes[j]), names) for j in dets[:k]]
    return record


def _check(choice: TaskChoice) -> None:
    opts, layout = choice.options, choice.found.layout
    if opts.box is not None and not (opts.box[2] > opts.box[0] and opts.box[3] > opts.box[1]):
        raise CamcoreError(f"--box needs x0 < x1 and y0 < y1, got {','.join(f'{v:g}' for v in opts.box)}")
    dims = static(choice.outputs.shapes[choice.output])
    classes = None
    if dims is not None and layout.kind in ("channels_first", "boxes_first", "separate"):
        classes = {"channels_first": dims[0] - 4, "boxes_first": dims[-1] - 5, "separate": dims[-1]}[layout.kind]
    if opts.target is not None and (opts.target < 0 or (classes is not None and opts.target >= classes)):
        raise CamcoreError(f"--target {opts.target} is out of range for {classes} classes (output "
                           f"{shape_text(choice.outputs.shapes[choice.output])}, {layout.kind})")  # fmt: skip
    if opts.detection is not None and opts.detection < 0:
        raise CamcoreError(f"--detection must be >= 0, got {opts.detection}")


register_task(
    Task(
        "detect",
        "detections: explain one detection's class score (default: the top-scoring one)",
        _match,
        frozenset({"target", "detection", "box", "score_threshold"}),
        _target,
        _record,
        _check,
    )
)
