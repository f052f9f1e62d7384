"""``--task detect``: detection heads, raw (YOLOv5/v8-style) or with NMS in the graph.

Layouts (:data:`LAYOUTS`), read off the output shapes (N is the batch, A candidates, C classes,
D kept detections):

* ``channels_first`` (N, 4 + C, A): YOLOv8/11; cx, cy, w, h then class scores;
* ``transposed`` (N, A, 4 + C): the same head transposed (some exporters and wrappers do);
* ``boxes_first`` (N, A, 5 + C): YOLOv5/7, YOLOX; cx, cy, w, h, objectness, class scores;

  for these three, A must be a count the input's grids give (:func:`anchor_counts`: 8400 or
  25200 at 640 x 640), or at least twice the channels when the input size is unknown, so a text
  recogniser's (N, T, classes) is not read as a detector (``--task detect`` drops this check).
  (N, A, K) is ``transposed`` or ``boxes_first`` by, in this order: ``--detection-layout``; the
  model's class names (metadata ``names``, as ultralytics and YOLOv5 write it: K = 4 + C or
  5 + C); A = 3 anchors per grid cell (YOLOv5/7: only anchor-based heads have it). Otherwise
  (an anchor-free count without class names: a transposed YOLOv8 or a YOLOX) the run stops
  with a one-line error asking for ``--detection-layout``;
* ``nms`` (N, D, 6), D <= 1000: NMS in the graph (ultralytics end2end/``nms=True``, YOLOv10);
  x0, y0, x1, y1, score, class;
* ``separate`` boxes (N, A, 4) (or (N, 4, A), or TensorRT's (N, A, 1, 4)), x0, y0, x1, y1, and
  scores (N, A, C) or (N, C, A): the scores are explained;
* ``separate_nms`` (N, D, 4) boxes, (N, D) scores and optionally (N, D) labels (an integer
  output, or one named class/label), with a count (N, 1) beside them as TensorRT's
  EfficientNMS and ultralytics' end2end TensorRT exports write: the scores are explained.

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
#: ``--detection-layout``: the single-output layouts it can name, and what each reads
LAYOUTS = {
    "channels_first": "(N, 4 + C, A), YOLOv8/11",
    "transposed": "(N, A, 4 + C), a YOLOv8/11 head transposed",
    "boxes_first": "(N, A, 5 + C) with objectness, YOLOv5/7 and YOLOX",
    "nms": "(N, D, 6) x0, y0, x1, y1, score, class: NMS in the graph",
}
_RAW = ("channels_first", "transposed", "boxes_first")


@dataclass(frozen=True)
class DetectionLayout:
    """How one image's outputs hold the detections; ``siblings``: other outputs read (boxes, labels)."""

    kind: str
    boxes: str | None = None
    labels: str | None = None
    #: ``separate``: the scores are (C, A) and, with ``boxes_t``, the boxes (4, A)
    scores_t: bool = False
    boxes_t: bool = False
    #: the class channels; the rest of a candidate's values are mask coefficients (YOLOv8-seg:
    #: 4 + 80 + 32, the 32 weighing a (32, h, w) prototype output)
    classes: int | None = None

    @property
    def siblings(self) -> tuple[str, ...]:
        return tuple(s for s in (self.boxes, self.labels) if s is not None)

    @property
    def describe(self) -> str:
        extra = "".join(f", {k} from {v!r}" for k, v in (("boxes", self.boxes), ("labels", self.labels)) if v)
        if self.scores_t or self.boxes_t:
            extra += f", {'scores' if self.scores_t else ''}{' and ' if self.scores_t and self.boxes_t else ''}" \
                     f"{'boxes' if self.boxes_t else ''} channels first"  # fmt: skip
        if self.classes is not None:
            extra += f", {self.classes} classes (the rest mask coefficients)"
        return self.kind + extra


