"""``--task segment``, ``classify``, ``regress`` and ``raw`` (registered in this order, after
``detect``: the shape rules are tried in that order and ``raw`` takes anything).

* segment: (N, C, h, w), C >= 2, with H/h and W/w in [1, 32] for an input of H x W (any h, w >= 2
  when the input size is dynamic); or (N, h, w, C) (Keras through tf2onnx): where the graph
  shows the output's channels last (:func:`~camcore.graph.layouts.layer_layouts`, through a
  final Softmax too), where only that reading fits the shape, or, when both fit, where the
  image input is NHWC;
* classify: (N, K), K >= 2 or unknown;
* regress: (N, 1) or (N,): a single value per image (a single logit is read as a value: name
  ``--task classify --target-type binary`` for a binary classifier);
* raw: anything else; the sum of the output is explained.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from camcore.errors import CamcoreError
from camcore.targets import (
    RawScoresOutputTarget,
    RegressionOutputTarget,
    SemanticSegmentationTarget,
    Target,
    softmax,
    top1_targets,
)
from camcore.tasks.registry import Found, Outputs, Task, TaskChoice, register_task, shape_text, static


def _row(choice: TaskChoice, rows: list[np.ndarray]) -> np.ndarray:
    return np.asarray(rows[choice.index(choice.output)])


def _named(record: dict[str, Any], cls: int, names: Sequence[str] | None) -> dict[str, Any]:
    if names:
        record["name"] = names[cls] if 0 <= cls < len(names) else None
    return record


# ---------------------------------------------------------------------- segment
@dataclass(frozen=True)
class SegmentLayout:
    """A segmentation output with its classes on the last axis: (N, h, w, C)."""

    channels_last: bool = True

    @property
    def kind(self) -> str:
        return "channels_last"

    @property
    def describe(self) -> str:
        return "channels_last (N, h, w, C)"


def _grid_fits(c: int, h: int, w: int, outputs: Outputs, forced: bool) -> bool:
    """Whether ``c`` classes over an ``h`` x ``w`` grid read as a segmentation of the input."""
    if c < (1 if forced else 2):
        return False
    if outputs.input_hw is None or forced:
        return forced or (h >= 2 and w >= 2)
    ry, rx = outputs.input_hw[0] / h, outputs.input_hw[1] / w
    return 1 <= ry <= 32 and 1 <= rx <= 32 and 0.5 <= ry / rx <= 2


def _match_segment(outputs: Outputs, forced: bool) -> Found | None:
    dims = static(outputs.shape)
    if dims is None or len(dims) != 3:
        return None
    first, last = (_grid_fits(dims[0], dims[1], dims[2], outputs, False),
                   _grid_fits(dims[2], dims[0], dims[1], outputs, False))  # fmt: skip
    if forced and not (first or last):  # --task segment: any reading, by what the graph shows
        first, last = (_grid_fits(dims[0], dims[1], dims[2], outputs, True),
                       _grid_fits(dims[2], dims[0], dims[1], outputs, True))  # fmt: skip
    shown = outputs.layouts.get(outputs.explained)
    if last and (shown == "channels_last" or (shown is None and (not first or outputs.input_nhwc))):
        return Found(outputs.explained, SegmentLayout())
    return Found(outputs.explained) if first else None


def _planes(choice: TaskChoice, rows: list[np.ndarray]) -> np.ndarray:
    """The explained output of one image as (C, h, w)."""
    row = _row(choice, rows)
    return np.moveaxis(row, -1, 0) if _channels_last(choice) else row


def _channels_last(choice: TaskChoice) -> bool:
    return isinstance(choice.found.layout, SegmentLayout)


def region_mask(region: tuple[float, float, float, float] | None, input_hw: tuple[int, int] | None,
                hw: tuple[int, int]) -> np.ndarray:  # fmt: skip
    """The cells of an (h, w) output grid whose area meets ``region`` (x0, y0, x1, y1 in input
    pixels); all cells without a region. At least one cell."""
    mask = np.zeros(hw, bool)
    if region is None:
        mask[:] = True
        return mask
    if input_hw is None:
        raise CamcoreError("--region needs a fixed input size (the model's, or --size)")
    sy, sx = hw[0] / input_hw[0], hw[1] / input_hw[1]
    x0, y0, x1, y1 = region
    c0, r0 = int(np.clip(np.floor(x0 * sx), 0, hw[1] - 1)), int(np.clip(np.floor(y0 * sy), 0, hw[0] - 1))
    c1, r1 = max(int(np.ceil(x1 * sx)), c0 + 1), max(int(np.ceil(y1 * sy)), r0 + 1)
    mask[r0:r1, c0:c1] = True
    return mask


def _segment_pick(choice: TaskChoice, row: np.ndarray) -> tuple[int, np.ndarray]:
    """The explained class and the pixels (a mask at the output's resolution): the class's
    argmax pixels within the region (the whole region when it has none)."""
    region = region_mask(choice.options.region, choice.outputs.input_hw, row.shape[1:])
    labels = np.argmax(row, axis=0)
    cls = choice.options.target
    if cls is None:
        cls = int(np.argmax(np.bincount(labels[region], minlength=row.shape[0])))
    if not 0 <= cls < row.shape[0]:
        raise CamcoreError(f"--target {cls} is out of range for {row.shape[0]} classes")
    mask = region & (labels == cls)
    return cls, (mask if mask.any() else region).astype(row.dtype)


def _segment_target(choice: TaskChoice, rows: list[np.ndarray]) -> Target:
    cls, mask = _segment_pick(choice, _planes(choice, rows))
    return SemanticSegmentationTarget(cls, mask, channels_last=_channels_last(choice))


def _segment_record(choice: TaskChoice, rows: list[np.ndarray], target: Target | None, k: int,
                    names: Sequence[str] | None) -> dict[str, Any]:  # fmt: skip
    row = _planes(choice, rows)
    cls, mask = _segment_pick(choice, row)
    counts = np.bincount(np.argmax(row, axis=0).reshape(-1), minlength=row.shape[0]) / mask.size
    areas = [_named({"class": int(c), "fraction": round(float(counts[c]), 6)}, int(c), names)
             for c in np.argsort(-counts, kind="stable") if counts[c] > 0]  # fmt: skip
    record: dict[str, Any] = {"explained_class": cls, "region": list(choice.options.region or []) or None,
                              "explained_fraction": round(float(mask.mean()), 6), "areas": areas}  # fmt: skip
    if names and 0 <= cls < len(names):
        record["explained_name"] = names[cls]
    return record


def _segment_check(choice: TaskChoice) -> None:
    dims = static(choice.outputs.shape)
    if dims is not None and _channels_last(choice):
        dims = (dims[-1], *dims[:-1])
    region, target = choice.options.region, choice.options.target
    if region is not None:
        if not (region[2] > region[0] and region[3] > region[1]):
            raise CamcoreError(f"--region needs x0 < x1 and y0 < y1, got {','.join(f'{v:g}' for v in region)}")
        if choice.outputs.input_hw is None:
            raise CamcoreError("--region needs a fixed input size (the model's, or --size)")
    if target is not None and (target < 0 or (dims is not None and target >= dims[0])):
        raise CamcoreError(f"--target {target} is out of range for the {None if dims is None else dims[0]} classes "
                           f"of an output {shape_text(choice.outputs.shape)}")  # fmt: skip


register_task(
    Task(
        "segment",
        "semantic segmentation (N, C, h, w) or (N, h, w, C): a class over its pixels (default: the largest class)",
        _match_segment,
        frozenset({"target", "region"}),
        _segment_target,
        _segment_record,
        _segment_check,
    )
)


# ---------------------------------------------------------------------- classify
def _match_classify(outputs: Outputs, forced: bool) -> Found | None:
    shape = outputs.shape
    if shape is not None and len(shape) == 2 and (forced or not isinstance(shape[1], int) or shape[1] > 1):
        return Found(outputs.explained)
    return Found(outputs.explained) if forced and shape is not None and len(shape) == 1 else None


def _classify_target(choice: TaskChoice, rows: list[np.ndarray]) -> Target | None:
    assert choice.classes is not None, "the classify task keeps its target type"
    kind, index = choice.classes.kind, choice.classes.index
    return kind.build(index, _row(choice, rows) if kind.needs_output(index) else None)


def _classify_record(choice: TaskChoice, rows: list[np.ndarray], target: Target | None, k: int,
                     names: Sequence[str] | None) -> dict[str, Any]:  # fmt: skip

    return prediction_record(_row(choice, rows), target, k, names)


register_task(
    Task(
        "classify",
        "a classifier (N, classes): a class's logit or probability (default: the top-1), by --target-type",
        _match_classify,
        frozenset({"target", "target_type"}),
        _classify_target,
        _classify_record,
    )
)


# ---------------------------------------------------------------------- regress
def _match_regress(outputs: Outputs, forced: bool) -> Found | None:
    dims = static(outputs.shape)
    if dims is not None and (forced or int(np.prod(dims)) == 1):
        return Found(outputs.explained)
    return None


def _regress_target(choice: TaskChoice, rows: list[np.ndarray]) -> Target:
    return RegressionOutputTarget(choice.options.target or 0)


def _regress_record(choice: TaskChoice, rows: list[np.ndarray], target: Target | None, k: int,
                    names: Sequence[str] | None) -> dict[str, Any]:  # fmt: skip
    flat = _row(choice, rows).reshape(-1)
    index = choice.options.target or 0
    return {"explained_index": index, "explained_value": float(flat[index]),
            "values": [float(v) for v in flat[:1000]]}  # fmt: skip


def _regress_check(choice: TaskChoice) -> None:
    dims = static(choice.outputs.shape)
    size = None if dims is None else int(np.prod(dims))
    index = choice.options.target
    if index is not None and (index < 0 or (size is not None and index >= size)):
        raise CamcoreError(f"--target {index} is out of range for an output of {size} value(s) per image")


register_task(
    Task(
        "regress",
        "a single value (N, 1), or the --target-th value of a static output (flattened; default: 0)",
        _match_regress,
        frozenset({"target"}),
        _regress_target,
        _regress_record,
        _regress_check,
    )
)


# ---------------------------------------------------------------------- raw
def _raw_record(choice: TaskChoice, rows: list[np.ndarray], target: Target | None, k: int,
                names: Sequence[str] | None) -> dict[str, Any]:  # fmt: skip
    row = _row(choice, rows)
    return {"output_shape": list(row.shape), "sum": float(np.sum(row, dtype=np.float64))}


register_task(
    Task(
        "raw",
        "any output: the sum of all its values",
        lambda outputs, forced: Found(outputs.explained),
        frozenset(),
        lambda choice, rows: RawScoresOutputTarget(),
        _raw_record,
    )
)


def top_k(row: np.ndarray, k: int) -> list[dict[str, float | int]]:
    """The ``k`` best classes of one image's scores, with logits and softmax probabilities.

    Example:
        >>> top_k(np.array([0.0, 2.0, 1.0]), 2)[0]["class"]
        1
    """
    flat = np.asarray(row, np.float64).reshape(-1)
    probs = softmax(flat)
    order = np.argsort(-flat, kind="stable")[: max(k, 0)]
    return [{"class": int(c), "logit": float(flat[c]), "probability": float(probs[c])} for c in order]


def prediction_record(
    output: np.ndarray, target: Target | None, k: int, class_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """A classifier's record of one image: the class explained (a class target's, the top-1
    for None, else None) and, for an (N, classes) output, its ``k`` best predictions; nothing
    for another output (its :class:`~camcore.tasks.TaskChoice` reports what it produced)."""
    row = np.asarray(output)
    record: dict[str, Any] = {}
    if target is not None:
        record["explained_class"] = target.class_index
    elif row.ndim == 1:
        record["explained_class"] = top1_targets(row[None])[0].class_index
    if row.ndim == 1 and k > 0:
        record["top_k"] = top_k(row, k)
        if class_names:
            for entry in record["top_k"]:
                c = int(entry["class"])
                entry["name"] = class_names[c] if c < len(class_names) else None
    explained = record.get("explained_class")
    if class_names and explained is not None and 0 <= explained < len(class_names):
        record["explained_name"] = class_names[explained]
    return record
