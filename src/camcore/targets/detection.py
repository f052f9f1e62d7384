"""A target on YOLO-style detection heads: one box's class score, and optionally its IoU with a
reference box."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from camcore.errors import CamcoreError
from camcore.targets.registry import Target, register_target


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes ``a`` (4,) against ``b`` (M, 4)."""
    lt = np.maximum(a[:2], b[:, :2])
    rb = np.minimum(a[2:], b[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = lambda x: np.clip(x[..., 2] - x[..., 0], 0, None) * np.clip(x[..., 3] - x[..., 1], 0, None)  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-12)


def _to_xyxy(box: np.ndarray, fmt: str) -> tuple[np.ndarray, np.ndarray]:
    """xyxy of ``box`` (..., 4) and the Jacobian d xyxy / d box (4, 4)."""
    if fmt == "xyxy":
        return box, np.eye(4)
    if fmt == "cxcywh":
        cx, cy, w, h = (box[..., i] for i in range(4))
        xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)
        jac = np.array([[1, 0, -0.5, 0], [0, 1, 0, -0.5], [1, 0, 0.5, 0], [0, 1, 0, 0.5]], float)
        return xyxy, jac
    raise CamcoreError(f"box_format must be 'cxcywh' or 'xyxy', not {fmt!r}")


@register_target()
@dataclass(frozen=True)
class DetectionBoxTarget(Target):
    """One detection of a YOLO-style head whose raw output per image is (boxes, 4 + [1] + classes):
    box coordinates, an optional objectness column (``objectness=True``, YOLOv5) and the
    class scores. ``layout="channels_first"`` reads (4 + classes, boxes) (YOLOv8 exports).

    The box is ``box_index``, or, given a reference ``box`` (in ``box_format``), the box
    whose IoU with it is highest among those whose best class is ``label``.

    .. math:: T = s_{i,\\,label} + \\lambda \\cdot \\mathrm{IoU}(b_i, b_{ref})

    (the IoU term only with a reference box; λ = ``iou_weight``), in the spirit of
    pytorch-grad-cam's FasterRCNNBoxScoreTarget (IoU + score) but on the raw, differentiable
    head output: the score and the box coordinates both get gradient.

    Example:
        >>> t = DetectionBoxTarget(label=2, box=np.array([10, 10, 50, 50.0]), box_format="xyxy")
        >>> cam = camcore.GradCAM("yolo.onnx", output="output0")  # doctest: +SKIP
    """

    label: int
    box_index: int | None = None
    box: np.ndarray | None = field(default=None, compare=False)
    box_format: str = "cxcywh"
    objectness: bool = False
    layout: str = "boxes_first"
    iou_weight: float = 1.0

    def _rows(self, output: np.ndarray) -> np.ndarray:
        if output.ndim != 2:
            raise CamcoreError(f"DetectionBoxTarget needs a (boxes, values) output per image, got {output.shape}")
        if self.layout == "channels_first":
            return output.T
        if self.layout != "boxes_first":
            raise CamcoreError(f"layout must be 'boxes_first' or 'channels_first', not {self.layout!r}")
        return output

    @property
    def _offset(self) -> int:
        return 5 if self.objectness else 4

    def select(self, output: np.ndarray) -> int:
        """The index of the explained box."""
        rows = self._rows(output)
        if not 0 <= self.label < rows.shape[1] - self._offset:
            raise CamcoreError(f"label {self.label} is out of range for {rows.shape[1] - self._offset} classes")
        if self.box_index is not None:
            if not 0 <= self.box_index < rows.shape[0]:
                raise CamcoreError(f"box_index {self.box_index} is out of range for {rows.shape[0]} boxes")
            return int(self.box_index)
        if self.box is None:
            return int(np.argmax(rows[:, self._offset + self.label]))
        ref, _ = _to_xyxy(np.asarray(self.box, np.float64), self.box_format)
        boxes, _ = _to_xyxy(rows[:, :4].astype(np.float64), self.box_format)
        iou = box_iou(ref, boxes)
        same = np.argmax(rows[:, self._offset :], axis=1) == self.label
        if not same.any():
            raise CamcoreError(f"no box predicts label {self.label}")
        return int(np.argmax(np.where(same, iou, -1.0)))

    def __call__(self, output: np.ndarray) -> float:
        i = self.select(output)
        return self._score(self._rows(output)[i].astype(np.float64))

    def _score(self, row: np.ndarray) -> float:
        score = float(row[self._offset + self.label])
        if self.box is not None and self.iou_weight:
            ref, _ = _to_xyxy(np.asarray(self.box, np.float64), self.box_format)
            xyxy, _ = _to_xyxy(row[:4], self.box_format)
            score += self.iou_weight * float(box_iou(ref, xyxy[None])[0])
        return score

    def seed(self, output: np.ndarray) -> np.ndarray:
        rows = self._rows(output)
        i = self.select(output)
        grad = np.zeros(rows.shape, np.float64)
        grad[i, self._offset + self.label] = 1.0
        if self.box is not None and self.iou_weight:
            ref, _ = _to_xyxy(np.asarray(self.box, np.float64), self.box_format)
            xyxy, jac = _to_xyxy(rows[i, :4].astype(np.float64), self.box_format)
            grad[i, :4] = self.iou_weight * (_iou_grad(ref, xyxy) @ jac)
        if self.layout == "channels_first":
            grad = grad.T
        return grad.astype(output.dtype)


def _iou_grad(ref: np.ndarray, box: np.ndarray) -> np.ndarray:
    """d IoU(ref, box) / d box for xyxy boxes (one-sided where a max/min ties)."""
    ix1, iy1 = max(ref[0], box[0]), max(ref[1], box[1])
    ix2, iy2 = min(ref[2], box[2]), min(ref[3], box[3])
    iw, ih = max(ix2 - ix1, 0.0), max(iy2 - iy1, 0.0)
    inter = iw * ih
    bw, bh = max(box[2] - box[0], 0.0), max(box[3] - box[1], 0.0)
    union = (ref[2] - ref[0]) * (ref[3] - ref[1]) + bw * bh - inter
    d_inter = np.zeros(4)
    if iw > 0 and ih > 0:
        d_inter[0] = -ih if box[0] > ref[0] else 0.0
        d_inter[2] = ih if box[2] < ref[2] else 0.0
        d_inter[1] = -iw if box[1] > ref[1] else 0.0
        d_inter[3] = iw if box[3] < ref[3] else 0.0
    d_area = np.array([-bh, -bw, bh, bw]) * (np.array([bw, bh, bw, bh]) > 0)
    d_union = d_area - d_inter
    return (d_inter * union - inter * d_union) / max(union, 1e-12) ** 2
