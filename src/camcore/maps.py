"""The map assembly: the one definition of how activations, gradients and a method's weights
become the final map. The CAM classes, Score-CAM and Ablation-CAM, video and the exported
CAM model all follow it; change it here and only here.

Notation: ``A`` a target layer's activation arranged as (N, C, *spatial) (:func:`arrange`),
``w`` per-channel weights (N, C), ``s`` the per-image min-max scaling
:math:`s(M) = (M - \\min M) / (10^{-7} + \\max (M - \\min M))` and ``R`` the bilinear resize
(OpenCV ``INTER_LINEAR``, half-pixel centres) to the input's spatial size, read from the
input's own layout (NCHW or NHWC, :func:`spatial_size`).

1. **Layout.** A layer tensor is arranged as (N, C, *spatial) from its :class:`LayerLayout`:
   channels first (NCHW, or (N, C, L) as one row), channels last (NHWC) or transformer
   tokens (N, T, C) laid on the grid their count and the input's aspect ratio imply
   (:func:`tokens_to_grid`), or by the user's ``reshape_transform``. The layout is read off
   the graph (:func:`camcore.graph.layouts.layer_layouts`), never assumed from the rank
   where the graph says otherwise.
2. **Layer map.** A method gives per-channel contributions (N, C, *spatial), e.g.
   :math:`w_c A_c` (:func:`weighted_activations`), reduced over channels by
   :func:`reduce_channels`: :math:`M = \\sum_c w_c A_c`, or with ``eigen_smooth`` their
   first principal component (:func:`project_2d`). Some methods give the map M directly.
3. **Final map** (:func:`assemble`), pytorch-grad-cam 1.5's aggregation over the layers l:

   .. math:: \\mathrm{cam} = s\\Big(\\frac{1}{L}\\sum_l \\max\\big(R\\, s(\\max(M_l, 0)), 0\\big)\\Big)

   in [0, 1] at the input's spatial size. :func:`assemble_unscaled` leaves out both
   scalings, :math:`\\frac{1}{L}\\sum_l R\\max(M_l, 0)`, for callers that normalise across
   many images or frames (video, the dataset audit).

Example:
    >>> grid = arrange(act, LayerLayout("channels_first"), (224, 224))       # doctest: +SKIP
    >>> m = weighted_layer_map(grad.mean(axis=(2, 3)), grid)                # Grad-CAM's M
    >>> cam = assemble([m], (224, 224))                                      # (N, 224, 224)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from camcore.blas import serial_blas
from camcore.errors import CamcoreError

__all__ = [
    "InputLayout",
    "LayerLayout",
    "ReshapeTransform",
    "arrange",
    "assemble",
    "assemble_unscaled",
    "centred_samples",
    "project_2d",
    "reduce_channels",
    "scale_cam_image",
    "scale_planes",
    "spatial_size",
    "token_grid",
    "tokens_to_grid",
    "weighted_activations",
    "weighted_layer_map",
]

ReshapeTransform = Callable[[np.ndarray], np.ndarray]
#: the layout of an image input: channels second (NCHW) or last (NHWC)
InputLayout = Literal["NCHW", "NHWC"]
LayerKind = Literal["channels_first", "channels_last", "tokens"]


# ---------------------------------------------------------------------- 1. layouts
@dataclass(frozen=True)
class LayerLayout:
    """Which axes of a layer tensor hold the channels and which the spatial grid.

    ``channels_first``: (N, C, *spatial), NCHW, or (N, C, L) sequences (a row: text models
    whose height collapses to 1); ``channels_last``: (N, *spatial, C), NHWC; ``tokens``:
    (N, T, C) transformer tokens, laid on a grid by :func:`tokens_to_grid`.

    Example:
        >>> LayerLayout("channels_last").arrange(np.zeros((2, 7, 7, 64)), None).shape
        (2, 64, 7, 7)
    """

    kind: LayerKind = "channels_first"

    @staticmethod
    def of(array: np.ndarray) -> LayerLayout:
        """The layout a tensor's rank implies when the graph says nothing (see
        :func:`camcore.graph.layouts.layer_layouts`): (N, T, C) tokens at rank 3, channels
        first otherwise."""
        return LayerLayout("tokens" if array.ndim == 3 else "channels_first")

    @property
    def channel_axis(self) -> int:
        """The axis of the channels in the tensor as the model gives it."""
        return 1 if self.kind == "channels_first" else -1

    def arrange(self, array: np.ndarray, input_hw: tuple[int, int] | None) -> np.ndarray:
        """``array`` as (N, C, *spatial); a sequence (N, C, L) as (N, C, 1, L), a row of the image."""
        if self.kind == "tokens":
            return tokens_to_grid(array, input_hw)
        if self.kind == "channels_last":
            array = np.moveaxis(array, -1, 1)
        return array[:, :, None, :] if array.ndim == 3 else array


def arrange(
    array: np.ndarray,
    layout: LayerLayout | None,
    input_hw: tuple[int, int] | None,
    reshape_transform: ReshapeTransform | None = None,
) -> np.ndarray:
    """A layer tensor as (N, C, *spatial): the user's ``reshape_transform`` when given,
    else its ``layout`` (by default the one its rank implies, :meth:`LayerLayout.of`). A
    float16 model's tensors are widened to float32 first: numpy computes in float16 many times
    slower, and the map is float32 anyway."""
    if array.dtype == np.float16:
        array = array.astype(np.float32)
    if reshape_transform is not None:
        return np.asarray(reshape_transform(array))
    return (layout or LayerLayout.of(array)).arrange(array, input_hw)


#: the leading tokens that are not patches, fewest first: none (Swin), a class token (ViT),
#: class and distillation tokens (DeiT), a class token and 4, 8 or 16 registers (DINOv2-reg)
PREFIX_TOKENS = (0, 1, 2, 5, 9, 17)
#: how far a token grid's aspect ratio may stray from the input's
GRID_RATIO_TOLERANCE = 1.2


def token_grid(count: int, input_hw: tuple[int, int] | None = None) -> tuple[int, int, int] | None:
    """(prefix, h, w) for ``count`` transformer tokens: the fewest leading non-patch tokens
    (:data:`PREFIX_TOKENS`) such that the rest factor as h·w with h/w within
    :data:`GRID_RATIO_TOLERANCE` of the input's H/W (1 when unknown); None when nothing fits.

    Example:
        >>> token_grid(1 + 4 + 16 * 16, (224, 224))   # a class token and 4 registers
        (5, 16, 16)
    """
    hw = None if not input_hw else (int(input_hw[0]), int(input_hw[1]))
    return _token_grid(int(count), hw)


@functools.lru_cache(maxsize=256)
def _token_grid(count: int, input_hw: tuple[int, int] | None) -> tuple[int, int, int] | None:
    """:func:`token_grid`, computed once per (count, size): a call arranges every token
    tensor (activations and gradients) of every call through it."""
    ratio = input_hw[0] / input_hw[1] if input_hw else 1.0
    for prefix in (p for p in PREFIX_TOKENS if count - p >= 2):
        grid = _factor_grid(count - prefix, ratio)
        if grid is not None:
            return (prefix, *grid)
    return None


def tokens_to_grid(tokens: np.ndarray, input_hw: tuple[int, int] | None = None) -> np.ndarray:
    """(N, T, C) transformer tokens -> (N, C, h, w); leading class or register tokens are dropped.

    The grid is inferred from the token count and the input's aspect ratio (:func:`token_grid`).
    Nothing is hard-coded.

    Example:
        >>> tokens_to_grid(np.zeros((2, 1 + 14 * 14, 192)), (224, 224)).shape
        (2, 192, 14, 14)
    """
    n, t, c = tokens.shape
    grid = token_grid(t, input_hw)
    if grid is None:
        raise CamcoreError(
            f"cannot arrange {t} tokens as a grid with the input's aspect ratio (after "
            f"{', '.join(map(str, PREFIX_TOKENS))} class or register tokens); pass reshape_transform"
        )
    skip, h, w = grid
    return tokens[:, skip:, :].reshape(n, h, w, c).transpose(0, 3, 1, 2)


def _factor_grid(count: int, ratio: float) -> tuple[int, int] | None:
    """h·w = count with h/w closest to ``ratio``, if within the tolerance."""
    best: tuple[int, int] | None = None
    for h in range(1, math.isqrt(count) + 1):
        if count % h:
            continue
        for hh, ww in ((h, count // h), (count // h, h)):
            if best is None or abs(math.log(hh / ww / ratio)) < abs(math.log(best[0] / best[1] / ratio)):
                best = (hh, ww)
    if best is None or abs(math.log(best[0] / best[1] / ratio)) > math.log(GRID_RATIO_TOLERANCE):
        return None
    return best


def spatial_size(x: np.ndarray, layout: InputLayout = "NCHW") -> tuple[int, int] | None:
    """The (height, width) of an image input in its own layout; None below rank 4.

    Example:
        >>> spatial_size(np.zeros((1, 299, 299, 3)), "NHWC")
        (299, 299)
    """
    if x.ndim < 4:
        return None
    if layout == "NHWC":
        return (int(x.shape[-3]), int(x.shape[-2]))
    return (int(x.shape[-2]), int(x.shape[-1]))


# ---------------------------------------------------------------------- 2. layer maps
def weighted_activations(activations: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """:math:`w_{n,c} A_{n,c,\\dots}`: (N, C, *spatial) contributions from (N, C) weights.

    Example:
        >>> weighted_activations(np.ones((1, 2, 2, 2)), np.array([[1.0, -2.0]]))[0, :, 0, 0].tolist()
        [1.0, -2.0]
    """
    return weights.reshape(*weights.shape, *(1,) * (activations.ndim - 2)) * activations


def centred_samples(x: np.ndarray) -> np.ndarray:
    """One image's (C, *spatial) tensor as (Z, C) samples, centred per channel, NaN read as 0."""
    flat = np.nan_to_num(x.reshape(x.shape[0], -1).T, nan=0.0)
    return flat - flat.mean(axis=0)


