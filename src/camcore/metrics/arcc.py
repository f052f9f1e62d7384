"""ARCC (pytorch-grad-cam 1.5.7): the harmonic mean of coherency, 1 − complexity and ROAD."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from camcore.metrics.registry import engine_of, feeds_of, register_metric
from camcore.metrics.road import ROADCombined


def batch_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each pair of maps, :math:`\\mathrm{cov}/(\\sigma_a\\sigma_b + 10^{-8})`."""
    a = a.reshape(a.shape[0], -1).astype(np.float64)
    b = b.reshape(b.shape[0], -1).astype(np.float64)
    ac, bc = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    n = a.shape[1] - 1
    cov = (ac * bc).sum(1) / n
    return cov / (np.sqrt((ac**2).sum(1) / n) * np.sqrt((bc**2).sum(1) / n) + 1e-8)


@register_metric("Complexity: the mean |L| of the map", kind="localisation", better="lower",
                 reference="https://arxiv.org/abs/2104.10252")  # fmt: skip
class Complexity:
    """:math:`\\frac{1}{HW}\\sum |L|` (0: empty map, 1: all ones)."""

    def __call__(self, grayscale_cams: np.ndarray) -> np.ndarray:
        flat = np.asarray(grayscale_cams).reshape(len(grayscale_cams), -1)
        return np.abs(flat).sum(axis=1) / flat.shape[1]


@register_metric("Coherency: (1 + Pearson(L, method(x ⊙ L))) / 2",
                 reference="https://arxiv.org/abs/2104.10252")  # fmt: skip
class Coherency:
    """The map recomputed on the map-weighted image should be the map:
    :math:`(1 + \\rho(L, \\mathrm{CAM}(x \\odot L))) / 2`."""

    def __call__(self, input_tensor: Any, grayscale_cams: np.ndarray, targets: Sequence[Any] | None,
                 model: Any, base_method: Any) -> np.ndarray:  # fmt: skip
        engine = engine_of(base_method)
        feeds = feeds_of(engine, input_tensor)
        name, _ = engine.image_input(feeds)
        mixed = (feeds[name] * grayscale_cams[:, None]).astype(feeds[name].dtype)
        cams = base_method({**feeds, name: mixed}, targets)
        return (batch_pearson(cams, grayscale_cams) + 1) / 2


@register_metric("ARCC: harmonic mean of coherency, 1 − complexity and 2·ROADCombined",
                 reference="https://arxiv.org/abs/2605.14641")  # fmt: skip
class ARCC:
    """:math:`3 / (1/C_{oh} + 1/(1 - C_{om}) + 1/R)`, each term + 1e-8, with
    R = clip(2·ROADCombined, 0, 1) over ``road_percentiles``; ``base_method`` a camcore
    CAM object (for coherency).

    Example:
        >>> ARCC(camcore.GradCAM(model))(x, maps, targets, model)  # doctest: +SKIP
    """

    def __init__(self, base_method: Any, road_percentiles: Sequence[float] = (20, 40, 60, 80),
                 noise: float = 0.01, seed: int | None = None) -> None:  # fmt: skip
        self.base_method = base_method
        self.complexity = Complexity()
        self.coherency = Coherency()
        self.road = ROADCombined(road_percentiles, noise, seed)

    def __call__(self, input_tensor: Any, grayscale_cams: np.ndarray, targets: Sequence[Any] | None,
                 model: Any) -> np.ndarray:  # fmt: skip
        complexity = self.complexity(grayscale_cams)
        coherency = self.coherency(input_tensor, grayscale_cams, targets, model, self.base_method)
        road = np.clip(self.road(input_tensor, grayscale_cams, targets, model) * 2, 0, 1)
        return 3 * (1 / (coherency + 1e-8) + 1 / ((1 - complexity) + 1e-8) + 1 / (road + 1e-8)) ** -1
