"""ROAD (Rong et al. 2022, https://arxiv.org/abs/2202.00449): remove a percentile of the
pixels, most or least relevant first, impute them by noisy linear interpolation of their
neighbours, and measure the change in confidence.

The imputation solves the same sparse system as pytorch-grad-cam / the paper's code, each
removed pixel the weighted mean of its 8 neighbours (weights 1/6 on the axes, 1/12 on the
diagonals, renormalised at the border), but with numpy alone: a Jacobi-preconditioned
conjugate gradient on the stencil (the system is symmetric positive definite), to a
relative residual of 1e-7, where the paper calls scipy's direct ``spsolve``. Then Gaussian
noise of std ``noise`` (0.01) is added to the imputed pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import cv2
import numpy as np

from camcore.errors import CamcoreError
from camcore.metrics.confidence import PerturbationConfidenceMetric
from camcore.metrics.registry import register_metric

#: (dy, dx) and weight of each neighbour
NEIGHBOURS = (((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
              ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6))  # fmt: skip
PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)


def _shift(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """b[..., y, x] = a[..., y + dy, x + dx], 0 outside."""
    h, w = a.shape[-2:]
    out = np.zeros_like(a)
    ys, yd = slice(max(dy, 0), h + min(dy, 0)), slice(max(-dy, 0), h + min(-dy, 0))
    xs, xd = slice(max(dx, 0), w + min(dx, 0)), slice(max(-dx, 0), w + min(-dx, 0))
    out[..., yd, xd] = a[..., ys, xs]
    return out


def linear_impute(image: np.ndarray, keep: np.ndarray, tol: float = 1e-7, max_iter: int = 5000) -> np.ndarray:
    """Fill the pixels where ``keep`` is False with the solution of

    .. math:: s_p x_p - \\sum_{q \\in N(p), q\\ \\mathrm{removed}} w_q x_q
              = \\sum_{q \\in N(p), q\\ \\mathrm{kept}} w_q x_q

    for every removed p (s_p: the weights of p's in-image neighbours), i.e. each removed
    pixel is the weighted mean of its neighbours. ``image`` (C, H, W), ``keep`` (H, W).

    Example:
        >>> img = np.zeros((1, 3, 3), np.float32); img[0, :, 2] = 3
        >>> keep = np.ones((3, 3), bool); keep[1, 1] = False
        >>> float(linear_impute(img, keep)[0, 1, 1])
        1.0
    """
    x0 = image.astype(np.float64)
    miss = ~keep.astype(bool)
    if not miss.any():
        return image.copy()
    if miss.all():
        raise CamcoreError("cannot impute an image with every pixel removed")
    inside = np.ones(keep.shape)
    s = sum(w * _shift(inside, dy, dx) for (dy, dx), w in NEIGHBOURS)
    known = np.where(miss, 0.0, x0)
    b = sum(w * _shift(known, dy, dx) for (dy, dx), w in NEIGHBOURS) * miss

    def matvec(v: np.ndarray) -> np.ndarray:
        return (s * v - sum(w * _shift(v, dy, dx) for (dy, dx), w in NEIGHBOURS)) * miss

    # Jacobi-preconditioned CG, every channel at once; start from the neighbour mean
    x = np.where(miss, b / s, 0.0)
    r = b - matvec(x)
    z = r / s
    p = z.copy()
    rz = (r * z).sum(axis=(-2, -1), keepdims=True)
    norm_b = np.sqrt((b * b).sum(axis=(-2, -1), keepdims=True)) + 1e-30
    for _ in range(max_iter):
        if np.all(np.sqrt((r * r).sum(axis=(-2, -1), keepdims=True)) <= tol * norm_b):
            break
        ap = matvec(p)
        alpha = rz / np.maximum((p * ap).sum(axis=(-2, -1), keepdims=True), 1e-300)
        x += alpha * p
        r -= alpha * ap
        z = r / s
        rz_new = (r * z).sum(axis=(-2, -1), keepdims=True)
        p = z + rz_new / np.maximum(rz, 1e-300) * p
        rz = rz_new
    return np.where(miss, x, x0).astype(image.dtype)


class NoisyLinearImputer:
    """:func:`linear_impute`, plus :math:`\\mathcal{N}(0, \\mathrm{noise}^2)` on the imputed
    pixels (``noise=0``: deterministic). ``keep`` is 1 for the pixels to keep."""

    def __init__(self, noise: float = 0.01, seed: int | None = None) -> None:
        self.noise = noise
        self.rng = np.random.default_rng(seed)

    def __call__(self, image: np.ndarray, keep: np.ndarray) -> np.ndarray:
        out = linear_impute(image, keep > 0.5)
        if self.noise:
            miss = keep <= 0.5
            out = out + (self.noise * self.rng.standard_normal(out.shape) * miss).astype(out.dtype)
        return out


def keep_mask(cam: np.ndarray, percentile: float | str) -> np.ndarray:
    """1 where the map is below its ``percentile`` (these pixels stay), as float32; ``"auto"``:
    Otsu's threshold of the map as uint8 (1 above it), as pytorch-grad-cam."""
    if percentile == "auto":
        _, binary = cv2.threshold(np.uint8(cam * 255), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        return np.asarray(binary, np.float32)
    return np.float32(cam < np.percentile(cam, cast(float, percentile)))  # a number: "auto" returned above


class _Remove:
    def __init__(self, percentile: float | str, imputer: NoisyLinearImputer, most_first: bool) -> None:
        self.percentile, self.imputer, self.most_first = percentile, imputer, most_first

    def __call__(self, image: np.ndarray, cam: np.ndarray) -> np.ndarray:
        mask = cam if self.most_first else np.float32(1) - cam
        return self.imputer(image, keep_mask(mask, self.percentile))


@register_metric("ROAD, most relevant first: Δ confidence with the top pixels imputed", better="lower",
                 reference="https://arxiv.org/abs/2202.00449")  # fmt: skip
class ROADMostRelevantFirst(PerturbationConfidenceMetric):
    """Δ confidence after imputing the pixels above the map's ``percentile`` (default 80: the
    top 20 %). A good map makes the score fall: lower is better.

    Example:
        >>> ROADMostRelevantFirst(80, noise=0.0)(x, maps, targets, cam)  # doctest: +SKIP
    """

    def __init__(self, percentile: float | str = 80, noise: float = 0.01, seed: int | None = None) -> None:
        super().__init__(_Remove(percentile, NoisyLinearImputer(noise, seed), most_first=True))


@register_metric("ROAD, least relevant first: Δ confidence with the bottom pixels imputed",
                 reference="https://arxiv.org/abs/2202.00449")  # fmt: skip
class ROADLeastRelevantFirst(PerturbationConfidenceMetric):
    """Δ confidence after imputing the pixels whose ``1 − L`` is above its ``percentile``
    (default 20: the 80 % least relevant). A good map keeps the score: higher is better."""

    def __init__(self, percentile: float | str = 20, noise: float = 0.01, seed: int | None = None) -> None:
        super().__init__(_Remove(percentile, NoisyLinearImputer(noise, seed), most_first=False))


class _Average:
    #: the metric class, called as metric(percentile, noise, seed)
    metric: Callable[[float, float, int], PerturbationConfidenceMetric]

    def __init__(self, percentiles: Sequence[float] = PERCENTILES, noise: float = 0.01, seed: int | None = None):
        self.percentiles, self.noise, self.seed = list(percentiles), noise, seed

    def __call__(self, input_tensor: Any, cams: np.ndarray, targets: Any, model: Any) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        scores = [self.metric(p, self.noise, int(rng.integers(2**31)))(input_tensor, cams, targets, model)
                  for p in self.percentiles]  # fmt: skip
        return np.mean(np.asarray(scores, dtype=np.float32), axis=0)


@register_metric("ROAD most relevant first, averaged over percentiles 10…90", better="lower",
                 reference="https://arxiv.org/abs/2202.00449")  # fmt: skip
class ROADMostRelevantFirstAverage(_Average):
    """Mean of :class:`ROADMostRelevantFirst` over ``percentiles``."""

    metric = ROADMostRelevantFirst


@register_metric("ROAD least relevant first, averaged over percentiles 10…90",
                 reference="https://arxiv.org/abs/2202.00449")  # fmt: skip
class ROADLeastRelevantFirstAverage(_Average):
    """Mean of :class:`ROADLeastRelevantFirst` over ``percentiles``."""

    metric = ROADLeastRelevantFirst


@register_metric("ROAD combined: (LeRF − MoRF) / 2 averaged over percentiles",
                 reference="https://arxiv.org/abs/2202.00449")  # fmt: skip
class ROADCombined:
    """:math:`(\\overline{\\Delta}_{LeRF} - \\overline{\\Delta}_{MoRF}) / 2` over ``percentiles``:
    higher is better.

    Example:
        >>> ROADCombined(percentiles=[20, 80])(x, maps, targets, cam)  # doctest: +SKIP
    """

    def __init__(self, percentiles: Sequence[float] = PERCENTILES, noise: float = 0.01, seed: int | None = None):
        self.percentiles = list(percentiles)
        self.morf = ROADMostRelevantFirstAverage(percentiles, noise, seed)
        self.lerf = ROADLeastRelevantFirstAverage(percentiles, noise, None if seed is None else seed + 1)

    def __call__(self, input_tensor: Any, cams: np.ndarray, targets: Any, model: Any) -> np.ndarray:
        return (self.lerf(input_tensor, cams, targets, model) - self.morf(input_tensor, cams, targets, model)) / 2
