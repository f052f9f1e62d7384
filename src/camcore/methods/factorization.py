"""Deep Feature Factorization: NMF of a layer's activations into concepts (not a CAM method:
:class:`camcore.DeepFeatureFactorization` returns concepts and one map per concept)."""

from __future__ import annotations

import numpy as np

from camcore.errors import CamcoreError


def dff(activations: np.ndarray, n_components: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Deep Feature Factorization (Collins et al. 2018) of (N, C, h, w) activations.

    The (C, N·h·w) matrix, shifted per channel to be non-negative, is factorised as
    W·H with scikit-learn's NMF (``init='random', random_state=0``, as pytorch-grad-cam)
    when scikit-learn is installed, else with :func:`nmf` (multiplicative updates, numpy):
    the concepts are W plus the shift (C, k); the explanations are H as (N, k, h, w).

    Example:
        >>> c, e = dff(np.random.default_rng(0).random((2, 6, 3, 3)), 2)  # doctest: +SKIP
        >>> c.shape, e.shape
        ((6, 2), (2, 2, 3, 3))
    """
    if activations.ndim != 4:
        raise CamcoreError(f"DeepFeatureFactorization needs (N, C, h, w) activations, got {activations.shape}")
    n, c, h, w = activations.shape
    flat = np.nan_to_num(activations.transpose(1, 0, 2, 3).reshape(c, -1), nan=0.0)
    offset = flat.min(axis=-1)
    flat = flat - offset[:, None]
    try:
        from sklearn.decomposition import NMF
    except ImportError:
        concepts, components = nmf(flat, n_components)
    else:
        model = NMF(n_components=n_components, init="random", random_state=0)
        concepts, components = model.fit_transform(flat), model.components_
    explanations = components.reshape(n_components, n, h, w).transpose(1, 0, 2, 3)
    return concepts + offset[:, None], explanations


def nmf(x: np.ndarray, k: int, iterations: int = 500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """X ≈ W·H with W, H >= 0 by Lee & Seung's multiplicative updates (Frobenius loss).

    Example:
        >>> w, h = nmf(np.random.default_rng(0).random((6, 9)), 2); w.shape, h.shape
        ((6, 2), (2, 9))
    """
    x = x.astype(np.float64)
    rng = np.random.default_rng(seed)
    scale = np.sqrt(max(x.mean(), 1e-12) / k)
    w = scale * np.abs(rng.standard_normal((x.shape[0], k)))
    h = scale * np.abs(rng.standard_normal((k, x.shape[1])))
    for _ in range(iterations):
        h *= (w.T @ x) / np.maximum(w.T @ w @ h, 1e-12)
        w *= (x @ h.T) / np.maximum(w @ (h @ h.T), 1e-12)
    return w, h
