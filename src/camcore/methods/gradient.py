"""Gradient-weighted methods: weights from the gradients, times the activations.

Notation: ``A`` the activations (N, C, *spatial), ``G = ∂y/∂A`` the gradients of the
explained score ``y``, ``Z`` the number of spatial positions. Every function returns
the per-channel contributions (N, C, *spatial); the pipeline sums them over channels
(or projects them with ``eigen_smooth``), applies the ReLU and scales to [0, 1].
"""

from __future__ import annotations

import numpy as np

from camcore.maps import weighted_activations
from camcore.methods.registry import LayerRun, Need, register_method
from camcore.targets import ClassifierOutputTarget, top1_targets


def spatial_axes(x: np.ndarray) -> tuple[int, ...]:
    """The axes after (N, C)."""
    return tuple(range(2, x.ndim))


def layer_hvp(run: LayerRun) -> np.ndarray:
    """ShapleyCAM's need: the run's Hessian-vector product H·A of the layer, arranged as (N, C, *spatial)."""
    return run.context.grid(run.result.hvp[run.layer], run.layer)


def explained_classes(run: LayerRun) -> np.ndarray:
    """The class each image explains: its target's class, or the run's top-1 class."""
    from camcore.errors import CamcoreError

    if run.targets is None:
        outputs = run.result.outputs[run.context.engine.output_index]
        return np.asarray([t.class_index for t in top1_targets(outputs)])
    if any(t.class_index is None for t in run.targets):
        raise CamcoreError("this method needs class targets (ClassifierOutputTarget)")
    return np.asarray([t.class_index for t in run.targets])


def grad_moments(run: LayerRun, num_samples: int = 4, std: float = 0.3, seed: int | None = 0) -> np.ndarray:
    """Smooth Grad-CAM++'s need: (mean G, mean G², mean G³) of the layer's gradients over
    ``num_samples`` copies of the image input with Gaussian noise of std ``std``, stacked on axis 0.
    The explained class is the clean image's (its target, or its top-1)."""
    from camcore.errors import CamcoreError

    if num_samples < 1:
        raise CamcoreError(f"num_samples must be >= 1, got {num_samples}")
    engine = run.context.engine
    targets = run.targets
    if targets is None:
        targets = [ClassifierOutputTarget(int(k)) for k in explained_classes(run)]
    name = engine.input_names[0]
    rng = np.random.default_rng(seed)
    moments = None
    for _ in range(num_samples):
        x = run.feeds[name]
        noisy = {**run.feeds, name: (x + rng.normal(0.0, std, x.shape)).astype(x.dtype)}
        g = engine.run(noisy, targets, layers=[run.layer]).gradients[run.layer]
        g = run.context.grid(g, run.layer).astype(np.float64)
        step = np.stack([g, g**2, g**3])
        moments = step if moments is None else moments + step
    assert moments is not None
    return (moments / num_samples).astype(np.float32)


@register_method("GradCAM", "gradcam", "Grad-CAM: channel weights are the spatial mean of the gradients",
                 reference="https://arxiv.org/abs/1610.02391")  # fmt: skip
