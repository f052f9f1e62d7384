"""Ablation-CAM: channel weights from the drop of the target score when each channel of the
*layer* is ablated, re-running only the part of the graph after it (``engine.downstream_scores``,
a model cut at the layer)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from camcore.maps import assemble, project_2d, weighted_layer_map
from camcore.methods.perturbation import ranked_channels
from camcore.methods.registry import MethodContext, register_method

Feeds = Mapping[str, np.ndarray]
#: pytorch-grad-cam's AblationLayer: below the layer minimum when it is not 0
ABLATION_VALUE = 1e7


def _rows(feeds: Feeds, i: int) -> dict[str, np.ndarray]:
    return {k: v[i : i + 1] for k, v in feeds.items()}


def ablation_value(act: np.ndarray) -> float:
    """pytorch-grad-cam's ablated value for one image's layer tensor: 0 when its minimum is 0
    (after a ReLU), else ``min − 1e7``."""
    lo = float(act.min())
    return 0.0 if lo == 0.0 else lo - ABLATION_VALUE


def svd_ranked_channels(grid: np.ndarray, ratio: float) -> np.ndarray:
    """pytorch-grad-cam's ``AblationLayer.activations_to_be_ablated`` for one image (C, h, w):
    the channels whose normalised |activation| falls most inside the EigenCAM mask (> 0.01),
    the top ``ratio·C`` and the bottom ``ratio·C`` (its experimental selection)."""
    proj = np.abs(project_2d(grid[None])[0])
    proj = proj - proj.min()
    mask = proj / proj.max() > 0.01
    scores = []
    for ch in np.abs(grid):
        ch = ch - ch.min()
        ch = ch / np.max(ch)
        scores.append((mask * ch).sum() / ch.sum())
    order = list(np.argsort(np.asarray(scores, dtype=np.float32)))
    k = int(len(order) * ratio)
    return np.asarray(order[::-1][:k] + order[:k], dtype=np.int64)


@register_method("AblationCAM", "ablationcam",
                 "Ablation-CAM: the relative drop of the target score when each channel is ablated",
                 kind="pipeline", needs_gradients=False,
                 reference="https://openaccess.thecvf.com/content_WACV_2020/papers/"
                           "Desai_Ablation-CAM_Visual_Explanations_for_Deep_Convolutional_Network_via_"
                           "Gradient-free_Localization_WACV_2020_paper.pdf")  # fmt: skip
def ablationcam(
    context: MethodContext,
    feeds: Feeds,
    targets: Sequence[Any] | None,
    eigen_smooth: bool,
    ratio_channels_to_ablate: float = 1.0,
    top_k: int | None = None,
    rank_by: str = "activation",
) -> np.ndarray:
    """Ablation-CAM (Desai & Ramaswamy 2020), as pytorch-grad-cam 1.5.7:

    .. math:: w_c = \\frac{y - y_{\\setminus c}}{y}

    with y the target score and :math:`y_{\\setminus c}` the score with channel c of the
    layer set to the ablation value (0 if the layer's minimum is 0, else ``min − 1e7``).
    Only the nodes after the layer re-run (a model cut at the layer, ``batch_size``
    ablated copies at a time). Channels not ablated get weight 0: those outside
    ``ratio_channels_to_ablate`` (pytorch-grad-cam's EigenCAM-based selection) or ``top_k``.
    Token layers (N, T, C) are ablated on their last axis, as ``AblationLayerVit``.

    pytorch-grad-cam's layer re-reads the minimum after the earlier rows of an ablation batch
    were overwritten, so each row goes a further 1e7 lower when the minimum is not 0 (an
    in-place side effect); camcore uses ``min − 1e7`` for every row, so on such layers (none
    after a ReLU) the two can differ slightly.

    Example:
        >>> camcore.AblationCAM("resnet18.onnx", batch_size=64)(x)  # doctest: +SKIP
    """
    engine, batch_size = context.engine, context.batch_size
    ts = engine.targets_for(feeds, targets, context.layers)
    original = engine.scores(feeds, ts, batch_size, context.layers)
    res = context.run(feeds, ts, gradients=False)
    layer_maps = []
    for layer in context.layers:
        act = res.activations[layer]
        grid = context.grid(act, layer)
        if ratio_channels_to_ablate < 1.0:
            channels = np.stack([svd_ranked_channels(g, ratio_channels_to_ablate) for g in grid])
        else:
            channels = ranked_channels(context, feeds, ts, layer, grid, top_k, rank_by)
        axis = context.channel_axis(layer, act) % act.ndim
        weights = np.zeros(grid.shape[:2], np.float64)
        for i in range(act.shape[0]):
            value = ablation_value(act[i])
            ablated = np.full(act.shape[axis], original[i])
            idx_all = channels[i]
            for s in range(0, len(idx_all), batch_size):
                idx = idx_all[s : s + batch_size]
                batch = np.repeat(act[i : i + 1], len(idx), axis=0)
                view = np.moveaxis(batch, axis, 1)
                view[np.arange(len(idx)), idx] = value
                ablated[idx] = engine.downstream_scores(layer, _rows(feeds, i), batch, [ts[i]], len(idx))
            weights[i] = (original[i] - ablated) / original[i]
        layer_maps.append(weighted_layer_map(weights, grid, eigen_smooth))
    return assemble(layer_maps, context.input_size)
