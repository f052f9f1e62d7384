"""Deletion and insertion (Petsiuk et al. 2018, RISE, https://arxiv.org/abs/1806.07421;
Xplique's ``Deletion`` / ``Insertion``): pixels are removed from (or inserted into) the
image in the order of the map, and the area under the score curve is measured."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from camcore.engine import Engine
from camcore.metrics.registry import engine_of, feeds_of, register_metric, score_images


def causal_curve(
    engine: Engine,
    feeds: Mapping[str, np.ndarray],
    cams: np.ndarray,
    targets: Sequence[Any],
    steps: int,
    baseline: float | np.ndarray,
    insert: bool,
    batch_size: int,
) -> np.ndarray:
    """(N, steps + 1) scores as the top ``k·HW/steps`` pixels of the map, k = 0…steps, are
    replaced by ``baseline`` (deletion) or copied from the image onto the baseline (insertion).
    Ties are broken by pixel order; only ``batch_size`` perturbed images exist at once."""
    name, x = engine.image_input(feeds)
    n, _, h, w = x.shape
    base = np.broadcast_to(np.asarray(baseline, x.dtype), x.shape[1:])
    counts = np.round(np.linspace(0, h * w, steps + 1)).astype(int)
    step = batch_size
    curves = np.zeros((n, steps + 1), np.float64)
    for i in range(n):
        order = np.argsort(-np.asarray(cams[i], np.float64).reshape(-1), kind="stable")
        rank = np.empty(h * w, np.int64)
        rank[order] = np.arange(h * w)
        rank = rank.reshape(h, w)
        row = {k: v[i : i + 1] for k, v in feeds.items()}
        for s in range(0, steps + 1, step):
            ks = counts[s : s + step]
            chosen = rank[None] < ks[:, None, None]  # (b, H, W): the first k pixels
            src, dst = (x[i], base) if insert else (base, x[i])
            imgs = np.where(chosen[:, None], src[None], dst[None])
            curves[i, s : s + step] = score_images(engine, row, name, imgs, [targets[i]], len(ks))
    return curves


def auc(curve: np.ndarray) -> np.ndarray:
    """Trapezoidal area under (N, K + 1) curves sampled uniformly on [0, 1]."""
    return ((curve[:, 1:] + curve[:, :-1]) / 2).mean(axis=1)


class _Causal:
    insert = False

    def __init__(self, steps: int = 32, baseline: float | np.ndarray = 0.0, batch_size: int | None = None) -> None:
        self.steps, self.baseline, self.batch_size = steps, baseline, batch_size
        self.curves: np.ndarray | None = None

    def __call__(self, input_tensor: Any, cams: np.ndarray, targets: Sequence[Any] | None, model: Any) -> np.ndarray:
        engine = engine_of(model)
        feeds = feeds_of(engine, input_tensor)
        ts = engine.targets_for(feeds, targets)
        batch_size = self.batch_size or int(getattr(model, "batch_size", 32))  # a CAM's own batch size
        self.curves = causal_curve(engine, feeds, cams, ts, self.steps, self.baseline, self.insert, batch_size)
        return auc(self.curves)


@register_metric("Deletion AUC: the score as the most relevant pixels are removed first", better="lower",
                 reference="https://arxiv.org/abs/1806.07421")  # fmt: skip
class DeletionAUC(_Causal):
    """:math:`\\frac{1}{K}\\sum_k \\frac{s_k + s_{k+1}}{2}`, with :math:`s_k` the target score
    of the image whose top ``k/K`` of pixels (by the map) are set to ``baseline``. Lower is
    better. The curves are kept in ``.curves`` (N, K + 1). Use a softmax target for RISE's
    probability curves.

    Example:
        >>> DeletionAUC(steps=16)(x, maps, [ClassifierOutputSoftmaxTarget(281)], cam)  # doctest: +SKIP
    """


@register_metric("Insertion AUC: the score as the most relevant pixels are inserted first",
                 reference="https://arxiv.org/abs/1806.07421")  # fmt: skip
class InsertionAUC(_Causal):
    """As :class:`DeletionAUC`, from the ``baseline`` image with the top ``k/K`` pixels copied
    from the image (RISE inserts into a blurred copy: pass it as ``baseline``). Higher is better."""

    insert = True