def project_2d(batch: np.ndarray, sign_correction: bool = False) -> np.ndarray:
    """Per image: the centred (Z, C) samples projected on their first principal axis.

    The Z spatial positions of a (C, *spatial) image are samples with C features (NaN read
    as 0); the projection on the first right singular vector is pytorch-grad-cam's
    ``get_2d_projection`` (the same LAPACK routine, hence the same sign: the SVD leaves it
    arbitrary). The thin SVD gives the same first vector as the full one without building
    the (C, C) factor. With ``sign_correction`` the projection is flipped when
    ``|min| > |max|`` (Seg-Eigen-CAM, eq. 13), so the salient side is positive.

    Example:
        >>> x = np.zeros((1, 2, 2, 2), np.float32); x[0, 0, 0, 0] = 1
        >>> project_2d(x).shape
        (1, 2, 2)
    """
    out = []
    with serial_blas():
        for a in batch:
            samples = centred_samples(a)
            _, _, vt = np.linalg.svd(samples, full_matrices=False)
            proj = (samples @ vt[0, :]).reshape(a.shape[1:])
            if sign_correction and abs(proj.min()) > abs(proj.max()):
                proj = -proj
            out.append(proj)
    return np.asarray(out, dtype=np.float32)


def reduce_channels(contributions: np.ndarray, eigen_smooth: bool = False) -> np.ndarray:
    """The layer map :math:`M = \\sum_c C_c` of (N, C, *spatial) contributions, or with
    ``eigen_smooth`` their first principal component (:func:`project_2d`)."""
    return project_2d(contributions) if eigen_smooth else contributions.sum(axis=1)


