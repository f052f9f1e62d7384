"""The change in confidence when the image is perturbed by the map (pytorch-grad-cam's
``PerturbationConfidenceMetric`` family)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from camcore.metrics.registry import engine_of, feeds_of, register_metric, score_images

#: (image (C, H, W), map (H, W)) -> perturbed image
Perturbation = Callable[[np.ndarray, np.ndarray], np.ndarray]


class PerturbationConfidenceMetric:
    """:math:`\\Delta_i = T_i(f(\\pi(x_i, L_i))) - T_i(f(x_i))` for a perturbation π
    (the score after, without ``return_diff``).

    Example:
        >>> PerturbationConfidenceMetric(lambda x, m: x * m)(x, maps, targets, cam)  # doctest: +SKIP
    """

    def __init__(self, perturbation: Perturbation) -> None:
        self.perturbation = perturbation

    def __call__(
        self,
        input_tensor: np.ndarray | Mapping[str, np.ndarray],
        cams: np.ndarray,
        targets: Sequence[Any] | None,
        model: Any,
        return_visualization: bool = False,
        return_diff: bool = True,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        engine = engine_of(model)
        feeds = feeds_of(engine, input_tensor)
        name, _ = engine.image_input(feeds)
        ts = engine.targets_for(feeds, targets)
        x = feeds[name]
        perturbed = np.stack([self.perturbation(x[i], np.asarray(cams[i], np.float32)) for i in range(len(x))])
        after = score_images(engine, feeds, name, perturbed.astype(x.dtype), ts).astype(np.float32)
        result = after - score_images(engine, feeds, name, x, ts).astype(np.float32) if return_diff else after
        return (result, perturbed) if return_visualization else result


def multiply_tensor_with_cam(image: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """The image scaled by the map: :math:`x \\odot L`."""
    return image * cam


@register_metric("score(x ⊙ L) − score(x): the change in confidence on the map-weighted image",
                 reference="pytorch_grad_cam.metrics.cam_mult_image")  # fmt: skip
class CamMultImageConfidenceChange(PerturbationConfidenceMetric):
    """:math:`\\Delta = T(f(x \\odot L)) - T(f(x))`, as pytorch-grad-cam.

    Example:
        >>> CamMultImageConfidenceChange()(x, maps, [ClassifierOutputTarget(281)], cam)  # doctest: +SKIP
    """

    def __init__(self) -> None:
        super().__init__(multiply_tensor_with_cam)


@register_metric("max(−Δ, 0): the drop in confidence on the map-weighted image", better="lower",
                 reference="https://arxiv.org/abs/1710.11063")  # fmt: skip
class DropInConfidence(CamMultImageConfidenceChange):
    """:math:`\\max(-\\Delta, 0)` with Δ of :class:`CamMultImageConfidenceChange` (Grad-CAM++'s
    "average drop" per image, unnormalised, as pytorch-grad-cam)."""

    def __call__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        return np.maximum(-np.asarray(super().__call__(*args, **kwargs)), 0)


@register_metric("1 if the map-weighted image raises the confidence, else 0",
                 reference="https://arxiv.org/abs/1710.11063")  # fmt: skip
class IncreaseInConfidence(CamMultImageConfidenceChange):
    """:math:`[\\Delta > 0]` with Δ of :class:`CamMultImageConfidenceChange`, float32."""

    def __call__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        return np.float32(np.asarray(super().__call__(*args, **kwargs)) > 0)