def anchor_counts(hw: tuple[int, int], per_cell: tuple[int, ...] = (1, 2, 3)) -> set[int]:
    """The candidate counts a grid head can have on an H x W input: k·Σ ceil(H/s)·ceil(W/s)
    over 1 to 4 consecutive strides s of 1, 2, 4, ..., 128 and k = 1, 2, 3 anchors per cell
    (YOLOv8 at 640 x 640: 80² + 40² + 20² = 8400; YOLOv5: 3 x 8400 = 25200)."""
    cells = [-(-hw[0] // s) * -(-hw[1] // s) for s in (1, 2, 4, 8, 16, 32, 64, 128)]
    sums = {sum(cells[i : i + n]) for i in range(len(cells)) for n in range(1, 5) if i + n <= len(cells)}
    return {k * c for c in sums for k in per_cell}


def _anchors(count: int, channels: int, outputs: Outputs, forced: bool) -> bool:
    """Whether ``count`` candidates of ``channels`` values read as a grid head: a count the
    input's grids give and more than the channels (any count >= 2·channels when the input size
    is unknown); any larger
    count when ``--task detect`` says so."""
    if forced or outputs.input_hw is None:
        return count > channels if forced else count >= 2 * channels
    return count > channels and count in anchor_counts(outputs.input_hw)


def _separate(outputs: Outputs, shapes: dict[str, tuple[int, ...] | None]) -> Found | None:
    """Boxes and scores in separate outputs (see the module docstring)."""
    ints = outputs.int_outputs
    labelled = lambda n: any(w in n.lower() for w in ("class", "label"))  # noqa: E731
    for scores, dims in shapes.items():
        if dims is None or (outputs.explicit and scores != outputs.explained) or scores in ints or labelled(scores):
            continue
        for boxes, d in shapes.items():
            if boxes == scores or d is None or boxes in ints:
                continue
            if len(dims) == 1 and d == (dims[0], 4):  # NMS done: (D,) scores
                labels = next((n for n, e in shapes.items() if n in ints and e == dims), None)
                labels = labels or next((n for n, e in shapes.items() if n not in (scores, boxes) and e == dims and
                                         labelled(n)), None)  # fmt: skip
                return Found(scores, DetectionLayout("separate_nms", boxes=boxes, labels=labels))
            if len(dims) != 2 or d == dims:
                continue
            for a, scores_t in ((dims[0], False), (dims[1], True)):
                if d in ((a, 4), (a, 1, 4), (4, a)):
                    return Found(scores, DetectionLayout("separate", boxes=boxes, scores_t=scores_t,
                                                         boxes_t=d == (4, a)))  # fmt: skip
    return None


def _rows_layout(a: int, b: int, outputs: Outputs, masks: int) -> str:
    """``transposed`` or ``boxes_first`` for (N, A = a, K = b) (see the module docstring)."""
    if outputs.layout in ("transposed", "boxes_first"):
        return outputs.layout
    if outputs.classes is not None and b - masks - 4 == outputs.classes:
        return "transposed"
    if outputs.classes is not None and b - masks - 5 == outputs.classes:
        return "boxes_first"
    hw = outputs.input_hw
    if hw is not None and a in {3 * c for c in anchor_counts(hw, (1,))} - anchor_counts(hw, (1,)):
        return "boxes_first"  # three anchors per cell: an anchor-based head, which has objectness
    return "ambiguous"


def _match(outputs: Outputs, forced: bool) -> Found | None:
    shapes = {n: static(s) for n, s in outputs.shapes.items()}
    separate = _separate(outputs, shapes) if outputs.layout is None else None
    if separate is not None:
        return separate
    dims = shapes[outputs.explained]
    if dims is None or len(dims) != 2:
        return None
    a, b = dims
    # a segmenting head's prototypes: an output (k, h, w) whose k masks its candidates weigh
    protos = [d for n, d in shapes.items() if n != outputs.explained and d is not None and len(d) == 3]
    masks = max((d[0] for d in protos), default=0)
    forced = forced or outputs.layout is not None
    if outputs.layout == "nms" or (outputs.layout is None and b == 6 and a <= MAX_KEPT):
        return Found(outputs.explained, DetectionLayout("nms"))
    if outputs.layout in (None, "channels_first") and a > 4 and _anchors(b, a, outputs, forced):
        classes = a - 4 - masks if 0 < masks < a - 4 else None
        return Found(outputs.explained, DetectionLayout("channels_first", classes=classes))
    if outputs.layout in (None, "transposed", "boxes_first") and b > 5 and _anchors(a, b, outputs, forced):
        kind = _rows_layout(a, b, outputs, masks)
        start = 4 if kind == "transposed" else 5
        classes = b - start - masks if 0 < masks < b - start else None
        return Found(outputs.explained, DetectionLayout(kind, classes=classes))
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
    if layout.kind in _RAW:
        r = row.T if layout.kind == "channels_first" else row
        start = 5 if layout.kind == "boxes_first" else 4
        per_class = r[:, start:] if layout.classes is None else r[:, start : start + layout.classes]
        if layout.kind == "boxes_first":
            per_class = per_class * r[:, 4:5]  # confidence = objectness x class score
        classes = np.argmax(per_class, axis=1)
        return Candidates(_xyxy(r[:, :4]), classes, per_class[np.arange(len(r)), classes], per_class, False)
    if layout.kind == "nms":
        return Candidates(row[:, :4], row[:, 5].astype(np.int64), row[:, 4], None, True)
    if layout.kind == "separate" and layout.scores_t:
        row = row.T
    boxes = np.asarray(rows[choice.index(layout.boxes)], np.float64) if layout.boxes else np.zeros((len(row), 4))
    boxes = boxes.T if layout.boxes_t else boxes.reshape(len(row), 4)
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
    layout: DetectionLayout = choice.found.layout
    kind = layout.kind
    if kind in _RAW:
        return DetectionBoxTarget(label=cls, box_index=i, objectness=kind == "boxes_first",
                                  layout="channels_first" if kind == "channels_first" else "boxes_first")  # fmt: skip
    if kind == "separate":
        return RegressionOutputTarget((cls, i) if layout.scores_t else (i, cls))
    return RegressionOutputTarget((i, 4) if kind == "nms" else (i,))


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
    shape = choice.outputs.shapes[choice.output]
    dims = static(shape)
    if layout.kind == "ambiguous":
        b = dims[-1] if dims is not None else 0
        raise CamcoreError(f"the output {choice.output!r} {shape_text(shape)} is a detection head read two ways: "
                           f"a transposed YOLOv8 head ({b - 4} classes) or a YOLOv5/YOLOX head with objectness "
                           f"({b - 5} classes), and the model lists no class names to tell them apart: name it with "
                           f"--detection-layout transposed or --detection-layout boxes_first")  # fmt: skip
    classes = None
    if dims is not None and layout.kind in (*_RAW, "separate"):
        classes = {"channels_first": dims[0] - 4, "transposed": dims[-1] - 4, "boxes_first": dims[-1] - 5,
                   "separate": dims[0] if layout.scores_t else dims[-1]}[layout.kind]  # fmt: skip
        classes = layout.classes or classes
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
        frozenset({"target", "detection", "box", "score_threshold", "layout"}),
        _target,
        _record,
        _check,
    )
)
