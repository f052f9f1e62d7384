"""Targets: what to explain. A target turns into the seed of the backward pass.

A target either names a class (``class_index``; the fast single-run path) or gives
the seed tensor for one image's output (``seed``): the gradient computed is that of
``<seed, output>``, so any linear function of the output is a target.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from camcore.errors import CamcoreError


class Target:
    """Base class: subclasses set ``class_index`` or override :meth:`seed`."""

    class_index: int | None = None

    def seed(self, output: np.ndarray) -> np.ndarray:
        """The seed for one image, shaped like that image's output row."""
        if self.class_index is None:
            raise NotImplementedError
        if output.ndim != 1 or not -output.shape[0] <= self.class_index < output.shape[0]:
            raise CamcoreError(f"class {self.class_index} is out of range for an output of shape {output.shape}")
        s = np.zeros_like(output)
        s[self.class_index] = 1.0
        return s


@dataclass(frozen=True)
class ClassifierOutputTarget(Target):
    """Explain the logit of ``category``, as in pytorch-grad-cam.

    Example:
        >>> cam(x, targets=[ClassifierOutputTarget(281)])
    """

    category: int

    @property
    def class_index(self) -> int:  # type: ignore[override]
        return int(self.category)

    def __call__(self, model_output: np.ndarray) -> np.ndarray:
        """The explained score, for pytorch-grad-cam compatibility."""
        return model_output[..., self.category]
