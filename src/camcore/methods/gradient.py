"""Gradient-weighted methods: a channel weight from the gradients, times the activations."""

from __future__ import annotations

import numpy as np

from camcore.methods.registry import register_method


def weighted_sum(activations: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Σ_c w[n, c] · A[n, c, ...] for weights of shape (N, C)."""
    extra = (1,) * (activations.ndim - 2)
    return np.sum(weights.reshape(*weights.shape, *extra) * activations, axis=1)


def spatial_axes(x: np.ndarray) -> tuple[int, ...]:
    return tuple(range(2, x.ndim))


@register_method("GradCAM", "gradcam", "Grad-CAM: channel weights are the spatial mean of the gradients")
def gradcam(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017, https://arxiv.org/abs/1610.02391).

    .. math:: w_c = \\frac{1}{Z}\\sum_{i,j} \\frac{\\partial y}{\\partial A^c_{ij}}, \\qquad
              L = \\sum_c w_c A^c   (ReLU and scaling follow in the pipeline)

    Example:
        >>> a = np.ones((1, 2, 3, 3), np.float32); g = np.stack([np.ones((3, 3)), -np.ones((3, 3))])[None]
        >>> gradcam(a, g.astype(np.float32))[0, 0, 0]
        0.0
    """
    return weighted_sum(activations, gradients.mean(axis=spatial_axes(gradients)))
