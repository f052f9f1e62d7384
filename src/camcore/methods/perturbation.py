"""The Score-CAM family: channel weights from forward passes on the input masked by each channel.

ScoreCAM, SSCAM and ISCAM mask the *input* with each (upsampled, min-max normalised)
activation channel and score the masked images (Ablation-CAM, which perturbs the *layer*, is
:mod:`camcore.methods.ablation`). The weights w (N, C) then make the map through the map
assembly, as in pytorch-grad-cam: :math:`L = \\mathrm{s}(\\max(\\sum_c w_c A_c, 0))`, per target
layer, averaged.

Memory: the masked inputs are generated per batch of ``batch_size`` (the CAM object's
``batch_size``), so the peak is O(batch_size · C_in · H · W), never O(channels · H · W) as in
pytorch-grad-cam's ScoreCAM, which materialises every masked input at once.

Speed: ScoreCAM and ISCAM score each distinct channel once: channels with equal
activations (dead channels, all zero, are the common case) make equal masks, hence equal
scores (exact; SSCAM's noise differs per channel, so it scores every one). ``top_k`` scores
only the k channels with the largest mean activation (``rank_by="activation"``) or
Grad-CAM weight (``rank_by="gradient"``, one extra backward run); the others get weight 0.
``top_k=None`` (default) scores every channel.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from camcore.blas import serial_blas
from camcore.errors import CamcoreError
from camcore.maps import assemble, weighted_layer_map
from camcore.methods.registry import MethodContext, register_method
from camcore.targets import softmax

Feeds = Mapping[str, np.ndarray]


# ---------------------------------------------------------------------- helpers
@functools.cache
def interp_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) bilinear weights with ``align_corners=True`` (torch ``UpsamplingBilinear2d``).

    Output i samples the input at ``i · (n_in − 1) / (n_out − 1)``.

    Example:
        >>> interp_matrix(2, 3).tolist()
        [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    """
    m = np.zeros((n_out, n_in), np.float64)
    if n_in == 1 or n_out == 1:
        m[:, 0] = 1.0
    else:
        pos = np.arange(n_out) * (n_in - 1) / (n_out - 1)
        lo = np.minimum(np.floor(pos).astype(int), n_in - 2)
        frac = pos - lo
        m[np.arange(n_out), lo] = 1.0 - frac
        m[np.arange(n_out), lo + 1] += frac
    out = m.astype(np.float32)
    out.flags.writeable = False  # shared by every call (cached)
    return out