def gradcam(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017).

    .. math:: w_c = \\frac{1}{Z}\\sum_{ij} G^c_{ij}, \\qquad L = \\sum_c w_c A^c

    Example:
        >>> a = np.ones((1, 2, 3, 3), np.float32); g = np.stack([np.ones((3, 3)), -np.ones((3, 3))])[None]
        >>> float(gradcam(a, g.astype(np.float32)).sum(axis=1)[0, 0, 0])
        0.0
    """
    return weighted_activations(activations, gradients.mean(axis=spatial_axes(gradients)))


@register_method("HiResCAM", "hirescam", "HiResCAM: the element-wise product of gradients and activations",
                 reference="https://arxiv.org/abs/2011.08891")  # fmt: skip
def hirescam(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """HiResCAM (Draelos & Carin 2020): :math:`L = \\sum_c G^c \\odot A^c`.

    Example:
        >>> hirescam(np.full((1, 1, 2, 2), 2.0), np.full((1, 1, 2, 2), 3.0))[0, 0, 0, 0]
        6.0
    """
    return gradients * activations


@register_method("GradCAMElementWise", "gradcam-elementwise",
                 "Grad-CAM element-wise: the ReLU of gradients × activations, summed over channels")  # fmt: skip
def gradcam_elementwise(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """pytorch-grad-cam's element-wise Grad-CAM: :math:`L = \\sum_c \\max(G^c \\odot A^c, 0)`.

    Example:
        >>> gradcam_elementwise(np.ones((1, 2, 1, 1)), np.array([1.0, -1.0]).reshape(1, 2, 1, 1)).sum()
        1.0
    """
    return np.maximum(gradients * activations, 0)


@register_method("GradCAMPlusPlus", "gradcam++",
                 "Grad-CAM++: positive gradients weighted by second/third-order terms (eq. 19)",
                 reference="https://arxiv.org/abs/1710.11063")  # fmt: skip
def gradcam_plusplus(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """Grad-CAM++ (Chattopadhay et al. 2018), with the exponential-score closed form (eq. 19):

    .. math:: \\alpha^c_{ij} = \\frac{(G^c_{ij})^2}{2 (G^c_{ij})^2 + \\sum_{ab} A^c_{ab} (G^c_{ij})^3 + \\epsilon},
              \\qquad w_c = \\sum_{ij} \\alpha^c_{ij} \\max(G^c_{ij}, 0)

    (α = 0 where G = 0; ε = 1e-6 as in pytorch-grad-cam).

    Example:
        >>> a, g = np.ones((1, 1, 2, 2)), np.full((1, 1, 2, 2), 0.5)
        >>> round(float(gradcam_plusplus(a, g)[0, 0, 0, 0]), 4)  # w = 4·0.5·0.25/(0.5+4·0.125) = 0.5
        0.5
    """
    axes = spatial_axes(activations)
    g2 = gradients**2
    g3 = g2 * gradients
    sum_a = activations.sum(axis=axes, keepdims=True)
    alpha = g2 / (2 * g2 + sum_a * g3 + 1e-6)
    alpha = np.where(gradients != 0, alpha, 0)
    return weighted_activations(activations, (np.maximum(gradients, 0) * alpha).sum(axis=axes))


@register_method("XGradCAM", "xgradcam", "XGrad-CAM: gradients weighted by the normalised activations",
                 reference="https://arxiv.org/abs/2008.02312")  # fmt: skip
def xgradcam(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """XGrad-CAM (Fu et al. 2020):
    :math:`w_c = \\sum_{ij} G^c_{ij} A^c_{ij} / (\\sum_{ab} A^c_{ab} + 10^{-7})`.

    Example:
        >>> float(xgradcam(np.ones((1, 1, 2, 2)), np.full((1, 1, 2, 2), 2.0))[0, 0, 0, 0])  # w = 2
        2.0
    """
    axes = spatial_axes(activations)
    sum_a = activations.sum(axis=axes, keepdims=True)
    weights = (gradients * activations / (sum_a + 1e-7)).sum(axis=axes)
    return weighted_activations(activations, weights)


@register_method("LayerCAM", "layercam", "LayerCAM: activations weighted by their positive gradients",
                 reference="https://ieeexplore.ieee.org/document/9462463")  # fmt: skip
def layercam(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """LayerCAM (Jiang et al. 2021): :math:`L = \\sum_c \\max(G^c, 0) \\odot A^c`.

    Example:
        >>> layercam(np.ones((1, 2, 1, 1)), np.array([2.0, -1.0]).reshape(1, 2, 1, 1)).sum()
        2.0
    """
    return np.maximum(gradients, 0) * activations


@register_method("ShapleyCAM", "shapleycam",
                 "ShapleyCAM: weights are the spatial mean of G − ½·H·A (gradient and Hessian-vector product)",
                 needs={"hvp": Need(layer_hvp, hvp=True)},
                 reference="https://arxiv.org/abs/2501.06261")  # fmt: skip
def shapleycam(activations: np.ndarray, gradients: np.ndarray, hvp: np.ndarray) -> np.ndarray:
    """ShapleyCAM (Cai 2025): a second-order Taylor estimate of each channel's Shapley value.

    .. math:: w_c = \\frac{1}{Z}\\sum_{ij} \\big(G - \\tfrac12 H A\\big)^c_{ij}, \\qquad
              H A = \\frac{\\partial}{\\partial A}\\langle G(A), v\\rangle\\big|_{v = A}

    ``hvp`` is computed in the graph by differentiating camcore's own gradient graph.
    For piecewise-linear networks (ReLU, max-pool) below a linear head, H·A = 0 and
    ShapleyCAM is Grad-CAM.

    Example:
        >>> a, g = np.ones((1, 1, 2, 2)), np.ones((1, 1, 2, 2))
        >>> float(shapleycam(a, g, 2 * g)[0, 0, 0, 0])  # w = 1 - 1 = 0
        0.0
    """
    weights = (gradients - 0.5 * hvp).mean(axis=spatial_axes(gradients))
    return weighted_activations(activations, weights)


@register_method("SmoothGradCAMpp", "smoothgradcam++",
                 "Smooth Grad-CAM++ (torchcam): Grad-CAM++ with gradient moments averaged over noisy inputs",
                 needs={"grad_moments": Need(grad_moments)}, reference="https://arxiv.org/abs/1908.01224")  # fmt: skip
def smoothgradcampp(activations: np.ndarray, gradients: np.ndarray, grad_moments: np.ndarray) -> np.ndarray:
    """Smooth Grad-CAM++ (Omeiza et al. 2019), with torchcam's α numerator:

    .. math:: \\alpha^c_{ij} = \\frac{\\overline{G^2}}
              {2\\,\\overline{G^2} + \\sum_{ab} A^c_{ab}\\,\\overline{G^3} + \\epsilon},
              \\qquad w_c = \\sum_{ij} \\alpha^c_{ij} \\max(\\overline{G}, 0)

    where the bars average over ``num_samples`` copies of the input with Gaussian noise
    (σ = ``std``), and A is the clean input's activation. ``grad_moments`` stacks
    (mean G, mean G², mean G³) on axis 0. torchcam uses the last noisy sample's G where
    camcore uses the mean (the paper's D¹ average).

    Example:
        >>> a = np.ones((1, 1, 2, 2)); g = np.full((1, 1, 2, 2), 0.5)
        >>> m = np.stack([g, g**2, g**3])
        >>> round(float(smoothgradcampp(a, g, m)[0, 0, 0, 0]), 4)
        0.5
    """
    mean, g2, g3 = grad_moments
    axes = spatial_axes(activations)
    alpha = g2 / (2 * g2 + (g3 * activations).sum(axis=axes, keepdims=True) + 1e-8)
    return weighted_activations(activations, (alpha * np.maximum(mean, 0)).sum(axis=axes))


@register_method("RandomCAM", "randomcam", "RandomCAM: uniform random channel weights in [-1, 1] (a baseline)",
                 random=True, needs_gradients=False)  # fmt: skip
def randomcam(activations: np.ndarray, gradients: np.ndarray, seed: int | None = None) -> np.ndarray:
    """A sanity baseline: :math:`w_c \\sim U(-1, 1)`, :math:`L = \\sum_c w_c A^c`.

    Example:
        >>> randomcam(np.ones((2, 3, 4, 4)), np.ones((2, 3, 4, 4)), seed=0).shape
        (2, 3, 4, 4)
    """
    rng = np.random.default_rng(seed)
    return weighted_activations(activations, rng.uniform(-1, 1, size=activations.shape[:2]).astype(activations.dtype))
