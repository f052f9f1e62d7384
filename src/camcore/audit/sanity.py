"""The audit's sanity check: do the maps depend on the model at all?

The model-randomisation test of :class:`camcore.metrics.sanity.SanityCheck` (Adebayo et al.
2018) on a few samples: the weights downstream of the target layer are replaced by Gaussian
noise of the same scale and the same samples are explained again; maps that explain the model
change, so their Spearman rank correlation with the originals is low. The check passes when the
mean correlation is at most ``threshold`` (0.5).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from camcore.metrics.sanity import SanityCheck

__all__ = ["sanity_check"]


def sanity_check(
    cam: Any,
    inputs: np.ndarray | Mapping[str, np.ndarray],
    targets: Sequence[Any] | None = None,
    *,
    n: int = 8,
    seed: int = 0,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Weight randomisation on the first ``n`` samples of ``inputs``; summary.json's ``sanity``.

    Args:
        cam: the audit's CAM object (``camcore.GradCAM(model, layer)`` or another method).
        inputs: the preprocessed model input, (N, ...) array or feeds ``{name: array}``.
        targets: one target per sample (e.g. ``ClassifierOutputTarget(explained_index)``), or None
            for the top-1 class.
        n: samples used (the first n).
        seed: seeds the random weights.
        threshold: the largest mean Spearman correlation that passes.

    Returns:
        ``{"samples", "method", "randomised_initializers", "spearman_mean", "spearman_max",
        "ssim_mean", "threshold", "passed"}``.

    Example:
        >>> cam = camcore.GradCAM("model.onnx", "layer4_out")                       # doctest: +SKIP
        >>> sanity_check(cam, x, [ClassifierOutputTarget(i) for i in idx])["passed"]  # doctest: +SKIP
        True
    """
    sub: np.ndarray | dict[str, np.ndarray]
    if isinstance(inputs, Mapping):
        feeds = {k: np.asarray(v)[:n] for k, v in inputs.items()}
        sub, count = feeds, len(next(iter(feeds.values())))
    else:
        sub = np.asarray(inputs)[:n]
        count = len(sub)
    chosen = None if targets is None else list(targets)[:n]
    result = SanityCheck(threshold=threshold, seed=seed)(cam, sub, chosen)
    return {
        "samples": int(count),
        "method": "model randomisation (weights downstream of the layer), Adebayo et al. 2018",
        "randomised_initializers": len(result.randomised),
        "spearman_mean": round(float(result.spearman.mean()), 4),
        "spearman_max": round(float(result.spearman.max()), 4),
        "ssim_mean": round(float(result.ssim.mean()), 4),
        "threshold": threshold,
        "passed": not result.flagged,
    }
