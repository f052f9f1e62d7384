"""The audit's sanity check: do the maps depend on the model at all?

The model-randomisation test of :class:`camcore.metrics.sanity.SanityCheck` (Adebayo et al.
2018) on a few samples: the weights downstream of the target layer are replaced by Gaussian
noise of the same scale and the same samples are explained again; maps that explain the model
change, so their Spearman rank correlation with the originals is low. The check passes when the
mean correlation is at most ``threshold`` (0.5). With a handful of samples and one random draw
the verdict is noisy (on the demo model, 8 samples: mean correlations of 0.15, 0.28 and 0.53 for
three seeds), so the weights are drawn ``repeats`` (3) times and the correlations pooled.
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
    repeats: int = 3,
) -> dict[str, Any]:
    """Weight randomisation on the first ``n`` samples of ``inputs``; summary.json's ``sanity``.

    Args:
        cam: the audit's CAM object (``camcore.GradCAM(model, layer)`` or another method).
        inputs: the preprocessed model input, (N, ...) array or feeds ``{name: array}``.
        targets: one target per sample (e.g. ``ClassifierOutputTarget(explained_index)``), or None
            for the top-1 class.
        n: samples used (the first n).
        seed: seeds the random weights (draw ``r`` uses ``seed + r``).
        threshold: the largest mean Spearman correlation that passes.
        repeats: independent draws of the random weights, their correlations pooled.

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
    results = [SanityCheck(threshold=threshold, seed=seed + r)(cam, sub, chosen) for r in range(max(1, repeats))]
    rho = np.concatenate([r.spearman for r in results])
    similarity = np.concatenate([r.ssim for r in results])
    return {
        "samples": int(count),
        "method": "model randomisation (weights downstream of the layer), Adebayo et al. 2018",
        "repeats": len(results),
        "randomised_initializers": len(results[0].randomised),
        "spearman_mean": round(float(rho.mean()), 4),
        "spearman_max": round(float(rho.max()), 4),
        "ssim_mean": round(float(similarity.mean()), 4),
        "threshold": threshold,
        "passed": bool(rho.mean() <= threshold),
    }
