"""The map assembly: each formula of camcore.maps against a direct numpy/OpenCV computation."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from camcore.errors import CamcoreError
from camcore.maps import (
    LayerLayout,
    arrange,
    assemble,
    assemble_unscaled,
    project_2d,
    reduce_channels,
    scale_cam_image,
    spatial_size,
    token_grid,
    tokens_to_grid,
    weighted_layer_map,
)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _s(m: np.ndarray) -> np.ndarray:
    """pytorch-grad-cam's scale_cam_image of one map, without resize."""
    m = m - m.min()
    return m / (1e-7 + m.max())


def _resize(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.resize(m.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def test_assemble_is_pytorch_grad_cams_aggregation() -> None:
    """s(mean_l max(R s(max(M_l, 0)), 0)) for two layers of different grids."""
    layers = [
        _rng(0).standard_normal((2, 3, 4)).astype(np.float32),
        _rng(1).standard_normal((2, 6, 8)).astype(np.float32),
    ]
    size = (12, 16)
    want = []
    for i in range(2):
        per = [np.maximum(_resize(_s(np.maximum(m[i], 0)), size), 0) for m in layers]
        want.append(_s(np.mean(per, axis=0)))
    got = assemble(layers, size)
    assert got.shape == (2, 12, 16) and got.dtype == np.float32
    np.testing.assert_allclose(got, np.asarray(want), atol=1e-6)
    assert got.min() >= 0 and abs(got.max() - 1) < 1e-6


def test_assemble_unscaled_keeps_the_magnitude() -> None:
    """mean_l R max(M_l, 0): a layer map twice as strong gives a map twice as strong."""
    m = _rng(2).standard_normal((1, 3, 3)).astype(np.float32)
    size = (9, 9)
    one = assemble_unscaled([m], size)
    np.testing.assert_allclose(one[0], _resize(np.maximum(m[0], 0), size), atol=1e-6)
    np.testing.assert_allclose(assemble_unscaled([2 * m], size), 2 * one, rtol=1e-6)
    two = assemble_unscaled([m, 3 * m], size)
    np.testing.assert_allclose(two, 2 * one, rtol=1e-6)
    with pytest.raises(CamcoreError, match="no layer maps"):
        assemble_unscaled([], size)


def test_weighted_layer_map_and_eigen_smooth() -> None:
    grid = _rng(3).standard_normal((2, 5, 4, 4)).astype(np.float32)
    w = _rng(4).standard_normal((2, 5)).astype(np.float32)
    np.testing.assert_allclose(weighted_layer_map(w, grid), np.einsum("nc,nchw->nhw", w, grid), rtol=1e-5, atol=1e-6)
    contrib = w[:, :, None, None] * grid
    np.testing.assert_array_equal(reduce_channels(contrib, eigen_smooth=True), project_2d(contrib))
    # the projection is the centred samples times the first right singular vector
    a = contrib[0].reshape(5, -1).T
    a = a - a.mean(axis=0)
    v = np.linalg.svd(a.astype(np.float64))[2][0]
    proj = (a @ v).reshape(4, 4)
    got = project_2d(contrib)[0]
    assert np.allclose(got, proj, atol=1e-4) or np.allclose(got, -proj, atol=1e-4)


def test_layouts_arrange_channels_first() -> None:
    nhwc = _rng(5).standard_normal((2, 7, 6, 3)).astype(np.float32)
    got = LayerLayout("channels_last").arrange(nhwc, None)
    np.testing.assert_array_equal(got, nhwc.transpose(0, 3, 1, 2))
    assert LayerLayout("channels_last").channel_axis == -1 and LayerLayout().channel_axis == 1
    tokens = _rng(6).standard_normal((2, 1 + 7 * 4, 8)).astype(np.float32)  # 29 tokens: prime, so a class token
    grid = arrange(tokens, None, (70, 40))  # rank 3: tokens, class token dropped, 7x4 grid for a 7:4 image
    np.testing.assert_array_equal(grid, tokens[:, 1:].reshape(2, 7, 4, 8).transpose(0, 3, 1, 2))
    assert arrange(nhwc, None, None, lambda t: t[:, :1]).shape == (2, 1, 6, 3)  # reshape_transform wins
    assert tokens_to_grid(np.zeros((1, 1 + 14 * 14, 2)), (224, 224)).shape == (1, 2, 14, 14)


@pytest.mark.parametrize(
    ("count", "input_hw", "want"),
    [
        (197, (224, 224), (1, 14, 14)),  # ViT: a class token
        (1 + 4 + 256, (224, 224), (5, 16, 16)),  # DINOv2 with registers
        (2 + 196, (224, 224), (2, 14, 14)),  # DeiT: class and distillation tokens
        (49, (224, 224), (0, 7, 7)),  # Swin's last stage: no class token
        (7 * 10, (224, 320), (0, 7, 10)),  # the input's aspect ratio picks 7 x 10 over 10 x 7
        (12 * 40, (48, 160), (0, 12, 40)),
        (97, (224, 224), None),  # no known prefix leaves a near-square grid
        (1 + 8 + 196, (224, 224), (9, 14, 14)),
    ],
)
def test_token_grid_drops_class_and_register_tokens(count: int, input_hw, want) -> None:
    assert token_grid(count, input_hw) == want


def test_token_counts_that_fit_no_grid_are_refused() -> None:
    with pytest.raises(CamcoreError, match="cannot arrange 97 tokens as a grid"):
        tokens_to_grid(np.zeros((1, 97, 4)), (224, 224))


def test_a_sequence_is_one_row_of_the_image() -> None:
    seq = _rng(7).standard_normal((2, 5, 40)).astype(np.float32)  # (N, C, L): a text model's features
    got = LayerLayout("channels_first").arrange(seq, (32, 320))
    assert got.shape == (2, 5, 1, 40)
    np.testing.assert_array_equal(got[:, :, 0], seq)
    cam = assemble([got.sum(axis=1)], (32, 320))
    assert cam.shape == (2, 32, 320) and np.ptp(cam[:, :, 5], axis=1).min() == 0  # constant down each column


def test_spatial_size_reads_the_inputs_layout() -> None:
    x = np.zeros((1, 299, 301, 3), np.float32)
    assert spatial_size(x, "NHWC") == (299, 301)
    assert spatial_size(x.transpose(0, 3, 1, 2), "NCHW") == (299, 301)
    assert spatial_size(np.zeros((1, 5, 3)), "NCHW") is None


def test_scale_cam_image_constant_map_is_zero() -> None:
    np.testing.assert_array_equal(scale_cam_image(np.full((1, 3, 3), 4.0)), np.zeros((1, 3, 3)))
