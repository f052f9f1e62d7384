"""Targets on dense and embedding outputs: a segmentation class over a mask, the similarity of an
embedding to a concept."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from camcore.errors import CamcoreError
from camcore.targets.registry import Target, check_class, register_target


@register_target()
@dataclass(frozen=True)
class SemanticSegmentationTarget(Target):
    """T = Σ_ij mask_ij · output[category, i, j] for an output (classes, H, W) per image, or
    Σ_ij mask_ij · output[i, j, category] for an (H, W, classes) one with ``channels_last``
    (NHWC segmenters: Keras through tf2onnx).

    Example:
        >>> SemanticSegmentationTarget(1, np.ones((4, 4)))(np.ones((3, 4, 4)))
        16.0
        >>> SemanticSegmentationTarget(1, np.ones((4, 4)), channels_last=True)(np.ones((4, 4, 3)))
        16.0
    """

    category: int
    mask: np.ndarray = field(compare=False)
    channels_last: bool = False
    linear = True

    def _planes(self, output: np.ndarray) -> np.ndarray:
        """The output as (classes, H, W) (a view)."""
        return np.moveaxis(output, -1, 0) if self.channels_last else output

    def __call__(self, output: np.ndarray) -> float:
        return float((self._planes(output)[self.category] * self.mask).sum())

    def seed(self, output: np.ndarray) -> np.ndarray:
        planes = self._planes(output)
        if output.ndim != 3 or planes.shape[1:] != np.shape(self.mask):
            kind = "(H, W, classes)" if self.channels_last else "(classes, H, W)"
            raise CamcoreError(f"SemanticSegmentationTarget: mask {np.shape(self.mask)} does not fit an output "
                               f"{kind} of shape {output.shape}")  # fmt: skip
        check_class(self.category, planes[:, 0, 0])
        s = np.zeros_like(output)
        self._planes(s)[self.category] = self.mask
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
