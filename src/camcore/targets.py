"""Targets: what to explain. A target turns into the seed of the backward pass.

A target is a scalar function T of one image's output (its row of the explained
output). The augmented graph computes the gradient of ``<seed, output>``, so the
seed is ``dT/d output`` at the forward output:

* a **class target** (``class_index`` set) is the fast path: the one-hot seed is built
  inside the graph, one run in all;
* a **linear target** (``linear = True``: the seed does not depend on the output, e.g. a
  segmentation mask) needs the output's shape only: one run;
* a **nonlinear target** (softmax, cosine similarity, box chosen by IoU) needs the
  forward output first: camcore runs the forward part alone (onnxruntime executes only
  the nodes the output needs), computes the seed in numpy, then the augmented run:
  about two forward passes and one backward pass in all.

``T(row)`` is available as ``target(row)`` (as in pytorch-grad-cam) and its seed as
``target.seed(row)``; every seed is tested against a numerical derivative of ``T``.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from camcore.errors import CamcoreError

__all__ = [
    "TARGETS",
    "TARGET_TYPES",
    "Target",
    "TargetType",
    "per_image",
    "register_target",
    "softmax",
    "top1_targets",
]


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax."""
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


#: every public target class, by name (the package's ``__all__`` reads it)
TARGETS: dict[str, type[Target]] = {}


@dataclass(frozen=True)
class TargetType:
    """A target's command-line form: ``--target-type NAME [--target INDEX]``.

    ``build(index, row)`` makes one image's target from ``--target`` (None when omitted) and,
    when ``needs_output(index)``, the image's output row (None otherwise); a None target means
    the top-1 class, chosen in the graph. ``check(index, shape)`` refuses, before any work, an
    index or an output (its declared shape, batch axis included) that cannot work.
    """

    name: str
    help: str
    build: Callable[[int | None, np.ndarray | None], Target | None]
    needs_output: Callable[[int | None], bool]
    check: Callable[[int | None, tuple[Any, ...] | None], None]


#: ``camcore explain --target-type``: name -> its :class:`TargetType`
TARGET_TYPES: dict[str, TargetType] = {}
_T = TypeVar("_T", bound=type)


def register_target(cli: TargetType | None = None) -> Callable[[_T], _T]:
    """Register a target class by its name, and its command-line form ``cli`` if it has one."""

    def wrap(cls: _T) -> _T:
        if cls.__name__ in TARGETS or (cli is not None and cli.name in TARGET_TYPES):
            raise RuntimeError(f"two targets registered as {cls.__name__!r}")
        TARGETS[cls.__name__] = cls
        if cli is not None:
            TARGET_TYPES[cli.name] = cli
        return cls

    return wrap


def _int(value: Any, what: str) -> int:
    """``value`` as an int, refusing floats, bools and strings with a one-line error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise CamcoreError(f"{what} must be an integer, got {value!r}")
    return int(value)


def per_image(targets: Any, n: int) -> list[Target]:
    """``targets`` as one :class:`Target` per image: a list of n, or one for all.

    Raises:
        CamcoreError: not a sequence of targets, or a length that is neither 1 nor n.
    """
    if isinstance(targets, Target) or not isinstance(targets, Sequence) or isinstance(targets, str):
        raise CamcoreError(
            f"targets must be a list of Target objects (one per image, or one for all), e.g. "
            f"[ClassifierOutputTarget(3)]; got {type(targets).__name__}"
        )
    bad = next((t for t in targets if not isinstance(t, Target)), None)
    if bad is not None:
        raise CamcoreError(
            f"every target must be a Target (e.g. ClassifierOutputTarget(3)), got {type(bad).__name__} {bad!r}"
        )
    out = list(targets)
    if len(out) == 1 and n > 1:
        out = out * n
    if len(out) != n:
        raise CamcoreError(f"got {len(out)} targets for a batch of {n} images")
    return out


def top1_targets(outputs: np.ndarray) -> list[Target]:
    """``ClassifierOutputTarget`` of each image's top-1 class, from an (N, classes) output."""
    if outputs.ndim != 2:
        raise CamcoreError(
            f"the top-1 class needs an (N, classes) output, but it has shape {tuple(outputs.shape)}; pass targets "
            "(or --target-type raw, regression, ... on the command line)"
        )
    return [ClassifierOutputTarget(int(k)) for k in np.argmax(outputs, axis=-1)]


