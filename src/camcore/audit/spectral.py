"""Spectral relevance analysis (SpRAy; Lapuschkin et al. 2019, https://arxiv.org/abs/1902.10178):
cluster one class's heat maps into the strategies the model uses.

Each map is downsampled to a small grid (16 x 16 by default); its median (the diffuse floor a
min-max scaled CAM keeps) is subtracted and negatives clipped, so that what remains is where the
relevance rises above the floor; the result is scaled to unit length, so that maps are compared
by where their relevance lies, whatever its scale. Then, as in Ng, Jordan and Weiss (2002) with
the self-tuning affinity of Zelnik-Manor and Perona (2004):

1. affinity :math:`W_{ij} = \\exp(-d_{ij}^2 / (\\sigma_i \\sigma_j))`, :math:`\\sigma_i` the
   distance to the 7th nearest neighbour, kept on the symmetrised k-nearest-neighbour graph
   (k = max(10, round(sqrt n)));
2. normalised Laplacian :math:`L = I - D^{-1/2} W D^{-1/2}`, eigenvalues
   :math:`\\lambda_1 \\le \\lambda_2 \\le \\dots`;
3. number of clusters by the eigengap, read multiplicatively: k strategies that are (nearly)
   disconnected give k eigenvalues near 0 and then a jump (Cheeger: :math:`\\lambda_k / 2` bounds
   the best k-way cut's conductance from below). k is the candidate in 2..k_max with
   :math:`\\lambda_k <` :data:`NEAR_ZERO` and :math:`\\lambda_{k+1} \\ge` :data:`GAP_RATIO`
   :math:`\\lambda_k` whose ratio is largest; none: k = 1. Maps that vary continuously (objects
   anywhere in the image) give slowly rising eigenvalues and one cluster, not arbitrary cuts;
4. k-means (k-means++ seeding, 10 restarts) on the rows of the first k eigenvectors, each row
   scaled to unit length.

Numpy only, deterministic for a seed. The eigendecomposition is dense (O(n^3)): a class with more
than ``max_samples`` maps is clustered on a seeded random subset of that size and every other map
joins the cluster whose mean (in the Hellinger space) is nearest.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["GAP_RATIO", "NEAR_ZERO", "Clustering", "kmeans", "map_features", "spectral_clusters"]

#: The eigenvalue after the k-th must be at least this many times the k-th.
GAP_RATIO = 4.0
#: The k-th eigenvalue must be below this (a k-way cut of low conductance).
NEAR_ZERO = 0.05


@dataclass(frozen=True)
class Clustering:
    """Cluster labels 0..k-1 (0 the largest), the eigenvalues of the Laplacian and the gap picked."""

    labels: np.ndarray
    k: int
    eigenvalues: list[float]
    eigengap: float | None


def map_features(maps: np.ndarray, grid: int = 16) -> np.ndarray:
    """Each (N, H, W) map resized (INTER_AREA) to ``grid`` x ``grid``, its median subtracted,
    clipped at 0 and scaled to unit length: (N, grid*grid) float64. A flat map gives zeros."""
    n = len(maps)
    if n == 0:
        return np.zeros((0, grid * grid))
    h, w = maps.shape[1:3]
    if (h, w) == (grid, grid):
        small = maps.astype(np.float32)
    elif h % grid == 0 and w % grid == 0:  # INTER_AREA at an integer factor: the block means
        small = maps.reshape(n, grid, h // grid, grid, w // grid).mean(axis=(2, 4), dtype=np.float32)
    else:
        small = np.stack([cv2.resize(m.astype(np.float32), (grid, grid), interpolation=cv2.INTER_AREA) for m in maps])
    flat = small.reshape(n, -1).astype(np.float64)
    flat = np.maximum(flat - np.median(flat, axis=1, keepdims=True), 0.0)
    norm = np.linalg.norm(flat, axis=1, keepdims=True)
    return flat / np.where(norm > 0, norm, 1.0)


def _squared_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    d2 = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
    return np.clip(d2, 0.0, None)


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator, n_init: int = 10, iterations: int = 100) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding; the labelling of lowest inertia over ``n_init``
    restarts. Labels (N,) int."""
    n = len(x)
    if k <= 1 or n <= k:
        return np.zeros(n, np.int64) if k <= 1 else np.arange(n, dtype=np.int64)
    best, best_inertia = np.zeros(n, np.int64), np.inf
    for _ in range(n_init):
        centres = [x[int(rng.integers(n))]]
        for _ in range(1, k):
            d2 = _squared_distances(x, np.asarray(centres)).min(axis=1)
            p = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1.0 / n)
            centres.append(x[int(rng.choice(n, p=p))])
        c = np.asarray(centres)
        labels = np.zeros(n, np.int64)
        for it in range(iterations):
            new = _squared_distances(x, c).argmin(axis=1)
            if it and np.array_equal(new, labels):
                break
            labels = new
            for j in range(k):
                members = x[labels == j]
                if len(members):
                    c[j] = members.mean(axis=0)
        inertia = float(((x - c[labels]) ** 2).sum())
        if inertia < best_inertia - 1e-12:
            best, best_inertia = labels.copy(), inertia
    return best


