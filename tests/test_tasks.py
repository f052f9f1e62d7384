"""The task registry's shape rules, on declared shapes alone (no model runs), and the pieces of
a task's choice: detections after NMS, a region's cells."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import onnx
import pytest

from camcore.errors import CamcoreError
from camcore.graph.shapes import TensorInfo
from camcore.tasks import TASKS, TaskOptions, choose_task
from camcore.tasks.basic import region_mask
from camcore.tasks.detect import Candidates, anchor_counts, detections

FLOAT, INT64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64


def _engine(outputs: dict[str, tuple[Any, ...]], explained: str | None = None, ints: tuple[str, ...] = ()) -> Any:
    info = {n: TensorInfo(INT64 if n in ints else FLOAT, s) for n, s in outputs.items()}
    name = explained or next(iter(outputs))
    return SimpleNamespace(info=info, output_names=list(outputs), output=name, output_shape=lambda: outputs[name])


RULES = [  # outputs, input size, task, layout, explained
    ({"o": ("N", 84, 8400)}, (640, 640), "detect", "channels_first", "o"),
    ({"o": ("N", 25200, 85)}, (640, 640), "detect", "boxes_first", "o"),
    ({"o": ("N", 25200, 6)}, (640, 640), "detect", "boxes_first", "o"),  # one class, no NMS
    ({"o": ("N", 300, 6)}, (640, 640), "detect", "nms", "o"),
    ({"o": ("N", 84, 8400)}, None, "detect", "channels_first", "o"),
    ({"boxes": ("N", 8400, 4), "scores": ("N", 8400, 80)}, (640, 640), "detect", "separate", "scores"),
    (
        {"num": ("N", 1), "b": ("N", 100, 4), "s": ("N", 100), "l": ("N", 100)},
        (640, 640),
        "detect",
        "separate_nms",
        "s",
    ),
    ({"boxes": ("N", 8400, 4), "scores": ("N", 80, 8400)}, (640, 640), "detect", "separate", "scores"),
    ({"boxes": ("N", 8400, 1, 4), "confs": ("N", 8400, 80)}, (640, 640), "detect", "separate", "confs"),
    ({"boxes": ("N", 4, 8400), "scores": ("N", 80, 8400)}, (640, 640), "detect", "separate", "scores"),
    ({"o": ("N", 21, 128, 128)}, (512, 512), "segment", None, "o"),
    ({"o": ("N", 128, 128, 21)}, (512, 512), "segment", "channels_last", "o"),  # NHWC: only that reading fits
    ({"o": ("N", 16, 16, 16)}, (64, 64), "segment", None, "o"),  # both fit, nothing shown: channels first
    ({"o": ("N", 21, 512, 512)}, (512, 512), "segment", None, "o"),
    ({"o": ("N", 21, 2, 2)}, (512, 512), "raw", None, "o"),  # a 256-fold stride: not a segmentation
    ({"o": ("N", 1, 160, 160)}, (640, 640), "raw", None, "o"),  # one channel (an OCR text map)
    ({"o": ("N", 40, 6625)}, (48, 320), "raw", None, "o"),  # a text recogniser's (N, T, classes)
    ({"o": ("N", 1000)}, (224, 224), "classify", None, "o"),
    ({"o": ("N", 1)}, (224, 224), "regress", None, "o"),
    ({"o": ("N", 3, 5)}, (224, 224), "raw", None, "o"),
    ({"o": ("N", "k")}, (224, 224), "classify", None, "o"),
    ({"o": None}, (224, 224), "raw", None, "o"),
]


@pytest.mark.parametrize(("outputs", "hw", "task", "layout", "explained"), RULES,
                         ids=[" ".join(str(s) for s in r[0].values()) + f" {r[1]}" for r in RULES])  # fmt: skip
def test_the_shape_rules(outputs: dict[str, Any], hw: tuple[int, int] | None, task: str, layout: str | None,
                         explained: str) -> None:  # fmt: skip
    ints = ("num", "l") if "num" in outputs else ()
    choice = choose_task(_engine(outputs, ints=ints), None, TaskOptions(), input_hw=hw)
    assert choice.task.name == task
    assert getattr(choice.found.layout, "kind", None) == layout
    assert choice.output == explained
    assert choice.source.startswith("detected from output shape (")
    if layout == "separate_nms":
        assert choice.found.layout.labels == "l" and choice.found.layout.boxes == "b"


@pytest.mark.parametrize(
    ("outputs", "classes"),
    [
        ({"o": ("N", 116, 8400), "protos": ("N", 32, 160, 160)}, 80),  # YOLOv8-seg: 4 + 80 + 32
        ({"o": ("N", 25200, 117), "protos": ("N", 32, 160, 160)}, 80),  # YOLOv5-seg: 5 + 80 + 32
        ({"o": ("N", 84, 8400)}, None),
    ],
)
def test_a_segmenting_heads_mask_coefficients_are_no_classes(outputs: dict[str, Any], classes: int | None) -> None:
    choice = choose_task(_engine(outputs, explained="o"), None, TaskOptions(), input_hw=(640, 640))
    assert choice.task.name == "detect" and choice.found.layout.classes == classes
    if classes is not None:  # candidates read the class channels only
        from camcore.tasks.detect import candidates

        row = np.zeros(outputs["o"][1:], np.float32)
        first = choice.found.layout.kind == "channels_first"
        scores = row[4:] if first else row[:, 5:].T
        scores[-1, 7] = 5.0  # a large mask coefficient of candidate 7: not a class score
        scores[2, 3] = 0.9
        if not first:
            row[:, 4] = 1.0  # objectness
        c = candidates(choice, [row, np.zeros(outputs["protos"][1:], np.float32)])
        assert c.per_class is not None and c.per_class.shape[1] == classes
        assert int(np.argmax(c.scores)) == 3 and c.classes[3] == 2


@pytest.mark.parametrize(
    ("shape", "hw", "classes", "layout", "want"),
    [
        (("N", 8400, 84), (640, 640), 80, None, "transposed"),  # a transposed YOLOv8: 4 + 80 names
        (("N", 8400, 85), (640, 640), 80, None, "boxes_first"),  # YOLOX: 5 + 80
        (("N", 25200, 85), (640, 640), None, None, "boxes_first"),  # 3 anchors per cell: YOLOv5
        (("N", 8400, 84), (640, 640), None, None, "ambiguous"),  # anchor-free, no names: the user says
        (("N", 8400, 84), None, None, None, "ambiguous"),
        (("N", 8400, 84), (640, 640), None, "transposed", "transposed"),
        (("N", 8400, 85), (640, 640), 80, "transposed", "transposed"),  # the flag wins
        (("N", 8400, 116), (640, 640), 80, None, "transposed"),  # YOLOv8-seg transposed: 4 + 80 + 32
        (("N", 300, 6), (640, 640), None, "boxes_first", "boxes_first"),  # not read as NMS when named
    ],
)
def test_rows_of_candidates_are_transposed_yolov8_or_have_objectness(shape: tuple[Any, ...], hw: Any,
                                                                     classes: int | None, layout: str | None,
                                                                     want: str) -> None:  # fmt: skip
    outputs = {"o": shape, **({"protos": ("N", 32, 160, 160)} if shape[2] == 116 else {})}
    opts = TaskOptions(layout=layout)
    if want == "ambiguous":
        with pytest.raises(CamcoreError, match="--detection-layout transposed or --detection-layout boxes_first"):
            choose_task(_engine(outputs, explained="o"), None, opts, input_hw=hw, class_count=classes)
        return
    choice = choose_task(_engine(outputs, explained="o"), None, opts, input_hw=hw, class_count=classes)
    assert (choice.task.name, choice.found.layout.kind) == ("detect", want)
    if shape[2] == 116:
        assert choice.found.layout.classes == 80


def test_the_registry_order_is_the_rule_order_and_raw_takes_anything() -> None:
    assert list(TASKS) == ["detect", "segment", "classify", "regress", "raw"]
    from camcore.tasks.registry import Outputs

    assert TASKS["raw"].match(Outputs({"o": None}, "o"), False) is not None


def test_an_explicit_output_is_kept() -> None:
    engine = _engine({"boxes": ("N", 8400, 4), "scores": ("N", 8400, 80)}, explained="boxes")
    choice = choose_task(engine, None, TaskOptions(), explicit_output=True, input_hw=(640, 640))
    assert (choice.task.name, choice.output) == ("raw", "boxes")


def test_anchor_counts_are_the_yolo_grids() -> None:
    counts = anchor_counts((640, 640))
    assert {8400, 25200, 8500} <= counts and 6625 not in counts
    assert 80 in anchor_counts((16, 16))  # 8x8 + 4x4


def test_nms_keeps_the_best_of_overlapping_boxes_per_class() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 1, 1]], float)
    c = Candidates(boxes, np.array([0, 0, 1, 0, 0]), np.array([0.9, 0.8, 0.7, 0.6, 0.1]), None, False)
    assert detections(c, 0.25) == [0, 2, 3]  # 1 overlaps 0 (same class); 2 is another class; 4 is below
    c.nms_done = True
    assert detections(c, 0.25) == [0, 1, 2, 3]


def test_a_region_is_the_cells_it_meets_at_the_outputs_resolution() -> None:
    mask = region_mask((0, 0, 8, 4), (16, 16), (4, 4))
    assert mask.sum() == 2 and mask[0, :2].all()
    assert region_mask(None, None, (3, 3)).all()
    assert region_mask((15.5, 15.5, 16, 16), (16, 16), (4, 4)).sum() == 1
    with pytest.raises(CamcoreError, match="fixed input size"):
        region_mask((0, 0, 1, 1), None, (4, 4))