def _check_class(k: int, output: np.ndarray) -> None:
    if output.ndim != 1 or not -output.shape[0] <= k < output.shape[0]:
        raise CamcoreError(f"class {k} is out of range for an output of shape {output.shape}")


class Target:
    """Base class: ``__call__`` is T(one image's output); ``seed`` its gradient there."""

    class_index: int | None = None
    #: the seed does not depend on the output's values
    linear: bool = False

    def __call__(self, output: np.ndarray) -> float:
        raise NotImplementedError

    def seed(self, output: np.ndarray) -> np.ndarray:
        """dT/d output at ``output`` (one image's output), shaped like it."""
        if self.class_index is None:
            raise NotImplementedError
        _check_class(self.class_index, output)
        s = np.zeros_like(output)
        s[self.class_index] = 1.0
        return s


def _classes_of(shape: tuple[Any, ...] | None) -> int | None:
    return shape[1] if shape is not None and len(shape) == 2 and isinstance(shape[1], int) and shape[1] > 0 else None


def _check_class_output(kind: str, index: int | None, shape: tuple[Any, ...] | None) -> None:
    if shape is not None and len(shape) != 2:
        raise CamcoreError(
            f"--target-type {kind} needs an (N, classes) output, but the model's has shape {list(shape)}; "
            "use --target-type raw (every score) or regression --target I (one value)"
        )
    classes = _classes_of(shape)
    if index is not None and (index < 0 or (classes is not None and index >= classes)):
        raise CamcoreError(f"--target {index} is out of range for {classes} classes (0..{(classes or 0) - 1})")


def _class_target(index: int | None, row: np.ndarray | None) -> Target | None:
    return None if index is None else ClassifierOutputTarget(index)


@register_target(
    TargetType(
        "class",
        "the logit of a class (default: each image's top-1)",
        _class_target,
        lambda index: False,
        lambda index, shape: _check_class_output("class", index, shape),
    )
)
@dataclass(frozen=True)
class ClassifierOutputTarget(Target):
    """T = z[category]: the logit of ``category`` (pytorch-grad-cam's target).

    Example:
        >>> cam(x, targets=[ClassifierOutputTarget(281)])  # doctest: +SKIP
    """

    category: int
    linear = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "category", _int(self.category, "ClassifierOutputTarget's category"))

    @property
    def class_index(self) -> int:  # type: ignore[override]
        return int(self.category)

    def __call__(self, output: np.ndarray) -> float:
        # ``[..., k]`` also takes a batch of rows (as pytorch-grad-cam): an array there, kept as is
        return output[..., self.category]  # type: ignore[return-value]


def _softmax_target(index: int | None, row: np.ndarray | None) -> Target:
    if index is None:
        assert row is not None, "needs_output: the row is given"
        index = int(np.argmax(row))
    return ClassifierOutputSoftmaxTarget(index)


@register_target(
    TargetType(
        "softmax",
        "the softmax probability of a class (default: the top-1)",
        _softmax_target,
        lambda index: index is None,
        lambda index, shape: _check_class_output("softmax", index, shape),
    )
)
@dataclass(frozen=True)
class ClassifierOutputSoftmaxTarget(Target):
    """T = softmax(z)[k]; seed p_k (e_k − p).

    Example:
        >>> s = ClassifierOutputSoftmaxTarget(0).seed(np.array([0.0, 0.0])); s.tolist()
        [0.25, -0.25]
    """

    category: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "category", _int(self.category, "ClassifierOutputSoftmaxTarget's category"))

    def __call__(self, output: np.ndarray) -> float:
        # ``[..., k]`` also takes a batch of rows (as pytorch-grad-cam): an array there, kept as is
        return softmax(output)[..., self.category]  # type: ignore[return-value]

    def seed(self, output: np.ndarray) -> np.ndarray:
        _check_class(self.category, output)
        p = softmax(output.astype(np.float64))
        s = -p[self.category] * p
        s[self.category] += p[self.category]
        return s.astype(output.dtype)