def upsample(planes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(B, h, w) -> (B, H, W), bilinear with aligned corners: :math:`R_y P R_x^T`
    (the second product as one (B·H, w) × (w, W) matrix product)."""
    b, h, w = planes.shape
    ry, rx = interp_matrix(h, size[0]), interp_matrix(w, size[1])
    with serial_blas():
        rows = np.matmul(ry, planes.astype(np.float32, copy=False))
        return (rows.reshape(b * size[0], w) @ rx.T).reshape(b, *size)


def normalise_channels(act: np.ndarray) -> np.ndarray:
    """Per-(image, channel) min-max: :math:`(A - \\min A) / (\\max A - \\min A + 10^{-8})`."""
    flat = act.reshape(*act.shape[:2], -1)
    lo = flat.min(axis=-1)[..., None, None]
    hi = flat.max(axis=-1)[..., None, None]
    out = np.subtract(act, lo, dtype=np.float32)
    out /= hi - lo + np.float32(1e-8)
    return out


def _image_nchw(context: MethodContext, feeds: Feeds) -> None:
    """The masks multiply (C, H, W) images: refuse other layouts in one line."""
    context.engine.image_input(feeds)
    if context.engine.input_layout != "NCHW":
        raise CamcoreError("the Score-CAM family masks NCHW image inputs; this model's image input is NHWC")


def ranked_channels(
    context: MethodContext,
    feeds: Feeds,
    targets: list[Any],
    layer: str,
    grid: np.ndarray,
    top_k: int | None,
    rank_by: str,
) -> np.ndarray:
    """(N, k) channel indices to perturb: all of them, or the top ``top_k`` by ``rank_by``."""
    n, c = grid.shape[:2]
    if top_k is None or top_k >= c:
        return np.tile(np.arange(c), (n, 1))
    if top_k < 1:
        raise CamcoreError(f"top_k must be >= 1 or None, got {top_k}")
    if rank_by == "activation":
        rank = grid.reshape(n, c, -1).mean(axis=-1)
    elif rank_by == "gradient":
        grads = context.engine.run(feeds, targets, layers=[layer]).gradients[layer]
        rank = context.grid(grads, layer).reshape(n, c, -1).mean(axis=-1)
    else:
        raise CamcoreError(f"rank_by must be 'activation' or 'gradient', not {rank_by!r}")
    return np.argsort(-rank, axis=1, kind="stable")[:, :top_k]


# ---------------------------------------------------------------------- the Score-CAM family
#: (masks (b, H, W), the layer's (h, w)) -> the perturbed masks to score, averaged
MaskSamples = Callable[[np.ndarray, tuple[int, int]], Iterable[np.ndarray]]


def distinct_planes(planes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first of each distinct plane of (k, ...), in order, and for every plane the
    position of its distinct one among them.

    Example:
        >>> first, of = distinct_planes(np.array([[0.0, 0.0], [1.0, 2.0], [0.0, 0.0]]))
        >>> first.tolist(), of.tolist()
        ([0, 1], [0, 1, 0])
    """
    _, first, inverse = np.unique(planes.reshape(len(planes), -1), axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return first[order], rank[inverse.reshape(-1)]


def masked_scores(
    context: MethodContext,
    feeds: Feeds,
    grid: np.ndarray,
    channels: np.ndarray,
    targets: list[Any],
    samples: MaskSamples,
    batch_size: int,
    distinct: bool = False,
) -> np.ndarray:
    """Mean target score over ``samples`` of each channel's masked input, (N, k).

    For image i and channel c the mask is :math:`M_c` = the channel upsampled to the input
    size and min-max normalised; ``samples(mask_batch)`` yields perturbed versions of a
    batch of masks (one for ScoreCAM, noisy ones for SS-CAM, scaled ones for IS-CAM); each
    multiplies the image, :math:`x \\odot m`. Only ``batch_size`` masks exist at once.
    With ``distinct`` (deterministic samples), equal channels give equal masks and inputs,
    hence equal scores: each distinct channel is scored once and its score copied.
    """
    name, x = context.engine.image_input(feeds)
    out = np.zeros(channels.shape, np.float64)
    for i in range(x.shape[0]):
        side = {k: v[i : i + 1] for k, v in feeds.items() if k != name}
        planes = grid[i, channels[i]]
        first, of = distinct_planes(planes) if distinct else (np.arange(len(planes)), np.arange(len(planes)))
        scores = _image_scores(context, name, x[i], side, planes[first], targets[i], samples, batch_size)
        out[i] = scores[of]
    return out


def _image_scores(
    context: MethodContext,
    name: str,
    img: np.ndarray,
    side: Feeds,
    planes: np.ndarray,
    target: Any,
    samples: MaskSamples,
    batch_size: int,
) -> np.ndarray:
    """Mean target score over ``samples`` of each plane's mask on one (C, H, W) image, (k,).
    The masked images of a batch are written into one buffer, reused by every batch."""
    size = (int(img.shape[1]), int(img.shape[2]))
    grid_hw = (int(planes.shape[1]), int(planes.shape[2]))
    buf = np.empty((min(batch_size, len(planes)), *img.shape), img.dtype)
    rep = {k: np.repeat(v, len(buf), 0) for k, v in side.items()}
    out = np.empty(len(planes), np.float64)
    for s in range(0, len(planes), batch_size):
        masks = normalise_channels(upsample(planes[s : s + batch_size], size)[None])[0]
        b = len(masks)
        batch = {name: buf[:b], **{k: v[:b] for k, v in rep.items()}}
        total = np.zeros(b, np.float64)
        count = 0
        for m in samples(masks, grid_hw):
            np.multiply(img, m[:, None], out=buf[:b])
            total += context.engine.scores(batch, [target] * b, b, context.layers)
            count += 1
        out[s : s + b] = total / count
    return out


def _score_family(
    context: MethodContext,
    feeds: Feeds,
    targets: Sequence[Any] | None,
    eigen_smooth: bool,
    samples: MaskSamples,
    top_k: int | None,
    rank_by: str,
    distinct: bool,
) -> np.ndarray:
    """w = softmax over the scored channels of their mean masked scores; the rest get 0."""
    _image_nchw(context, feeds)
    ts = context.engine.targets_for(feeds, targets, context.layers)
    res = context.run(feeds, ts, gradients=False)
    layer_maps = []
    for layer in context.layers:
        grid = context.grid(res.activations[layer], layer)
        channels = ranked_channels(context, feeds, ts, layer, grid, top_k, rank_by)
        scores = masked_scores(context, feeds, grid, channels, ts, samples, context.batch_size, distinct)
        weights = np.zeros(grid.shape[:2], np.float64)
        np.put_along_axis(weights, channels, softmax(scores), axis=1)
        layer_maps.append(weighted_layer_map(weights, grid, eigen_smooth))
    return assemble(layer_maps, context.input_size)


def score_variant(*, deterministic: bool) -> Callable[[Callable[..., MaskSamples]], Callable[..., np.ndarray]]:
    """A Score-CAM variant's pipeline from its mask perturbation: ``perturb(**options)`` gives
    the :data:`MaskSamples` whose scores are averaged. The pipeline also takes ``top_k`` and
    ``rank_by``; ``deterministic`` perturbations (equal masks give equal samples) score each
    distinct channel once. The pipeline carries the perturbation's name and docstring."""

    def wrap(perturb: Callable[..., MaskSamples]) -> Callable[..., np.ndarray]:
        def pipeline(
            context: MethodContext,
            feeds: Feeds,
            targets: Sequence[Any] | None,
            eigen_smooth: bool,
            top_k: int | None = None,
            rank_by: str = "activation",
            **options: Any,
        ) -> np.ndarray:
            samples = perturb(**options)
            return _score_family(context, feeds, targets, eigen_smooth, samples, top_k, rank_by, deterministic)

        for attr in ("__name__", "__qualname__", "__doc__", "__module__"):
            setattr(pipeline, attr, getattr(perturb, attr))
        # the options, declared once: the perturbation's parameters, then top_k and rank_by
        fixed = [p for p in inspect.signature(pipeline).parameters.values() if p.kind is not p.VAR_KEYWORD]
        own = list(inspect.signature(perturb).parameters.values())
        params = [*fixed[:4], *(p.replace(kind=p.KEYWORD_ONLY) for p in (*own, *fixed[4:]))]
        pipeline.__signature__ = inspect.Signature(params, return_annotation=np.ndarray)  # type: ignore[attr-defined]
        return pipeline

    return wrap


def _check_samples(num_samples: int) -> None:
    if num_samples < 1:
        raise CamcoreError(f"num_samples must be >= 1, got {num_samples}")


@register_method("ScoreCAM", "scorecam",
                 "Score-CAM: softmax over channels of the target score of the image masked by each channel",
                 kind="pipeline", needs_gradients=False,
                 reference="https://arxiv.org/abs/1910.01279")  # fmt: skip
@score_variant(deterministic=True)
def scorecam() -> MaskSamples:
    """Score-CAM (Wang et al. 2020), as pytorch-grad-cam 1.5.7:

    .. math:: M_c = \\frac{U(A_c) - \\min U(A_c)}{\\max U(A_c) - \\min U(A_c) + 10^{-8}},\\quad
              w_c = \\mathrm{softmax}_c\\big(T(f(x \\odot M_c))\\big)

    with U the bilinear upsampling to the input size (aligned corners, as torch's
    ``UpsamplingBilinear2d``) and T the target on the raw output (top-1 logit by default).
    Masked inputs exist ``batch_size`` at a time; equal channels (dead, all-zero ones) are
    scored once, as their masks are equal. ``top_k``: score only the k channels with the
    largest mean activation (``rank_by="activation"``) or Grad-CAM weight
    (``rank_by="gradient"``); the softmax runs over those, the others get weight 0.

    Example:
        >>> camcore.ScoreCAM("resnet18.onnx", batch_size=64, top_k=128)(x)  # doctest: +SKIP
    """
    return lambda masks, _hw: [masks]


@register_method("SSCAM", "sscam",
                 "SS-CAM: Score-CAM with the scores averaged over noisy copies of each mask",
                 kind="pipeline", needs_gradients=False, random=True,
                 reference="https://arxiv.org/abs/2006.14255")  # fmt: skip
@score_variant(deterministic=False)
def sscam(num_samples: int = 35, std: float = 2.0, seed: int | None = None) -> MaskSamples:
    """SS-CAM (Wang et al. 2020), torchcam's definition (defaults ``num_samples=35, std=2.0``):

    .. math:: w_c = \\mathrm{softmax}_c\\Big(\\frac{1}{S}\\sum_{s=1}^{S}
              T\\big(f(x \\odot (M_c + U(\\delta_s)))\\big)\\Big),\\quad
              \\delta_s \\sim \\mathcal{N}(0, \\sigma^2)

    with :math:`M_c` Score-CAM's mask and :math:`\\delta_s` drawn at the layer's resolution
    and upsampled (torchcam adds it to the normalised channel before upsampling; with a
    linear upsampling the only difference is that camcore normalises after it, as Score-CAM).
    ``std=0`` gives :class:`ScoreCAM` exactly. torchcam upsamples with half-pixel centres;
    camcore shares Score-CAM's aligned corners. Every channel is scored (the noise differs).

    Example:
        >>> camcore.SSCAM("resnet18.onnx", num_samples=8, seed=0)(x)  # doctest: +SKIP
    """
    _check_samples(num_samples)
    rng = np.random.default_rng(seed)

    def noisy(m: np.ndarray, grid_hw: tuple[int, int]) -> Iterable[np.ndarray]:
        for _ in range(num_samples):
            if not std:
                yield m
                continue
            small = (*m.shape[:1], *grid_hw)
            yield m + upsample(rng.normal(0.0, std, small).astype(np.float32), (m.shape[1], m.shape[2]))

    return noisy


@register_method("ISCAM", "iscam",
                 "IS-CAM: Score-CAM with the scores integrated along a path of growing masks",
                 kind="pipeline", needs_gradients=False,
                 reference="https://arxiv.org/abs/2010.03023")  # fmt: skip
@score_variant(deterministic=True)
def iscam(num_samples: int = 10) -> MaskSamples:
    """IS-CAM (Naidu et al. 2020), torchcam 0.5's definition (default ``num_samples=10``):

    .. math:: w_c = \\mathrm{softmax}_c\\Big(\\frac{1}{S}\\sum_{s=1}^{S}
              T\\big(f(x \\odot \\kappa_s M_c)\\big)\\Big),\\quad \\kappa_s = \\sum_{j=1}^{s} \\frac{j}{S}

    (torchcam's cumulative coefficients). ``num_samples=1`` gives :class:`ScoreCAM` exactly.

    Example:
        >>> camcore.ISCAM("resnet18.onnx", num_samples=4)(x)  # doctest: +SKIP
    """
    _check_samples(num_samples)
    coeffs = np.cumsum(np.arange(1, num_samples + 1) / num_samples)
    return lambda m, _hw: (m if k == 1.0 else (m * np.float32(k)) for k in coeffs)