def weighted_layer_map(weights: np.ndarray, grid: np.ndarray, eigen_smooth: bool = False) -> np.ndarray:
    """:math:`M = \\sum_c w_c A_c` for (N, C) weights (Score-CAM, Ablation-CAM, ...)."""
    return reduce_channels(weighted_activations(grid, weights.astype(np.float32, copy=False)), eigen_smooth)


# ---------------------------------------------------------------------- 3. the final map
def scale_cam_image(cams: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """:math:`s`: min-max scale each map to [0, 1] (``x - min`` over ``1e-7 + max``), then
    :math:`R`: OpenCV's bilinear ``INTER_LINEAR`` resize to ``size`` (height, width).

    Example:
        >>> scale_cam_image(np.array([[[0.0, 2.0]]]))[0].tolist()
        [[0.0, 1.0]]
    """
    return _scale(np.asarray(cams), size, False)


def _scale(cams: np.ndarray, size: tuple[int, int] | None, inplace: bool) -> np.ndarray:
    """:func:`scale_cam_image`, in place when ``inplace`` (``cams`` is then a work array of
    the caller's): the same operations, so the same values, with fewer fresh arrays."""
    inplace = inplace and cams.dtype.kind == "f"
    axes = tuple(range(1, cams.ndim))  # per map, all at once: the same values as map by map
    shifted = np.subtract(cams, cams.min(axis=axes, keepdims=True), out=cams if inplace else None)
    top = 1e-7 + shifted.max(axis=axes, keepdims=True)
    scaled = np.divide(shifted, top, out=shifted if shifted.dtype.kind == "f" else None)  # shifted: a fresh array
    if size is None or scaled.shape[1:] == tuple(size):
        return scaled.astype(np.float32, copy=False)
    dsize = (size[1], size[0])
    out = np.empty((len(scaled), *size), np.float32)
    for img, dst in zip(scaled, out):
        cv2.resize(img.astype(np.float32, copy=False), dsize, dst=dst, interpolation=cv2.INTER_LINEAR)
    return out


def scale_planes(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """:func:`scale_cam_image` of every (n, c) plane of an (N, C, h, w) array, resized to ``size``."""
    n, c = x.shape[:2]
    planes = scale_cam_image(x.reshape(n * c, *x.shape[2:]), size)
    return planes.reshape(n, c, *size)


def _resize(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    m = m.astype(np.float32, copy=False)
    return m if m.shape == size else cv2.resize(m, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def assemble(layer_maps: Sequence[np.ndarray], size: tuple[int, int] | None) -> np.ndarray:
    """The final (N, H, W) maps in [0, 1]:
    :math:`s\\big(\\frac{1}{L}\\sum_l \\max(R\\,s(\\max(M_l, 0)), 0)\\big)` (pytorch-grad-cam 1.5).

    ``size`` None keeps each layer's own grid (all layers must share it).

    Example:
        >>> assemble([np.array([[[-1.0, 0.0], [1.0, 3.0]]])], (2, 2))[0].tolist()
        [[0.0, 0.0], [0.3333333432674408, 1.0]]
    """
    if not layer_maps:
        raise CamcoreError("no layer maps to assemble")
    per_layer = [_relu(_scale(np.maximum(m, 0), size, True)) for m in layer_maps]
    if len(per_layer) == 1:  # the mean of one layer is itself (x / 1 in float32 is x)
        return _scale(per_layer[0], None, True)
    return _scale(np.stack(per_layer, axis=1).mean(axis=1), None, True)


def _relu(x: np.ndarray) -> np.ndarray:
    """max(x, 0) in place."""
    return np.maximum(x, 0, out=x)


def assemble_unscaled(layer_maps: Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Non-negative, unscaled (N, H, W) maps: :math:`\\frac{1}{L}\\sum_l R\\max(M_l, 0)`, so that
    one range can be shared across images or frames.

    Example:
        >>> assemble_unscaled([np.array([[[-1.0, 4.0]]]), np.array([[[2.0, 0.0]]])], (1, 2))[0].tolist()
        [[1.0, 2.0]]
    """
    if not layer_maps:
        raise CamcoreError("no layer maps to assemble")
    n = layer_maps[0].shape[0]
    out = np.zeros((n, *size), np.float32)
    for m in layer_maps:
        relu = np.maximum(m, 0)
        for i in range(n):
            out[i] += _resize(relu[i], size)
    if len(layer_maps) > 1:
        out /= len(layer_maps)
    return out