@register_target()
@dataclass(frozen=True)
class ClassifierOutputReST(Target):
    """T = z_k − CE(z, k) = 2 z_k − logsumexp(z) (ShapleyCAM's ReST target); seed 2 e_k − p."""

    category: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "category", _int(self.category, "ClassifierOutputReST's category"))

    def __call__(self, output: np.ndarray) -> float:
        z = output.astype(np.float64)
        return float(2 * z[self.category] - (z.max() + np.log(np.exp(z - z.max()).sum())))

    def seed(self, output: np.ndarray) -> np.ndarray:
        _check_class(self.category, output)
        s = -softmax(output.astype(np.float64))
        s[self.category] += 2.0
        return s.astype(output.dtype)


def _check_binary(index: int | None, shape: tuple[Any, ...] | None) -> None:
    if index not in (None, 0, 1):
        raise CamcoreError(f"--target-type binary takes --target 0 or 1, got {index}")
    row = [] if shape is None else list(shape[1:])
    if shape is not None and not (row == [] or (len(row) == 1 and (not isinstance(row[0], int) or row[0] <= 1))):
        raise CamcoreError(
            f"--target-type binary needs a single-logit output (N,) or (N, 1), but the model's has shape "
            f"{list(shape)}; use --target-type class"
        )


@register_target(
    TargetType(
        "binary",
        "±the single logit of a binary classifier (--target 1, default, or 0)",
        lambda index, row: BinaryClassifierOutputTarget(1 if index is None else index),
        lambda index: False,
        _check_binary,
    )
)
@dataclass(frozen=True)
class BinaryClassifierOutputTarget(Target):
    """T = ±output for a single-logit binary classifier: + for ``category`` 1, − otherwise."""

    category: int
    linear = True

    def __post_init__(self) -> None:
        category = _int(self.category, "BinaryClassifierOutputTarget's category")
        if category not in (0, 1):
            raise CamcoreError(f"BinaryClassifierOutputTarget's category must be 0 or 1, got {category}")
        object.__setattr__(self, "category", category)

    def __call__(self, output: np.ndarray) -> float:
        return float(np.sum(output)) * (1.0 if self.category == 1 else -1.0)

    def seed(self, output: np.ndarray) -> np.ndarray:
        return np.full_like(output, 1.0 if self.category == 1 else -1.0)


def _check_raw(index: int | None, shape: tuple[Any, ...] | None) -> None:
    if index is not None:
        raise CamcoreError("--target-type raw sums every score: it takes no --target")


@register_target(
    TargetType(
        "raw",
        "the sum of all raw scores (detectors, OCR, any output)",
        lambda index, row: RawScoresOutputTarget(),
        lambda index: False,
        _check_raw,
    )
)
@dataclass(frozen=True)
class RawScoresOutputTarget(Target):
    """T = Σ output: every score at once (pytorch-grad-cam sums the raw scores)."""

    linear = True

    def __call__(self, output: np.ndarray) -> float:
        return float(np.sum(output))

    def seed(self, output: np.ndarray) -> np.ndarray:
        return np.ones_like(output)


def _check_regression(index: int | None, shape: tuple[Any, ...] | None) -> None:
    if shape is None:
        return
    size = int(np.prod([d for d in shape[1:]])) if all(isinstance(d, int) and d > 0 for d in shape[1:]) else None
    if index is None and size not in (None, 1):
        raise CamcoreError(
            f"--target-type regression without --target needs one value per image, but the output has shape "
            f"{list(shape)}; pass --target I (0..{(size or 1) - 1})"
        )
    if index is not None and (index < 0 or (size is not None and index >= size)):
        raise CamcoreError(f"--target {index} is out of range for an output of {size} value(s) per image")


@register_target(
    TargetType(
        "regression",
        "a scalar output, or its --target-th value (flattened)",
        lambda index, row: RegressionOutputTarget(index),
        lambda index: False,
        _check_regression,
    )
)
@dataclass(frozen=True)
class RegressionOutputTarget(Target):
    """T = output[index] of a regression head (the whole scalar output when ``index`` is None).

    Example:
        >>> cam(x, targets=[RegressionOutputTarget()])  # doctest: +SKIP
    """

    index: int | tuple[int, ...] | None = None
    linear = True

    def __post_init__(self) -> None:
        if self.index is not None and not isinstance(self.index, tuple):
            object.__setattr__(self, "index", _int(self.index, "RegressionOutputTarget's index"))

    def __call__(self, output: np.ndarray) -> float:
        if self.index is None:
            return float(output.reshape(-1)[0])
        return float(output[self.index] if isinstance(self.index, tuple) else output.reshape(-1)[self.index])

    def seed(self, output: np.ndarray) -> np.ndarray:
        s = np.zeros_like(output)
        if self.index is None:
            if output.size != 1:
                raise CamcoreError(f"RegressionOutputTarget() needs a scalar output per image, got shape "
                                   f"{output.shape}; pass index=")  # fmt: skip
            s.reshape(-1)[0] = 1.0
        elif isinstance(self.index, tuple):
            s[self.index] = 1.0
        else:
            s.reshape(-1)[self.index] = 1.0
        return s


