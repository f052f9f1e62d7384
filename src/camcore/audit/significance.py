"""Significance for the audit: stratified permutation tests, effect sizes, multiple comparisons.

Numpy only and seeded, so a summary is a pure function of its table.

* :func:`permutation_test_groups`: for every value of one group column and every metric, the
  difference between the value's mean and the rest's, and a two-sided Monte Carlo permutation
  p-value, ``p = (1 + #{|T*| >= |T|}) / (B + 1)`` (Phipson and Smyth 2010: never 0). The group
  labels are permuted *within strata* (the class), so that a subgroup is not called different
  because it holds other classes than the rest.
* :func:`benjamini_hochberg`: adjusted p-values that control the false discovery rate over all
  the tests of an audit.
* :func:`cohens_d`, :func:`cohens_h`: effect sizes, 0.2 being Cohen's (1988) "small".
* :func:`one_sided_below`: the normal-approximation p-value that a mean lies below a bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "GroupTest",
    "benjamini_hochberg",
    "cohens_d",
    "cohens_h",
    "fisher_upper_tail",
    "one_sided_below",
    "permutation_test_groups",
]


def benjamini_hochberg(p: np.ndarray | list[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values: ``q_(i) = min_{j >= i} p_(j) m / j``, capped at 1.

    Example:
        >>> benjamini_hochberg([0.01, 0.04, 0.03]).round(3).tolist()
        [0.03, 0.04, 0.04]
    """
    pv = np.asarray(p, np.float64)
    m = len(pv)
    if m == 0:
        return pv
    order = np.argsort(pv)
    scaled = pv[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def fisher_upper_tail(k: int, n: int, k0: int, n0: int) -> float:
    """One-sided Fisher exact test: ``P(X >= k)`` for ``X ~ Hypergeometric`` (``k + k0`` marked
    among ``n + n0``, ``n`` drawn): how unlikely it is that ``k`` or more of the marked fall in the
    first group if group and mark were independent. Both rates are estimated, so a small second
    group gives no false certainty (as a binomial against ``k0 / n0`` would).

    Example:
        >>> round(fisher_upper_tail(3, 4, 1, 6), 4)
        0.119
    """
    total, marked = n + n0, k + k0
    lo, hi = max(k, marked - n0, 0), min(n, marked)
    if lo > hi:
        return 0.0
    i = np.arange(lo, hi + 1, dtype=np.float64)

    def lchoose(a: float, b: np.ndarray | float) -> np.ndarray:
        lg = np.vectorize(math.lgamma)
        return np.asarray(lg(a + 1) - lg(np.asarray(b) + 1) - lg(a - np.asarray(b) + 1))

    logs = lchoose(n, i) + lchoose(n0, marked - i) - float(lchoose(total, marked))
    top = float(logs.max())
    return float(min(1.0, math.exp(top) * np.exp(logs - top).sum()))


def cohens_d(a: np.ndarray, b: np.ndarray) -> float:
    """``(mean(a) - mean(b)) / s_pooled``; 0 when both are constant, NaN ignored."""
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if len(a) < 2 or len(b) < 2:
        return 0.0
    pooled = ((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2)
    diff = float(a.mean() - b.mean())
    if pooled <= 0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return diff / math.sqrt(pooled)


def cohens_h(p1: float, p2: float) -> float:
    """Cohen's h for two proportions: ``2 asin(sqrt p1) - 2 asin(sqrt p2)``.

    Example:
        >>> round(cohens_h(0.99, 0.95), 3)
        0.251
    """
    return 2.0 * math.asin(math.sqrt(min(max(p1, 0.0), 1.0))) - 2.0 * math.asin(math.sqrt(min(max(p2, 0.0), 1.0)))


def one_sided_below(values: np.ndarray, bound: np.ndarray | float) -> float:
    """p-value of H0 ``mean(values - bound) >= 0`` against "below", by the normal approximation
    of the one-sample t statistic (callers require at least 20 values). 1.0 for fewer than 2."""
    d = np.asarray(values, np.float64) - np.asarray(bound, np.float64)
    d = d[~np.isnan(d)]
    if len(d) < 2:
        return 1.0
    sd = float(d.std(ddof=1))
    mean = float(d.mean())
    if sd == 0:
        return 0.0 if mean < 0 else 1.0
    z = mean / (sd / math.sqrt(len(d)))
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


@dataclass(frozen=True)
class GroupTest:
    """One value of a group column against the rest, for one metric."""

    value: str
    metric: str
    n: int
    n_rest: int
    mean: float
    mean_rest: float
    p: float


def _within_strata(blocks: list[np.ndarray], n: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` random permutations of 0..n-1, (count, n), each mapping every position to one
    of the same block (stratum)."""
    perm = np.empty((count, n), np.int64)
    for block in blocks:
        perm[:, block] = rng.permuted(np.broadcast_to(block, (count, len(block))), axis=1)
    return perm


def _blocks(strata: np.ndarray) -> list[np.ndarray]:
    """The row indices of each stratum."""
    order = np.argsort(strata, kind="stable")
    cuts = np.nonzero(np.diff(strata[order]))[0] + 1
    return np.split(order, cuts)


def permutation_test_groups(
    codes: np.ndarray,
    values: list[str],
    tested: list[int],
    metrics: dict[str, np.ndarray],
    strata: np.ndarray,
    n_permutations: int,
    rng: np.random.Generator,
) -> list[GroupTest]:
    """Two-sided stratified permutation tests of ``mean(metric | code == c) - mean(metric | rest)``.

    Args:
        codes: (N,) int, the value index of each row (-1: no value; such rows join "the rest").
        values: names of the codes.
        tested: the codes to test.
        metrics: name -> (N,) float with NaN where missing (rows without it take no part).
        strata: (N,) int, the permutation keeps each row's group label within its stratum.
        n_permutations: B.
        rng: the random generator.

    Returns:
        One :class:`GroupTest` per (tested code, metric with at least 2 values on each side).
    """
    ncodes = max(len(values), 1) + 1
    shift = codes.astype(np.int64) + 1  # code -1 -> bin 0
    names = list(metrics)
    filled = {k: np.nan_to_num(v, nan=0.0) for k, v in metrics.items()}
    valid = {k: (~np.isnan(v)).astype(np.float64) for k, v in metrics.items()}

    def diffs(labels: np.ndarray) -> np.ndarray:
        """(B, metrics, codes) differences for (B, N) label rows."""
        b = labels.shape[0]
        flat = (labels + ncodes * np.arange(b)[:, None]).ravel()
        out = np.full((b, len(names), ncodes), np.nan)
        for i, k in enumerate(names):
            s = np.bincount(flat, weights=np.tile(filled[k], b), minlength=b * ncodes).reshape(b, ncodes)
            c = np.bincount(flat, weights=np.tile(valid[k], b), minlength=b * ncodes).reshape(b, ncodes)
            total_s, total_c = s.sum(axis=1, keepdims=True), c.sum(axis=1, keepdims=True)
            with np.errstate(divide="ignore", invalid="ignore"):
                out[:, i] = s / c - (total_s - s) / (total_c - c)
        return out

    observed = diffs(shift[None])[0]
    exceed = np.zeros_like(observed)
    blocks = _blocks(strata)
    chunk = max(1, min(n_permutations, 2_000_000 // max(len(strata), 1)))
    done = 0
    while done < n_permutations:
        b = min(chunk, n_permutations - done)
        perms = _within_strata(blocks, len(strata), b, rng)
        exceed += (np.abs(diffs(shift[perms])) >= np.abs(observed) - 1e-12).sum(axis=0)
        done += b
    results = []
    for i, k in enumerate(names):
        v, ok = metrics[k], ~np.isnan(metrics[k])
        for code in tested:
            inside = (codes == code) & ok
            rest = (codes != code) & ok
            n_in, n_rest = int(inside.sum()), int(rest.sum())
            if n_in < 2 or n_rest < 2:
                continue
            p = (1.0 + exceed[i, code + 1]) / (n_permutations + 1.0)
            results.append(
                GroupTest(values[code], k, n_in, n_rest, float(v[inside].mean()), float(v[rest].mean()), float(p))
            )
    return results
