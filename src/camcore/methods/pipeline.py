"""Pipeline methods: each builds the whole explanation from what the :class:`MethodContext`
offers (runs with extra gradients, forward scores, another method's maps).

They return final (N, H, W) maps in [0, 1]. Perturbation methods (ScoreCAM, AblationCAM,
...) plug in the same way (:mod:`camcore.methods.perturbation`): ``context.run(...,
gradients=False)`` for the activations, ``context.engine.scores`` for masked inputs and
``context.engine.downstream_scores`` to re-run only the part of the graph after a layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from camcore.errors import CamcoreError
from camcore.maps import project_2d, scale_cam_image, scale_planes
from camcore.methods.registry import MethodContext, method_by_key, register_method
from camcore.targets import FinerWeightedTarget, Target, softmax, top1_targets

Feeds = Mapping[str, np.ndarray]


@register_method("FullGrad", "fullgrad",
                 "FullGrad: |input × input-gradient| plus |bias × gradient| of every Conv/BatchNorm bias",
                 kind="pipeline", reference="https://arxiv.org/abs/1905.00780")  # fmt: skip
def fullgrad(context: MethodContext, feeds: Feeds, targets: Sequence[Any] | None, eigen_smooth: bool) -> np.ndarray:
    """FullGrad (Srinivas & Fleuret 2019), as pytorch-grad-cam computes it:

    .. math:: L = \\mathrm{s}\\Big(\\sum_{c}\\mathrm{s}(|x \\odot \\nabla_x y|)_c
              + \\sum_{l} \\sum_c \\mathrm{s}(|b^l_c \\, \\nabla_{z^l} y|)_c\\Big)

    with s the per-(image, channel) min-max scaling and bilinear resize, and over every
    bias term b^l with z^l the tensor it is added to: each Conv with a bias (b^l its
    bias, z^l its output) and each BatchNormalization (b^l = β − μ·γ/√(σ² + ε), z^l its
    output). ``target_layers`` is ignored, as in pytorch-grad-cam. pytorch-grad-cam
    takes the biases of ``nn.Conv2d`` and ``nn.BatchNorm2d`` modules; on an export that
    keeps BatchNormalization nodes the two agree exactly; where the exporter folded BN
    into the Conv, the folded bias (b_conv − μ)·γ/√(σ² + ε) + β replaces the two terms. With
    ``eigen_smooth`` the per-channel maps are projected on their first principal component at
    1/8 of the input size, as pytorch-grad-cam does, but at 2 × 2 at least (below 16 px its 1/8
    is a single pixel, whose projection is 0 everywhere).

    Every term flows back through every ReLU below it, and each plane is scaled by its
    single largest value, so FullGrad is sensitive to float32 rounding at ReLU kinks: a
    pre-activation within rounding of 0 can take the other side in onnxruntime than in
    PyTorch and move the whole map (by 8.6e-3 on a randomly initialised ResNet-18 at 224²,
    from one ReLU input at −2.5e-7 in float64 that onnxruntime computes as +6.0e-7; fed
    that one value, pytorch-grad-cam in float64 gives camcore's map to 6e-7).

    Example:
        >>> maps = camcore.FullGrad("resnet18.onnx")(x)  # doctest: +SKIP
    """
    engine = context.engine
    name, x = engine.image_input(feeds)
    if engine.input_layout != "NCHW":
        raise CamcoreError("FullGrad needs an NCHW image input (its input-gradient term is per channel plane)")
    terms = [(tensor, bias) for tensor, bias in engine.bias_terms() if np.any(bias)]  # a zero bias adds 0
    size = (int(x.shape[2]), int(x.shape[3]))
    res = context.run(feeds, targets, layers=[], gradients=False, extra=[name, *(t for t, _ in terms)])
    parts = [scale_planes(np.abs(res.extra[name] * x), size)]
    for tensor, bias in terms:
        grad = res.extra[tensor]
        contrib = np.abs(bias.reshape(1, -1, *(1,) * (grad.ndim - 2)) * grad)
        parts.append(scale_planes(contrib, size).sum(axis=1, keepdims=True))
    stacked = np.concatenate(parts, axis=1)
    if eigen_smooth:  # pytorch-grad-cam projects at 1/8 of the size; under 16 px that is one pixel (a zero map)
        small = (max(size[0] // 8, 2), max(size[1] // 8, 2))
        stacked = project_2d(scale_planes(stacked, small))[:, None]
        stacked = scale_planes(stacked, size)
    return scale_cam_image(stacked.sum(axis=1))


@register_method("RefineCAM", "refinecam",
                 "RefineCAM: the product of a base method's maps over the target layers, rescaled",
                 kind="pipeline",
                 reference="https://arxiv.org/abs/2605.14641")  # fmt: skip
def refinecam(
    context: MethodContext,
    feeds: Feeds,
    targets: Sequence[Any] | None,
    eigen_smooth: bool,
    base_method: str = "gradcam++",
) -> np.ndarray:
    """RefineCAM (pytorch-grad-cam 1.5.7): :math:`L = \\mathrm{s}(\\prod_l M_l)` with M_l the
    base method's [0, 1] map for target layer l alone (default Grad-CAM++): early,
    noisy layers are denoised by the later ones.

    Example:
        >>> camcore.RefineCAM(model, ["layer3_out", "layer4_out"])(x)  # doctest: +SKIP
    """
    maps = [context.method_maps(base_method, feeds, targets, layers=[layer], eigen_smooth=eigen_smooth)
            for layer in context.layers]  # fmt: skip
    return scale_cam_image(np.prod(np.stack(maps), axis=0))


@register_method("FinerCAM", "finercam",
                 "Finer-CAM: explains the gap between the top class and its most similar classes",
                 kind="pipeline", reference="https://arxiv.org/abs/2501.11309")  # fmt: skip
def finercam(
    context: MethodContext,
    feeds: Feeds,
    targets: Sequence[Any] | None,
    eigen_smooth: bool,
    base_method: str = "gradcam",
    alpha: float = 1.0,
    comparison_categories: Sequence[int] = (1, 2, 3),
    target_idx: int | None = None,
) -> np.ndarray:
    """Finer-CAM (Zhang et al. 2025): the base method (Grad-CAM) of the target

    .. math:: T(z) = \\frac{\\sum_j p_j\\,(z_m - \\alpha z_j)}{\\sum_j p_j + 10^{-9}}

    where m is the top class (or ``target_idx``), the j are the classes whose logits
    are the ``comparison_categories``-th closest to z_m, and p = softmax(z)
    (:class:`camcore.targets.FinerWeightedTarget`). Explicit ``targets`` are used as given.

    Example:
        >>> camcore.FinerCAM(model)(x)  # doctest: +SKIP
    """
    if targets is None:
        out = context.engine.outputs_of(feeds, context.layers)
        if out.ndim != 2:
            raise CamcoreError(f"FinerCAM needs an (N, classes) output, got shape {out.shape}")
        k = out.shape[-1]
        cats = [c for c in comparison_categories if c < k]
        ref = out.max(axis=-1) if target_idx is None else out[:, target_idx]
        order = np.argsort(np.abs(out - ref[:, None]), axis=-1)
        targets = [FinerWeightedTarget(int(o[0]), [int(o[c]) for c in cats], alpha) for o in order]
    return context.method_maps(base_method, feeds, targets, eigen_smooth=eigen_smooth)


@register_method("GuidedGradCAM", "guided-gradcam",
                 "Guided Grad-CAM: guided-backprop input gradients × the Grad-CAM map (summed |·| over channels)",
                 kind="pipeline", reference="https://arxiv.org/abs/1610.02391")  # fmt: skip
def guided_gradcam(
    context: MethodContext, feeds: Feeds, targets: Sequence[Any] | None, eigen_smooth: bool
) -> np.ndarray:
    """Guided Grad-CAM (Selvaraju et al. 2017; captum's ``GuidedGradCam``):
    :math:`L = \\mathrm{s}(M \\sum_c |\\mathrm{GB}_c|)` with M the Grad-CAM map at input size
    and GB the guided-backprop gradient of the score with respect to the input (the
    graph differentiated with the guided ReLU rule). The colour attribution
    ``GB · M`` (N, C, H, W) is left in ``cam.guided_gradcam``.

    Example:
        >>> camcore.GuidedGradCAM(model)(x)  # doctest: +SKIP
    """
    name, _ = context.engine.image_input(feeds)
    if context.engine.input_layout != "NCHW":
        raise CamcoreError("GuidedGradCAM needs an NCHW image input")
    gb = context.run(feeds, targets, layers=[], gradients=False, extra=[name], guided_relu=True).extra[name]
    grad_cam = context.method_maps("gradcam", feeds, targets, eigen_smooth=eigen_smooth)
    attribution = gb * grad_cam[:, None]
    context.keep("guided_gradcam", attribution)
    return scale_cam_image(np.abs(attribution).sum(axis=1))


# ---------------------------------------------------------------------- SESS
def window_starts(length: int, step: int, window: int) -> list[int]:
    """Window offsets along one axis; the last window is shifted back inside the image."""
    starts = []
    for start in range(0, length, step):
        if start + window >= length:
            starts.append(max(length - window, 0))
            break
        starts.append(start)
    return starts


def _resize_short_side(x: np.ndarray, short: int) -> np.ndarray:
    """(C, H, W) resized so that min(H, W) = ``short`` (bilinear, half-pixel, as torchvision)."""
    h, w = x.shape[1:]
    size = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
    if size == (h, w):
        return x
    planes = [cv2.resize(p, (size[1], size[0]), interpolation=cv2.INTER_LINEAR) for p in x]
    return np.stack(planes).astype(x.dtype)


#: a patch's place: (x1, y1, width, height of the scaled image it was cut from)
Coord = tuple[int, int, int, int]


def _patches(img: np.ndarray, sizes: Sequence[int], window: int, step: int) -> tuple[np.ndarray, list[Coord]]:
    """Every scale's square windows of one (C, H, W) image, (P, C, window, window), and their places."""
    patches, coords = [], []
    for s in sizes:
        if s < window:
            raise CamcoreError(f"every SESS scale must be at least the window size {window}, got {s}")
        scaled = _resize_short_side(img, s)
        sh, sw = scaled.shape[1:]
        for y1 in window_starts(sh, step, window):
            for x1 in window_starts(sw, step, window):
                patches.append(scaled[:, y1 : y1 + window, x1 : x1 + window])
                coords.append((x1, y1, sw, sh))
    return np.stack(patches), coords


def _top1(context: MethodContext, name: str, x: np.ndarray, window: int, base_method: str) -> list[Target]:
    """Each image's top-1 class target. When the window covers the image and the base method is a
    layer method, its own run gives the outputs: the patches then share that one session."""
    base = method_by_key(base_method)
    if base.kind == "layer" and x.shape[2:] == (window, window):
        res = context.run({name: x}, None, gradients=base.needs_gradients, hvp=base.needs_hvp)
        out = res.outputs[context.engine.output_index]
    else:
        out = context.engine.outputs_of({name: x})
    return top1_targets(out.reshape(len(x), -1))


def _patch_scores(outs: np.ndarray, target: Any, use_softmax_scores: bool) -> np.ndarray:
    """max(T(softmax(output)), 0) per patch (T on the raw output without ``use_softmax_scores``)."""
    if use_softmax_scores:
        outs = softmax(outs.astype(np.float64), axis=-1)
    return np.maximum(np.asarray([float(target(row)) for row in outs]), 0)


def _explain_patches(
    context: MethodContext, base_method: str, name: str, batch: np.ndarray, target: Any, eigen_smooth: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The base method's maps of ``batch`` for ``target``, and the explained output of that run."""
    cams = context.method_maps(base_method, {name: batch}, [target] * len(batch), eigen_smooth=eigen_smooth)
    return cams, context.last_outputs()


@register_method("SESS", "sess",
                 "SESS: a base method over multi-scale sliding-window patches, fused by patch score",
                 kind="pipeline", reference="https://arxiv.org/abs/2207.01769")  # fmt: skip
def sess(
    context: MethodContext,
    feeds: Feeds,
    targets: Sequence[Any] | None,
    eigen_smooth: bool,
    base_method: str = "gradcam",
    scales: Sequence[int] | None = None,
    num_scales: int = 12,
    scale_step_ratio: float = 2.0 / 7.0,
    window_size: int | None = None,
    step_size: int | None = None,
    pre_filter_ratio: float = 0.0,
    theta: float = 0.0,
    pool: str = "mean",
    smooth: bool = True,
    use_softmax_scores: bool = True,
) -> np.ndarray:
    """SESS (Tursun et al. 2022), pytorch-grad-cam's wrapper: the image is resized so its short
    side takes each scale ``window + i·round(ratio·window)``; square windows slide over every
    scale; each patch is scored (the target on the softmax of the output, clipped at 0),
    its base-method map weighted by score / max score, pasted back at its place and
    resized to the image; the pasted maps are averaged where they exceed ``theta``
    (``pool="mean"``) or maxed, blurred (Gaussian 11×11, σ = 5) and scaled to [0, 1].
    Patches are scored and explained ``batch_size`` at a time (the CAM's ``batch_size``,
    default 32 as pytorch-grad-cam's SESS).

    pytorch-grad-cam scores every patch with a forward pass, then explains them. With a
    layer base method and no ``pre_filter_ratio`` every patch is explained anyway, so
    camcore scores the patches on the outputs of the base method's own runs: the network
    runs once per patch, not twice. The pasting follows the score order either way.

    Example:
        >>> camcore.SESS(model, base_method=camcore.GradCAM, num_scales=3)(x)  # doctest: +SKIP
    """
    if pool not in ("mean", "max"):
        raise CamcoreError(f"pool must be 'mean' or 'max', not {pool!r}")
    name, x = context.engine.image_input(feeds)
    if len(feeds) != 1 or context.engine.input_layout != "NCHW":
        raise CamcoreError("SESS needs a model with a single NCHW image input")
    n, _, height, width = x.shape
    batch_size = context.batch_size
    window = window_size or min(height, width)
    step = step_size or window
    step_px = round(window * scale_step_ratio)
    sizes = list(scales) if scales is not None else [window + step_px * i for i in range(num_scales)]
    if targets is None:
        targets = _top1(context, name, x, window, base_method)
    one_pass = pre_filter_ratio == 0 and method_by_key(base_method).kind == "layer"
    maps = []
    for i in range(n):
        target = targets[i]
        batch, coords = _patches(x[i], sizes, window, step)
        chunks = range(0, len(batch), batch_size)
        if one_pass:
            done = [_explain_patches(context, base_method, name, batch[j : j + batch_size], target, eigen_smooth)
                    for j in chunks]  # fmt: skip
            cams = np.concatenate([c for c, _ in done])
            outs = np.concatenate([o for _, o in done])
        else:
            outs = np.concatenate([context.engine.outputs_of({name: batch[j : j + batch_size]}) for j in chunks])
        scores = _patch_scores(outs, target, use_softmax_scores)
        order = np.argsort(scores, kind="stable")[int(len(scores) * pre_filter_ratio) :]
        top = scores[order[-1]]
        weights = scores[order] / top if top > 0 else np.ones(len(order))
        fused = _Fusion((height, width), pool, theta)
        for j in range(0, len(order), batch_size):
            idx = order[j : j + batch_size]
            part = cams[idx] if one_pass else _explain_patches(context, base_method, name, batch[idx], target,
                                                               eigen_smooth)[0]  # fmt: skip
            for cam, wgt, k in zip(part, weights[j : j + batch_size], idx):
                fused.paste(cam, float(wgt), coords[k])
        maps.append(fused.result(smooth))
    return scale_cam_image(np.asarray(maps, np.float32))


class _Fusion:
    """SESS's fusion of weighted patch maps into one (H, W) map: the mean of the pasted values
    above ``theta`` (``pool="mean"``) or their maximum."""

    def __init__(self, size: tuple[int, int], pool: str, theta: float) -> None:
        self.size, self.pool, self.theta = size, pool, theta
        self.total = np.zeros(size, np.float32)
        self.counts = np.zeros(size, np.float32)

    def paste(self, cam: np.ndarray, weight: float, coord: Coord) -> None:
        """Paste ``cam × weight`` at its place in the scaled image, resized to the image."""
        x1, y1, sw, sh = coord
        full = np.zeros((sh, sw), np.float32)
        full[y1 : y1 + cam.shape[0], x1 : x1 + cam.shape[1]] = cam * np.float32(weight)
        pasted = cv2.resize(full, (self.size[1], self.size[0]))
        if self.pool == "max":
            np.maximum(self.total, pasted, out=self.total)
        else:
            mask = pasted > self.theta
            self.total[mask] += pasted[mask]
            self.counts += mask

    def result(self, smooth: bool) -> np.ndarray:
        """The fused map, blurred (Gaussian 11×11, σ = 5) with ``smooth``."""
        t, c = self.total, self.counts
        fused: np.ndarray = t if self.pool == "max" else np.divide(t, c, out=np.zeros_like(t), where=c > 0)
        # cv2's stub types the positional 0 as ``dst``, not sigmaY; kept as is (same result as sigmaY=0)
        return cv2.GaussianBlur(fused, (11, 11), 5.0, sigmaY=0) if smooth else fused