@register_target()
@dataclass(frozen=True)
class SemanticSegmentationTarget(Target):
    """T = Σ_ij mask_ij · output[category, i, j] for an output (classes, H, W) per image.

    Example:
        >>> SemanticSegmentationTarget(1, np.ones((4, 4)))(np.ones((3, 4, 4)))
        16.0
    """

    category: int
    mask: np.ndarray = field(compare=False)
    linear = True

    def __call__(self, output: np.ndarray) -> float:
        return float((output[self.category] * self.mask).sum())

    def seed(self, output: np.ndarray) -> np.ndarray:
        if output.ndim != 3 or output.shape[1:] != np.shape(self.mask):
            raise CamcoreError(f"SemanticSegmentationTarget: mask {np.shape(self.mask)} does not fit an output "
                               f"(classes, H, W) of shape {output.shape}")  # fmt: skip
        _check_class(self.category, output[:, 0, 0])
        s = np.zeros_like(output)
        s[self.category] = self.mask
        return s


@register_target()
@dataclass(frozen=True)
class SimilarityToConceptTarget(Target):
    """T = cos(output, concept) for an embedding output: seed c/(|y||c|) − cos · y/|y|².

    Example:
        >>> round(SimilarityToConceptTarget(np.array([1.0, 0.0]))(np.array([1.0, 1.0])), 4)
        0.7071
    """

    concept: np.ndarray = field(compare=False)
    eps: float = 1e-8

    def _parts(self, output: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
        y = output.reshape(-1).astype(np.float64)
        c = np.asarray(self.concept, np.float64).reshape(-1)
        if y.shape != c.shape:
            raise CamcoreError(f"concept of size {c.size} does not fit an embedding of size {y.size}")
        return y, c, float(np.linalg.norm(y)), float(np.linalg.norm(c))

    def __call__(self, output: np.ndarray) -> float:
        y, c, ny, nc = self._parts(output)
        return float(y @ c / max(ny * nc, self.eps))

    def seed(self, output: np.ndarray) -> np.ndarray:
        y, c, ny, nc = self._parts(output)
        # d/dy (y·c / (|y||c|)) = c / (|y||c|) − cos · y / |y|²  (below eps the norm product is eps)
        g = c / self.eps if ny * nc <= self.eps else c / (ny * nc) - (y @ c) / (ny * nc) * y / ny**2
        return g.reshape(output.shape).astype(output.dtype)


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


@register_target()
@dataclass(frozen=True)
class FinerWeightedTarget(Target):
    """Finer-CAM's target: T = Σ_j p_j (z_m − α z_j) / (Σ_j p_j + 1e-9), p = softmax(z)."""

    main_category: int
    comparison_categories: Sequence[int] = field(default=(), compare=False)
    alpha: float = 1.0

    def __call__(self, output: np.ndarray) -> float:
        z = output.astype(np.float64)
        p = softmax(z)
        js = list(self.comparison_categories)
        num = sum(p[j] * (z[self.main_category] - self.alpha * z[j]) for j in js)
        return float(num / (sum(p[j] for j in js) + 1e-9))

    def seed(self, output: np.ndarray) -> np.ndarray:
        z = output.astype(np.float64)
        p = softmax(z)
        m, js = self.main_category, list(self.comparison_categories)
        num = sum(p[j] * (z[m] - self.alpha * z[j]) for j in js)
        den = sum(p[j] for j in js) + 1e-9
        d_num, d_den = np.zeros_like(z), np.zeros_like(z)
        for j in js:
            dp = -p[j] * p
            dp[j] += p[j]  # d p_j / d z = p_j (e_j − p)
            d_num += dp * (z[m] - self.alpha * z[j])
            d_num[m] += p[j]
            d_num[j] -= self.alpha * p[j]
            d_den += dp
        return ((d_num * den - num * d_den) / den**2).astype(output.dtype)