def _by_size(labels: np.ndarray) -> np.ndarray:
    """Relabel so that cluster 0 is the largest (ties: the lower old label first)."""
    values, counts = np.unique(labels, return_counts=True)
    order = values[np.lexsort((values, -counts))]
    remap = np.zeros(int(labels.max()) + 1, np.int64)
    remap[order] = np.arange(len(order))
    return remap[labels]


def spectral_clusters(
    features: np.ndarray, seed: int = 0, max_clusters: int = 8, max_samples: int = 1000, min_samples: int = 20
) -> Clustering:
    """Spectral clustering of the rows of ``features`` (see the module docstring).

    Fewer than ``min_samples`` rows give one cluster (too few to find structure).

    Example:
        >>> x = np.r_[np.zeros((30, 4)), np.ones((30, 4))] + np.random.default_rng(0).normal(0, .01, (60, 4))
        >>> spectral_clusters(x).k
        2
    """
    n = len(features)
    if n < max(min_samples, 3):
        return Clustering(np.zeros(n, np.int64), 1, [], None)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(n, max_samples, replace=False)) if n > max_samples else np.arange(n)
    x = features[chosen]
    m = len(x)
    d2 = _squared_distances(x, x)
    np.fill_diagonal(d2, 0.0)
    order = np.argsort(d2, axis=1)
    sigma = np.sqrt(d2[np.arange(m), order[:, min(7, m - 1)]])
    sigma = np.maximum(sigma, max(float(np.median(sigma)) * 1e-3, 1e-9))
    affinity = np.exp(-d2 / np.outer(sigma, sigma))
    neighbours = min(m - 1, max(10, round(np.sqrt(m))))
    keep = np.zeros((m, m), bool)
    keep[np.repeat(np.arange(m), neighbours), order[:, 1 : neighbours + 1].reshape(-1)] = True
    affinity = np.where(keep | keep.T, affinity, 0.0)
    np.fill_diagonal(affinity, 0.0)
    degree = affinity.sum(axis=1)
    inv = 1.0 / np.sqrt(np.maximum(degree, 1e-12))
    normalised = inv[:, None] * affinity * inv[None, :]
    values, vectors = np.linalg.eigh((normalised + normalised.T) / 2)
    lam = np.clip(1.0 - values[::-1], 0.0, 2.0)  # Laplacian eigenvalues, ascending
    vectors = vectors[:, ::-1]
    top = min(max_clusters, m - 1)
    k, gap = 1, None
    best = GAP_RATIO
    for cand in range(2, top + 1):
        ratio = lam[cand] / max(float(lam[cand - 1]), 1e-9)
        if lam[cand - 1] < NEAR_ZERO and ratio >= best:
            k, gap, best = cand, float(lam[cand] - lam[cand - 1]), ratio
    if k == 1:
        labels = np.zeros(n, np.int64)
    else:
        embedding = vectors[:, :k]
        embedding = embedding / np.maximum(np.linalg.norm(embedding, axis=1, keepdims=True), 1e-12)
        sub = kmeans(embedding, k, rng)
        if n > len(chosen):
            centres = np.stack([x[sub == j].mean(axis=0) for j in range(k)])
            labels = _squared_distances(features, centres).argmin(axis=1)
            labels[chosen] = sub
        else:
            labels = sub
        labels = _by_size(labels)
        k = int(labels.max()) + 1
    return Clustering(labels, k, [round(float(v), 6) for v in lam[: top + 1]], None if gap is None else round(gap, 6))
