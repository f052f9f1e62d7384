"""The dataset analysis of an audit: ``summarize(table, context)`` is the content of summary.json.

It reads the per-sample table (``samples.parquet``, one row per sample, its columns fixed by the
audit contract) and answers, per class: how accurate, where the maps sit (the mean normalised
map, the share of energy inside the object regions), which strategies the model uses (spectral
relevance analysis of the maps, :mod:`camcore.audit.spectral`), which samples are the odd ones
out; per subgroup: whether accuracy or maps differ from the rest (stratified permutation tests,
:mod:`camcore.audit.significance`); and it lists ``flags``, the findings an auditor should see
first.

A class's samples, for its maps, are the rows that explain it (``explained``, the prediction by
default): "where does the model look when it says *cat*". Its accuracy is over the rows labelled
with it (recall). Failed rows (``error``) count in ``counts`` only.

Decision rules (every threshold a field of :class:`Rules`, defaults in brackets):

``off_object`` (a shortcut flag): the class's maps sit outside its object regions, judged
    against the regions' share of the image, over the class's rows whose label is the class (its
    object is in the image; a wrong prediction's region is another class's object; all rows when
    there are no labels). Per sample, the energy a map would put inside its region if it did not
    favour the object is the region's area share ``a``; a map *on* the object puts far more. The
    bound is ``t = min(lift * a, mostly)`` [lift 2, mostly 0.5]: at most twice chance, and never
    more than half the energy (so that huge regions do not make every class suspect). Flagged
    when, over those samples with a region (at least ``min_samples`` [20]), the mean region
    energy is below the mean bound AND a one-sided test (normal approximation of the t statistic
    of ``energy - t``) rejects "at or above the bound" at ``alpha`` [0.01].

``cluster`` (a shortcut flag): a strategy cluster of at least ``min_cluster_size`` [10] maps and
    ``min_cluster_share`` [5%] of the class that looks like a shortcut:

    * with regions (for at least half its members): the ``off_object`` rule holds on the cluster's
      members (its energy sits outside the regions, significantly), and its members agree on where
      they look: ``coherence``, the mean cosine similarity of the members' background-subtracted
      maps (:func:`camcore.audit.spectral.map_features`) to their mean, is at least
      ``min_coherence`` [0.65] (objects at random places give 0.41-0.46 with synthetic maps and
      0.47-0.56 with the demo model's Grad-CAM maps; one fixed spot 0.93-0.96): a shortcut is a
      consistent place, while maps lost in noise (a camera the model cannot read) are off the
      object everywhere and are no shortcut; or the cluster peaks on a fixed spot where the other
      classes' maps do not (as below, without regions) and most of those peaks miss the object
      (``pointing_hit`` rate below 50%): a model that looks at both the mark and the object still
      peaks on the mark. A cluster that is the class's main behaviour (share >= 50%) is not
      flagged again when the class is already ``off_object``;
    * without regions: its maps peak on one fixed spot across images (``peak_dispersion``, the
      median distance of the peaks to their median, over the image diagonal, below
      ``spot_dispersion`` [0.05]: about one cell of a 14 x 14 layer grid) where the other classes'
      maps do not: within ``spot_radius`` [0.05 of the diagonal] of the spot lie at least
      ``spot_enrichment`` [3] times the share of the class's peaks that the other classes have
      there, and the one-sided Fisher exact test of the class's count against the other classes'
      gives a p-value below ``alpha`` (:func:`spot_enrichment`), and the maps' energy, not only
      their argmax, is there: within twice ``spot_radius`` of the spot lies at least ``lift`` [2]
      times the energy a flat map puts there (:func:`spot_energy`; an image the model cannot read
      gives a flat map whose argmax sits anywhere, often in a corner where zero padding leaves it).
      Objects at random places give peaks spread over the image (a dispersion near 0.27 for
      uniform positions); an aligned dataset (faces, scans: every class peaks at the same place)
      is not flagged, since the other classes peak there too;
    * or, when no cluster is flagged (the clustering can miss a small strategy): the disc of
      radius ``spot_radius`` [0.05 of the diagonal] holding most of the class's peaks holds at
      least ``min_spot_peaks`` [5] peaks and ``min_cluster_share`` of the class, ``spot_enrichment``
      times the other classes' rate, with a Fisher p-value below ``alpha`` after a Bonferroni
      factor for the ``ceil(1 / (2 pi r^2))`` discs (64) the image holds, the maps' energy is there
      (as above), and, with regions, most of those peaks miss the object (else the class's
      objects simply sit there).

    A class with fewer than ``min_samples`` maps gets no cluster flag (too few to tell). A cluster
    of mostly wrong predictions made mostly of one subgroup value that is flagged for its lower
    accuracy is that subgroup's error mode (the model's fallback class for images it cannot read),
    not a shortcut: the subgroup's flag reports it (:func:`_credit_error_modes`).

``group``: a (column, value) with at least ``min_group_samples`` [20] samples, and as many in the
    rest, whose accuracy, region energy, entropy or border energy differs from the rest's: the
    Benjamini-Hochberg adjusted p-value (over every test of the audit) of a two-sided permutation
    test (``n_permutations`` [2000], permuting the group labels within each class, so a different
    class mix alone is no finding) below ``fdr`` [0.05], AND an effect of at least Cohen's "small"
    for accuracy (Cohen's h >= ``min_effect`` [0.2]: 95% against 89% is one; what an audit is for)
    or his "medium" for a map statistic (Cohen's d >= ``min_map_effect`` [0.5]: the statistics are
    proxies of where the model looks, and a small shift of them, 0.02 of border energy, is chance
    or trivia: a no-effect control column reached d = 0.21 at adjusted p 0.006). In a column
    of three values or more, a value that differs only because the rest holds a more deviant value
    is not flagged: most deviant first, each value is tested again against the rest without the
    values already flagged and must stay significant (p below ``fdr`` / the number of tests) with
    at least that effect (else its entry in ``groups`` says ``explained_by``).

``sanity``: the weight-randomisation check failed: the maps barely change when the weights
    downstream of the layer are random (mean Spearman rank correlation above 0.5).

``thin_data`` (information, no finding): a class whose maps look off the object but has too few
    samples with regions to test it; the flag says how many it has and how many the rule needs.

A clean model on clean data raises no ``off_object`` nor ``cluster`` flag: the rules require a
significant departure from what on-object maps give, and minimum counts.

Example:
    >>> ctx = AuditContext(class_names=["cat", "dog"], class_names_source="labels")
    >>> summary = summarize(pyarrow.parquet.read_table("out/samples.parquet"), ctx)  # doctest: +SKIP
    >>> [f["kind"] for f in summary["flags"]]                                          # doctest: +SKIP
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from camcore.audit.sanity import sanity_check
from camcore.audit.significance import (
    benjamini_hochberg,
    cohens_d,
    cohens_h,
    fisher_upper_tail,
    one_sided_below,
    permutation_test_groups,
)
from camcore.audit.spectral import map_features, spectral_clusters
from camcore.blas import serial_blas

__all__ = [
    "MAP_SIDE",
    "SHORTCUT_KINDS",
    "AuditContext",
    "Rows",
    "Rules",
    "peak_dispersion",
    "read_rows",
    "sanity_check",
    "spot_enrichment",
    "summarize",
]

#: Side of the mean maps in summary.json.
MAP_SIDE = 32
#: Flag kinds that say "the model may be using a shortcut".
SHORTCUT_KINDS: tuple[str, ...] = ("off_object", "cluster")
#: The map statistics the subgroup tests compare (besides accuracy).
GROUP_METRICS: tuple[str, ...] = ("region_energy", "entropy", "border_energy")


@dataclass(frozen=True)
class Rules:
    """The thresholds of the decision rules (see the module docstring for what each decides)."""

    lift: float = 2.0
    mostly: float = 0.5
    alpha: float = 0.01
    min_samples: int = 20
    min_cluster_size: int = 10
    min_cluster_share: float = 0.05
    spot_dispersion: float = 0.05
    spot_radius: float = 0.05
    spot_enrichment: float = 3.0
    min_coherence: float = 0.65
    min_spot_peaks: int = 5
    min_group_samples: int = 20
    fdr: float = 0.05
    min_effect: float = 0.2
    min_map_effect: float = 0.5
    n_permutations: int = 2000
    #: rows at most in one permutation test (a seeded subset beyond; p-values stay valid)
    max_test_rows: int = 20000
    cluster_grid: int = 16
    max_clusters: int = 8
    max_cluster_samples: int = 1000
    exemplars: int = 8
    max_group_values: int = 50


@dataclass(frozen=True)
class AuditContext:
    """What the analysis knows besides the table.

    Attributes:
        class_names: the model's class names, in output order.
        class_names_source: ``"--classes"``, ``"model metadata"``, ``"labels"`` or ``"indices"``.
        groups: the group columns to compare (``--groups``).
        provenance: ``model_sha256``, ``layer``, ``method``, ``camcore_version``.
        model_path: the model file.
        task: the task (``"classify"``).
        sanity: the result of :func:`sanity_check`, or None when it did not run.
        seed: seeds the clustering and the permutation tests.
        rules: the decision thresholds.
    """

    class_names: Sequence[str]
    class_names_source: str
    groups: Sequence[str] = ()
    provenance: Mapping[str, Any] = field(default_factory=dict)
    model_path: str = ""
    task: str = "classify"
    sanity: Mapping[str, Any] | None = None
    seed: int = 0
    rules: Rules = field(default_factory=Rules)


@dataclass
class Rows:
    """The table's columns as numpy arrays (strings as object arrays with None, numbers as float64
    with NaN for null); ``maps`` (N, 32, 32) uint8 (the stored map times 255), zero where ``ok`` is
    False."""

    ids: np.ndarray
    label: np.ndarray
    prediction: np.ndarray
    explained: np.ndarray
    confidence: np.ndarray
    correct: np.ndarray
    region_energy: np.ndarray
    region_area: np.ndarray
    peak_x: np.ndarray
    peak_y: np.ndarray
    entropy: np.ndarray
    border_energy: np.ndarray
    hit: np.ndarray
    ok: np.ndarray
    maps: np.ndarray
    groups: dict[str, np.ndarray]
    errors: np.ndarray

    def maps_of(self, idx: np.ndarray | int) -> np.ndarray:
        """The maps of rows ``idx`` as float32 in [0, 1]."""
        return self.maps[idx].astype(np.float32) / np.float32(255.0)


def _strings(table: pa.Table, name: str) -> np.ndarray:
    if name not in table.column_names:
        return np.full(table.num_rows, None, object)
    col = pc.cast(table.column(name), pa.string())
    return np.asarray(col.to_pylist(), dtype=object)


def _floats(table: pa.Table, name: str) -> np.ndarray:
    if name not in table.column_names:
        return np.full(table.num_rows, np.nan)
    col = table.column(name)
    if pa.types.is_boolean(col.type):
        col = pc.cast(col, pa.int8())
    return np.asarray(pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False), np.float64)


def _maps(table: pa.Table, ok: np.ndarray) -> np.ndarray:
    """(N, 32, 32) uint8 maps from the ``map`` column, resized (INTER_AREA) where needed."""
    n = table.num_rows
    out = np.zeros((n, MAP_SIDE, MAP_SIDE), np.uint8)
    if "map" not in table.column_names or n == 0:
        return out
    arr = table.column("map").combine_chunks()
    offsets = arr.offsets.to_numpy()
    h = _floats(table, "map_height")
    w = _floats(table, "map_width")
    lengths = np.diff(offsets)
    uniform = ok & (h == MAP_SIDE) & (w == MAP_SIDE) & (lengths == MAP_SIDE * MAP_SIDE)
    if uniform.any():
        part = arr if uniform.all() else arr.filter(pa.array(uniform))
        out[uniform] = part.flatten().to_numpy(zero_copy_only=False).reshape(-1, MAP_SIDE, MAP_SIDE)
    if (ok & ~uniform).any():
        values = arr.values.to_numpy(zero_copy_only=False)
        for i in np.nonzero(ok & ~uniform)[0]:
            hh, ww = int(h[i]), int(w[i])
            if hh * ww != lengths[i] or hh <= 0 or ww <= 0:
                ok[i] = False
                continue
            m = values[offsets[i] : offsets[i + 1]].reshape(hh, ww).astype(np.float32)
            out[i] = np.rint(cv2.resize(m, (MAP_SIDE, MAP_SIDE), interpolation=cv2.INTER_AREA)).astype(np.uint8)
    return out


def read_rows(table: pa.Table, groups: Sequence[str] = ()) -> Rows:
    """The columns the analysis uses; a row is ``ok`` when it has no error and a map.

    The maps stay uint8 (1 KB a row: 100 MB at 100,000 rows); :meth:`Rows.maps_of` gives floats."""
    errors = _strings(table, "error")
    ok = np.asarray([e is None for e in errors], bool)
    if "map" in table.column_names:
        ok &= np.asarray(table.column("map").is_valid().to_numpy(zero_copy_only=False), bool)
    else:
        ok[:] = False
    maps = _maps(table, ok)
    return Rows(
        ids=_strings(table, "id"),
        label=_strings(table, "label"),
        prediction=_strings(table, "prediction"),
        explained=_strings(table, "explained"),
        confidence=_floats(table, "confidence"),
        correct=_floats(table, "correct"),
        region_energy=_floats(table, "region_energy"),
        region_area=_floats(table, "region_area"),
        peak_x=_floats(table, "peak_x"),
        peak_y=_floats(table, "peak_y"),
        entropy=_floats(table, "entropy"),
        border_energy=_floats(table, "border_energy"),
        hit=_floats(table, "pointing_hit"),
        ok=ok,
        maps=maps,
        groups={g: _strings(table, g) for g in groups if g in table.column_names},
        errors=errors,
    )


# ---------------------------------------------------------------------------------- helpers
def _num(x: float | None, places: int = 4) -> float | None:
    """A JSON number: rounded, None for NaN/None."""
    if x is None:
        return None
    x = float(x)
    return None if not np.isfinite(x) else round(x, places)


def _rounded(v: Any) -> Any:
    """Floats (also inside a dict) rounded to 4 places for summary.json."""
    if isinstance(v, float):
        return _num(v)
    if isinstance(v, dict):
        return {k: _rounded(x) for k, x in v.items()}
    return v


def _mean(x: np.ndarray) -> float | None:
    x = x[~np.isnan(x)]
    return float(x.mean()) if len(x) else None


def _mean_map(maps: np.ndarray) -> list[list[float]]:
    """Mean of [0, 1] maps, scaled to max 1 (all zeros stays zeros), rounded to 4 places."""
    if len(maps) == 0:
        return np.zeros((MAP_SIDE, MAP_SIDE)).tolist()
    m = maps.mean(axis=0, dtype=np.float64)
    top = m.max()
    m = m / top if top > 0 else m
    return np.round(m, 4).tolist()


def peak_dispersion(px: np.ndarray, py: np.ndarray) -> float | None:
    """Median distance of the peaks (normalised x, y) to their coordinate-wise median, over the
    diagonal (sqrt 2 in normalised units). 0: one fixed spot; about 0.27 for uniform peaks."""
    keep = ~(np.isnan(px) | np.isnan(py))
    if keep.sum() < 2:
        return None
    x, y = px[keep], py[keep]
    d = np.hypot(x - np.median(x), y - np.median(y))
    return float(np.median(d) / np.sqrt(2.0))


def _spot_concentration(rows: Rows, members: np.ndarray, rules: Rules) -> dict[str, float | None]:
    """The members' mean energy within ``2 * spot_radius`` of their median peak, and a flat map's."""
    peak = _median_peak(rows.peak_x[members], rows.peak_y[members])
    if peak[0] is None or peak[1] is None or not len(members):
        return {"energy": None, "flat": None}
    share, flat = spot_energy(rows.maps[members], (peak[0], peak[1]), 2.0 * rules.spot_radius)
    return {"energy": _mean(share), "flat": flat}


def _median_peak(px: np.ndarray, py: np.ndarray) -> list[float | None]:
    keep = ~(np.isnan(px) | np.isnan(py))
    if not keep.any():
        return [None, None]
    return [float(np.median(px[keep])), float(np.median(py[keep]))]


def _seed(base: int, *parts: str) -> int:
    return (base * 1_000_003 + zlib.crc32("\x1f".join(parts).encode())) % (2**63)


def _bound(area: np.ndarray, rules: Rules) -> np.ndarray:
    """Per-sample on-object bound ``min(lift * area, mostly)``."""
    return np.minimum(rules.lift * area, rules.mostly)


def _off_object(energy: np.ndarray, area: np.ndarray, rules: Rules, min_n: int | None = None) -> dict[str, Any]:
    """The off_object test on samples with a region: figures and the verdict (None: fewer than
    ``min_n``, by default ``rules.min_samples``)."""
    keep = ~(np.isnan(energy) | np.isnan(area))
    e, a = energy[keep], area[keep]
    n = len(e)
    out: dict[str, Any] = {"samples_with_region": n}
    if n == 0:
        out["verdict"] = None
        return out
    bound = _bound(a, rules)
    out.update(
        region_energy_mean=float(e.mean()),
        region_area_mean=float(a.mean()),
        bound_mean=float(bound.mean()),
        lift=float(e.mean() / a.mean()) if a.mean() > 0 else None,
    )
    below = e.mean() < bound.mean()
    if n < (rules.min_samples if min_n is None else min_n):
        out["verdict"] = None
        out["suspect"] = bool(below)
        return out
    p = one_sided_below(e, bound)
    out["p_value"] = p
    out["verdict"] = bool(below and p < rules.alpha)
    return out


# ------------------------------------------------------------------------------- per class
def _class_order(rows: Rows, names: Sequence[str]) -> list[str]:
    seen = list(dict.fromkeys(names))
    extra = {v for v in np.r_[rows.label, rows.explained] if v is not None and v not in set(seen)}
    return seen + sorted(extra)


def _top(ids: np.ndarray, score: np.ndarray, count: int) -> list[str]:
    order = np.argsort(-score, kind="stable")[:count]
    return [str(ids[i]) for i in order]


def _clusters(
    rows: Rows, idx: np.ndarray, feats: np.ndarray, name: str, ctx: AuditContext
) -> tuple[list[dict[str, Any]], Any]:
    rules = ctx.rules
    clustering = spectral_clusters(
        feats,
        seed=_seed(ctx.seed, "cluster", name),
        max_clusters=rules.max_clusters,
        max_samples=rules.max_cluster_samples,
        min_samples=rules.min_samples,
    )
    out = []
    for j in range(clustering.k):
        members = idx[clustering.labels == j]
        mf = feats[clustering.labels == j]
        centre = mf.mean(axis=0)
        direction = centre / max(float(np.linalg.norm(centre)), 1e-12)
        coherence = float((mf @ direction).mean()) if len(mf) else 0.0
        closest = np.argsort(((mf - centre) ** 2).sum(axis=1), kind="stable")[: rules.exemplars]
        test = _off_object(rows.region_energy[members], rows.region_area[members], rules)
        out.append(
            {
                "id": j,
                "size": len(members),
                "share": len(members) / len(idx),
                "mean_map": _mean_map(rows.maps_of(members)),
                "region_energy_mean": test.get("region_energy_mean"),
                "region_area_mean": test.get("region_area_mean"),
                "samples_with_region": test["samples_with_region"],
                "peak_dispersion": peak_dispersion(rows.peak_x[members], rows.peak_y[members]),
                "coherence": coherence,
                "spot_energy": _spot_concentration(rows, members, ctx.rules),
                "pointing_hit_rate": _mean(rows.hit[members]),
                "peak": _median_peak(rows.peak_x[members], rows.peak_y[members]),
                "border_energy_mean": _mean(rows.border_energy[members]),
                "members": [str(rows.ids[members[c]]) for c in closest],
                "accuracy": _mean(rows.correct[members]),
                "_test": test,
                "_idx": members,
            }
        )
    info = {"k": clustering.k, "eigenvalues": clustering.eigenvalues, "eigengap": clustering.eigengap}
    return out, info


def spot_energy(maps: np.ndarray, spot: tuple[float, float], radius: float) -> tuple[np.ndarray, float]:
    """Each (N, H, W) map's share of its energy within ``radius`` (a share of the diagonal) of
    ``spot`` (normalised x, y), NaN for an all-zero map; and that disc's share of the image."""
    h, w = maps.shape[1:3]
    gx, gy = (np.arange(w) + 0.5) / w, (np.arange(h) + 0.5) / h
    disc = ((gx[None, :] - spot[0]) ** 2 + (gy[:, None] - spot[1]) ** 2) <= 2.0 * radius**2
    m = maps.reshape(len(maps), -1).astype(np.float64)
    total = m.sum(axis=1)
    inside = m[:, disc.reshape(-1)].sum(axis=1)
    share = np.where(total > 0, inside / np.where(total > 0, total, 1.0), np.nan)
    return share, float(disc.mean())


def spot_enrichment(
    spot: tuple[float, float], px: np.ndarray, py: np.ndarray, ref_x: np.ndarray, ref_y: np.ndarray, radius: float
) -> dict[str, Any]:
    """How much more often the class's peaks fall near ``spot`` than the other classes' peaks do.

    ``k`` of the class's ``n`` peaks lie within ``radius`` (a share of the diagonal) of the spot,
    ``k0`` of the reference's ``n0``; the reference rate is ``p0 = (k0 + 1) / (n0 + 2)`` (never 0),
    the enrichment ``(k / n) / p0``, and the p-value of the one-sided Fisher exact test of ``k`` of
    ``n`` against ``k0`` of ``n0`` (:func:`~camcore.audit.significance.fisher_upper_tail`)."""
    r2 = (radius * np.sqrt(2.0)) ** 2  # normalised coordinates: the diagonal is sqrt 2

    def near(x: np.ndarray, y: np.ndarray) -> tuple[int, int]:
        keep = ~(np.isnan(x) | np.isnan(y))
        d2 = (x[keep] - spot[0]) ** 2 + (y[keep] - spot[1]) ** 2
        return int((d2 <= r2).sum()), int(keep.sum())

    k, n = near(px, py)
    k0, n0 = near(ref_x, ref_y)
    p0 = (k0 + 1) / (n0 + 2)
    return {"near": k, "samples": n, "reference_near": k0, "reference_samples": n0, "reference_rate": p0,
            "enrichment": (k / n) / p0 if n else 0.0, "p_value": fisher_upper_tail(k, n, k0, n0)}  # fmt: skip


def _cluster_flags(
    name: str,
    clusters: list[dict[str, Any]],
    class_off: bool,
    peaks: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    rules: Rules,
) -> list[dict[str, Any]]:
    """The cluster flags of one class (rules in the module docstring). ``peaks``: the class's
    peak x, y and the other classes' (the reference)."""
    flags = []
    for c in clusters:
        test = c["_test"]
        if c["size"] < rules.min_cluster_size or c["share"] < rules.min_cluster_share:
            continue
        main = c["share"] >= 0.5
        disp = c["peak_dispersion"]
        spot = None
        if disp is not None and disp < rules.spot_dispersion and None not in c["peak"]:
            spot = spot_enrichment((c["peak"][0], c["peak"][1]), *peaks, radius=rules.spot_radius)
        concentrated = c["spot_energy"]["energy"] is not None and (
            c["spot_energy"]["energy"] >= rules.lift * c["spot_energy"]["flat"]
        )
        fixed = bool(
            spot is not None
            and concentrated
            and spot["reference_samples"] >= rules.min_samples
            and spot["enrichment"] >= rules.spot_enrichment
            and spot["p_value"] < rules.alpha
        )
        with_regions = test["samples_with_region"] >= max(rules.min_cluster_size, c["size"] / 2)
        evidence = {
            "cluster": c["id"],
            "size": c["size"],
            "share": _num(c["share"]),
            "region_energy_mean": _num(c["region_energy_mean"]),
            "region_area_mean": _num(c["region_area_mean"]),
            "bound": _num(test.get("bound_mean")),
            "p_value": _num(test.get("p_value"), 6),
            "peak_dispersion": _num(disp),
            "coherence": _num(c["coherence"]),
            "peak": c["peak"],
            "accuracy": _num(c["accuracy"]),
            "_members": c["_idx"],
        }
        if spot is not None:
            evidence["spot"] = {k: _num(v, 6) if isinstance(v, float) else v for k, v in spot.items()}
            evidence["spot"]["energy"] = _num(c["spot_energy"]["energy"])
            evidence["spot"]["flat_energy"] = _num(c["spot_energy"]["flat"])
        where = f" on one fixed spot (x {c['peak'][0]:.2f}, y {c['peak'][1]:.2f})" if fixed else ""
        if with_regions:
            energy_off = bool(test["verdict"]) and c["coherence"] >= rules.min_coherence
            hits = c["pointing_hit_rate"]
            spot_off = spot is not None and fixed and hits is not None and hits < 0.5
            if not (energy_off or spot_off) or (main and class_off):
                continue
            if energy_off:
                message = (
                    f"class {name!r}: strategy cluster {c['id']} ({c['size']} maps, {c['share']:.0%}) puts "
                    f"{c['region_energy_mean']:.0%} of its energy on the object{where}, against at least "
                    f"{test['bound_mean']:.0%} from an on-object map"
                )
            else:
                assert spot is not None and hits is not None
                message = (
                    f"class {name!r}: strategy cluster {c['id']} ({c['size']} maps, {c['share']:.0%}) peaks{where}, "
                    f"off the object for {1 - hits:.0%} of them, {spot['enrichment']:.0f}x the other classes' rate"
                )
            evidence["pointing_hit_rate"] = _num(hits)
            reason = "off_object_fixed_spot" if fixed else "off_object"
        else:
            if not fixed or spot is None:
                continue
            message = (
                f"class {name!r}: strategy cluster {c['id']} ({c['size']} maps, {c['share']:.0%}) peaks{where}: "
                f"{spot['near']} of the class's {spot['samples']} maps peak there, "
                f"{spot['enrichment']:.0f}x the other classes' rate"
            )
            reason = "fixed_spot"
        flags.append({"kind": "cluster", "class": name, "reason": reason, "message": message, **evidence})
    return flags


def _spot_scan(
    rows: Rows, idx: np.ndarray, name: str, peaks: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], rules: Rules
) -> list[dict[str, Any]]:
    """The fixed-spot rule without the clustering (which can miss a small strategy): the disc of
    radius ``spot_radius`` holding most of the class's peaks, tested as :func:`spot_enrichment`
    with a Bonferroni factor of ``ceil(1 / (2 pi r^2))``, the discs of radius r (in diagonals) the
    image holds."""
    px, py = peaks[0], peaks[1]
    keep = ~(np.isnan(px) | np.isnan(py))
    if keep.sum() < rules.min_spot_peaks:
        return []
    rng = np.random.default_rng(_seed(0, "scan", name))
    sub = np.nonzero(keep)[0]
    if len(sub) > rules.max_cluster_samples:
        sub = np.sort(rng.choice(sub, rules.max_cluster_samples, replace=False))
    xy = np.stack([px[sub], py[sub]], axis=1)
    r2 = 2.0 * rules.spot_radius**2
    d2 = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(axis=2)
    densest = int(np.argmax((d2 <= r2).sum(axis=1)))
    near = sub[d2[densest] <= r2]
    spot = (float(np.median(px[near])), float(np.median(py[near])))
    test = spot_enrichment(spot, *peaks, radius=rules.spot_radius)
    tests = int(np.ceil(1.0 / (2.0 * np.pi * rules.spot_radius**2)))  # r * sqrt 2 in unit-square units
    p_adjusted = min(1.0, test["p_value"] * tests)
    close = (px - spot[0]) ** 2 + (py - spot[1]) ** 2 <= r2
    members = idx[close & keep]
    share = len(members) / len(idx)
    if (
        len(members) < rules.min_spot_peaks
        or share < rules.min_cluster_share
        or test["reference_samples"] < rules.min_samples
        or test["enrichment"] < rules.spot_enrichment
        or p_adjusted >= rules.alpha
    ):
        return []
    share_near, flat = spot_energy(rows.maps[members], spot, 2.0 * rules.spot_radius)
    concentration = _mean(share_near)
    if concentration is None or concentration < rules.lift * flat:
        return []  # flat maps (an image the model cannot read) peak anywhere, often in a corner
    region = _off_object(rows.region_energy[members], rows.region_area[members], rules, rules.min_cluster_size)
    judged = ~np.isnan(rows.hit[members])
    hits = float(rows.hit[members][judged].mean()) if judged.any() else None
    if judged.sum() >= len(members) / 2 and hits is not None and hits >= 0.5:
        return []  # the spot is on the class's objects: the dataset's framing, not a shortcut
    message = (
        f"class {name!r}: {len(members)} of its {len(idx)} maps ({share:.0%}) peak on one fixed spot "
        f"(x {spot[0]:.2f}, y {spot[1]:.2f}), {test['enrichment']:.0f}x the other classes' rate"
    )
    if hits is not None:
        message += f"; the peak is off the object for {1 - hits:.0%} of them"
    order = np.argsort(-np.nan_to_num(rows.confidence[members]), kind="stable")[: rules.exemplars]
    return [
        {
            "kind": "cluster",
            "class": name,
            "reason": "fixed_spot_scan",
            "message": message,
            "size": len(members),
            "share": _num(share),
            "peak": [_num(spot[0]), _num(spot[1])],
            "region_energy_mean": _num(region.get("region_energy_mean")),
            "bound": _num(region.get("bound_mean")),
            "pointing_hit_rate": _num(hits),
            "spot": {k: _num(v, 6) if isinstance(v, float) else v for k, v in test.items()},
            "spot_energy": _num(concentration),
            "flat_energy": _num(flat),
            "p_adjusted": _num(p_adjusted, 6),
            "discs_scanned": tests,
            "accuracy": _num(_mean(rows.correct[members])),
            "members": [str(rows.ids[i]) for i in members[order]],
            "_members": members,
        }
    ]


def _class_summary(rows: Rows, name: str, ctx: AuditContext) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rules = ctx.rules
    idx = np.nonzero(rows.ok & (rows.explained == name))[0]
    labelled = (rows.label == name) & ~np.isnan(rows.correct)
    acc = float(rows.correct[labelled].mean()) if labelled.any() else None
    flags: list[dict[str, Any]] = []
    # the class's object is in the image where the label says so: judge those rows (all without labels)
    judged = idx[rows.label[idx] == name] if (rows.label[idx] != None).any() else idx  # noqa: E711
    test = _off_object(rows.region_energy[judged], rows.region_area[judged], rules)
    class_off = bool(test["verdict"])
    if class_off:
        flags.append(
            {
                "kind": "off_object",
                "class": name,
                "message": (
                    f"class {name!r}: its maps put {test['region_energy_mean']:.0%} of their energy on the object, "
                    f"whose regions cover {test['region_area_mean']:.0%} of the image (an on-object map puts "
                    f"at least {test['bound_mean']:.0%})"
                ),
                "samples_with_region": test["samples_with_region"],
                "region_energy_mean": _num(test["region_energy_mean"]),
                "region_area_mean": _num(test["region_area_mean"]),
                "bound": _num(test["bound_mean"]),
                "lift": _num(test["lift"]),
                "p_value": _num(test["p_value"], 6),
            }
        )
    elif test.get("suspect"):
        flags.append(
            {
                "kind": "thin_data",
                "class": name,
                "message": (
                    f"class {name!r}: its maps look off the object ({test['region_energy_mean']:.0%} of the energy "
                    f"inside regions) but only {test['samples_with_region']} samples have a region; "
                    f"the rule needs {rules.min_samples}"
                ),
                "samples_with_region": test["samples_with_region"],
                "needed": rules.min_samples,
                "region_energy_mean": _num(test["region_energy_mean"]),
            }
        )
    feats = map_features(rows.maps[idx], rules.cluster_grid)
    clusters, info = _clusters(rows, idx, feats, name, ctx) if len(idx) else ([], {"k": 0})
    others = rows.ok & (rows.explained != name)
    peaks = (rows.peak_x[idx], rows.peak_y[idx], rows.peak_x[others], rows.peak_y[others])
    if len(idx) >= rules.min_samples:  # too few maps: no cluster judged a shortcut
        found = _cluster_flags(name, clusters, class_off, peaks, rules)
        if not found and not class_off:
            found = _spot_scan(rows, idx, name, peaks, rules)
        flags += found
    for c in clusters:
        c.pop("_test", None)
        c.pop("_idx", None)
    maps_here = rows.maps_of(idx)
    mean = np.asarray(_mean_map(maps_here), np.float64)
    ids = rows.ids[idx]
    correct = rows.correct[idx]
    conf = np.nan_to_num(rows.confidence[idx], nan=-1.0)
    centre = feats.mean(axis=0) if len(feats) else feats
    atypical = ((feats - centre) ** 2).sum(axis=1) if len(feats) else np.zeros(0)
    right, wrong = correct == 1, correct == 0
    summary = {
        "samples": len(idx),
        "labelled": int(labelled.sum()),
        "accuracy": _num(acc),
        "errors": int(((rows.label == name) & ~rows.ok).sum()),
        "mean_map": np.round(mean, 4).tolist(),
        "region_energy_mean": _num(test.get("region_energy_mean")),
        "region_energy_mean_all": _num(_mean(rows.region_energy[idx])),
        "region_area_mean": _num(test.get("region_area_mean")),
        "samples_with_region": test["samples_with_region"],
        "entropy_mean": _num(_mean(rows.entropy[idx])),
        "border_energy_mean": _num(_mean(rows.border_energy[idx])),
        "peak_dispersion": _num(peak_dispersion(rows.peak_x[idx], rows.peak_y[idx])),
        "exemplars": {
            "most_confident_correct": _top(ids[right], conf[right], rules.exemplars),
            "most_confident_wrong": _top(ids[wrong], conf[wrong], rules.exemplars),
            "most_atypical": _top(ids, atypical, rules.exemplars),
        },
        "clustering": info,
        "clusters": [{k: _rounded(v) for k, v in c.items()} for c in clusters],
        "groups": _class_groups(rows, name, idx),
    }
    return summary, flags


def _class_groups(rows: Rows, name: str, idx: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per group column and value, within the class: the maps explaining it (samples, region
    energy, entropy) and the accuracy over the samples labelled with it (no tests)."""
    out: dict[str, dict[str, Any]] = {}
    labelled = (rows.label == name) & ~np.isnan(rows.correct)
    for col, vals in rows.groups.items():
        present = {x for x in vals[idx] if x is not None} | {x for x in vals[labelled] if x is not None}
        table = {}
        for v in sorted(present)[:50]:
            sel = idx[vals[idx] == v]
            lab = labelled & (vals == v)
            table[v] = {
                "samples": len(sel),
                "labelled": int(lab.sum()),
                "accuracy": _num(_mean(rows.correct[lab])),
                "region_energy_mean": _num(_mean(rows.region_energy[sel])),
                "entropy_mean": _num(_mean(rows.entropy[sel])),
            }
        out[col] = table
    return out


# ------------------------------------------------------------------------------- subgroups
def _group_tests(
    rows: Rows, ctx: AuditContext
) -> tuple[dict[str, Any], dict[str, Any] | None, list[dict[str, Any]]]:
    """Per group column and value: statistics, tests against the rest, and the group flags."""
    rules = ctx.rules
    ok = rows.ok
    metrics_all = {"accuracy": np.where(ok, rows.correct, np.nan)}
    for m in GROUP_METRICS:
        metrics_all[m] = np.where(ok, getattr(rows, m), np.nan)
    metrics = {k: v for k, v in metrics_all.items() if (~np.isnan(v)).sum() >= 2 * rules.min_group_samples}
    strata_names = np.where(rows.label != None, rows.label, rows.explained)  # noqa: E711
    _, strata = np.unique(np.asarray([str(s) for s in strata_names]), return_inverse=True)
    pending: list[tuple[str, Any]] = []
    summary: dict[str, Any] = {}
    for col, vals in rows.groups.items():
        present = [v for v in vals if v is not None]
        uniq, counts = np.unique(np.asarray([*present, ""], dtype=str)[:-1], return_counts=True)
        order = np.argsort(-counts, kind="stable")[: rules.max_group_values]
        values = [str(uniq[i]) for i in order]
        code_of = {v: i for i, v in enumerate(values)}
        codes = np.asarray([code_of.get(v, -1) if v is not None else -1 for v in vals], np.int64)
        n_total = len(vals)
        tested = [
            c for c, v in enumerate(values)
            if (codes == c).sum() >= rules.min_group_samples and n_total - (codes == c).sum() >= rules.min_group_samples
        ]  # fmt: skip
        if len(tested) == 2 and len(values) == 2 and (codes >= 0).all():
            tested = tested[1:]  # two values and no other: "A vs the rest" is "B vs the rest"; test the smaller
        col_summary: dict[str, Any] = {}
        for c, v in enumerate(values):
            sel = codes == c
            col_summary[v] = {
                "samples": int(sel.sum()),
                "tested": c in tested,
                **{f"{k}_mean" if k != "accuracy" else k: _num(_mean(x[sel])) for k, x in metrics_all.items()},
                "tests": {},
            }
        summary[col] = col_summary
        if tested and metrics:
            pending.append((col, (codes, values, tested)))
    # enough permutations that one test alone can pass the correction: (m / fdr) / B < 1 / 2
    n_tests = sum(len(t[1][2]) for t in pending) * max(len(metrics), 1)
    n_perm = max(rules.n_permutations, int(np.ceil(2 * n_tests / rules.fdr)))
    results = []
    for col, (codes, values, tested) in pending:
        rng = np.random.default_rng(_seed(ctx.seed, "group", col))
        sub = np.arange(len(codes))
        if len(sub) > rules.max_test_rows:
            sub = np.sort(rng.choice(len(codes), rules.max_test_rows, replace=False))
        found = permutation_test_groups(
            codes[sub], values, tested, {k: v[sub] for k, v in metrics.items()}, strata[sub], n_perm, rng
        )
        results += [(col, codes, t) for t in found]
    adjusted = benjamini_hochberg([t.p for _, _, t in results])
    flags: dict[tuple[str, str], dict[str, Any]] = {}
    for (col, codes, t), q in zip(results, adjusted):
        values_here = metrics[t.metric]
        inside = codes == list(summary[col]).index(t.value)
        if t.metric == "accuracy":
            effect, effect_kind = cohens_h(t.mean, t.mean_rest), "cohens_h"
        else:
            effect, effect_kind = cohens_d(values_here[inside], values_here[~inside]), "cohens_d"
        significant = bool(q < rules.fdr and abs(effect) >= _min_effect(t.metric, rules))
        summary[col][t.value]["tests"][t.metric] = {
            "mean": _num(t.mean),
            "mean_rest": _num(t.mean_rest),
            "difference": _num(t.mean - t.mean_rest),
            "effect_size": _num(effect),
            "effect_kind": effect_kind,
            "p_value": _num(t.p, 6),
            "p_adjusted": _num(q, 6),
            "significant": significant,
        }
        if significant:
            flag = flags.setdefault(
                (col, t.value),
                {"kind": "group", "column": col, "value": t.value, "samples": t.n, "differences": {}},
            )
            flag["differences"][t.metric] = {
                "mean": _num(t.mean),
                "mean_rest": _num(t.mean_rest),
                "effect_size": _num(effect),
                "effect_kind": effect_kind,
                "p_adjusted": _num(q, 6),
            }
    col_codes = {col: codes for col, codes, _ in results}
    for key in _explained_away(flags, col_codes, metrics, strata, summary, ctx, len(results)):
        flags.pop(key)
    out_flags = []
    for flag in flags.values():
        parts = [_difference(m, d) for m, d in flag["differences"].items()]
        head = f"{flag['column']} = {flag['value']!r} ({flag['samples']} samples) differs from the rest: "
        flag["message"] = head + "; ".join(parts)
        out_flags.append(flag)
    meta = {"permutations": n_perm, "tests": len(results), "correction": "Benjamini-Hochberg", "fdr": rules.fdr}
    return summary, meta if results else None, out_flags


def _credit_error_modes(
    rows: Rows, flags: list[dict[str, Any]], group_flags: list[dict[str, Any]], rules: Rules
) -> list[dict[str, Any]]:
    """Drop the cluster flags that are a hard subgroup's error mode, not a shortcut, and say so in
    that subgroup's flag.

    A shortcut is a strategy the model succeeds with. A cluster whose labelled members are mostly
    misclassified (accuracy below ``mostly`` [0.5], over at least half ``min_cluster_size``
    labelled members) and mostly (>= 50%) images of one subgroup value that is itself flagged for
    a lower accuracy is the model's fallback on images it cannot read (a blurred camera's images
    all called one class, their maps on the frame's edge): the subgroup's flag reports it. A
    cluster of correct predictions (a tag that comes with its class) is never dropped, even when
    a subgroup carries the tag.
    """
    worse: list[tuple[dict[str, Any], str]] = []  # (a group flag, the value whose accuracy is lower)
    for g in group_flags:
        acc = g["differences"].get("accuracy")
        if acc is None or acc["mean"] is None or acc["mean_rest"] is None:
            continue
        if acc["mean"] < acc["mean_rest"]:
            worse.append((g, g["value"]))
        else:  # a two-valued column's flag names the smaller value; the other is the worse one
            present = {v for v in rows.groups[g["column"]] if v is not None}
            if len(present) == 2:
                worse.append((g, next(v for v in present if v != g["value"])))
    kept = []
    for flag in flags:
        members = flag.pop("_members", None)
        if flag["kind"] != "cluster" or members is None or not worse:
            kept.append(flag)
            continue
        correct = rows.correct[members]
        labelled = ~np.isnan(correct)
        accuracy = float(correct[labelled].mean()) if labelled.any() else None
        credited = None
        if accuracy is not None and labelled.sum() >= rules.min_cluster_size / 2 and accuracy < rules.mostly:
            for g, value in worse:
                share = float(np.mean(rows.groups[g["column"]][members] == value))
                if share >= 0.5:
                    credited = g
                    explains = {
                        "class": flag["class"], "cluster": flag.get("cluster"), "size": flag["size"], "value": value,
                        "share_of_cluster": _num(share), "accuracy": _num(accuracy),
                    }  # fmt: skip
                    g.setdefault("explains", []).append(explains)
                    g["message"] += (
                        f"; {g['column']} = {value!r} images make up {share:.0%} of a strategy cluster of class "
                        f"{flag['class']!r} ({flag['size']} maps, accuracy {accuracy:.0%}): the model's fallback, "
                        "not a shortcut"
                    )
                    break
        if credited is None:
            kept.append(flag)
    return kept


def _difference(metric: str, d: Mapping[str, Any]) -> str:
    """``accuracy 60% vs 99% (p 0.0015)``: shares in percent, entropy to 2 places."""
    names = {"accuracy": "accuracy", "region_energy": "energy on the object", "entropy": "entropy",
             "border_energy": "energy on the border"}  # fmt: skip

    def show(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}" if metric == "entropy" else f"{x:.0%}"

    p = d["p_adjusted"]
    return f"{names.get(metric, metric)} {show(d['mean'])} vs {show(d['mean_rest'])} (adjusted p {p:.2g})"


def _min_effect(metric: str, rules: Rules) -> float:
    """The smallest effect that makes a group finding: Cohen's small for accuracy, medium for maps."""
    return rules.min_effect if metric == "accuracy" else rules.min_map_effect


def _effect(metric: str, values: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's h (accuracy) or d (the rest) of rows ``a`` against rows ``b``."""
    if metric == "accuracy":
        pa_, pb_ = _mean(values[a]), _mean(values[b])
        return 0.0 if pa_ is None or pb_ is None else cohens_h(pa_, pb_)
    return cohens_d(values[a], values[b])


def _explained_away(
    flags: dict[tuple[str, str], dict[str, Any]],
    col_codes: dict[str, np.ndarray],
    metrics: dict[str, np.ndarray],
    strata: np.ndarray,
    summary: dict[str, Any],
    ctx: AuditContext,
    family: int,
) -> list[tuple[str, str]]:
    """The group flags to drop: in one column, most deviant value first, each later value is
    tested again against the rest without the values kept so far (the same stratified
    permutation test); a value none of whose differences stays significant (p below ``fdr`` over
    the ``family`` of tests, Bonferroni) with an effect of at least :func:`_min_effect` differed only
    because the rest held those values."""
    rules = ctx.rules
    drop = []
    for col, codes in col_codes.items():
        here = [f for (c, _), f in flags.items() if c == col]
        here.sort(key=lambda f: -max(abs(d["effect_size"] or 0.0) for d in f["differences"].values()))
        values = list(summary[col])
        kept: list[int] = []
        for flag in here:
            code = values.index(flag["value"])
            if kept:
                sub = ~np.isin(codes, kept)
                rng = np.random.default_rng(_seed(ctx.seed, "again", col, flag["value"]))
                tests = permutation_test_groups(
                    codes[sub], values, [code], {m: metrics[m][sub] for m in flag["differences"]},
                    strata[sub], rules.n_permutations, rng,
                )  # fmt: skip
                inside, rest = codes[sub] == code, codes[sub] != code
                left = {
                    t.metric: flag["differences"][t.metric]
                    for t in tests
                    if t.p < rules.fdr / max(family, 1)
                    and abs(_effect(t.metric, metrics[t.metric][sub], inside, rest)) >= _min_effect(t.metric, rules)
                }
                if not left:
                    summary[col][flag["value"]]["explained_by"] = [values[k] for k in kept]
                    drop.append((col, flag["value"]))
                    continue
                flag["differences"] = left
            kept.append(code)
    return drop


# --------------------------------------------------------------------------------- summary
def summarize(table: pa.Table, context: AuditContext) -> dict[str, Any]:
    """summary.json's content for a samples table (see the module docstring for the rules).

    Args:
        table: the audit's per-sample table (``camcore.audit.load_samples(DIR)``).
        context: the class names, groups, provenance and sanity result.

    Returns:
        A JSON-serialisable dict: ``camcore_version``, ``model``, ``layer``, ``method``, ``task``,
        ``class_names_source``, ``class_names``, ``counts``, ``accuracy``, ``classes``, ``groups``,
        ``group_tests`` (permutations, tests, correction; None without tests), ``sanity``, ``flags``,
        ``rules``. The same rows, in any order, and context give the same dict.
    """
    with serial_blas():
        return _summarize(table, context)


def _summarize(table: pa.Table, context: AuditContext) -> dict[str, Any]:
    if "id" in table.column_names and table.num_rows:  # the rows' order (engine, resume) changes nothing
        table = table.take(pc.sort_indices(table, sort_keys=[("id", "ascending")]))
    rows = read_rows(table, context.groups)
    prov = dict(context.provenance)
    ok = rows.ok
    labelled = ~np.isnan(rows.correct)
    classes: dict[str, Any] = {}
    flags: list[dict[str, Any]] = []
    for name in _class_order(rows, context.class_names):
        info, class_flags = _class_summary(rows, name, context)
        if info["samples"] or info["labelled"]:
            classes[name] = info
            flags += class_flags
    groups, group_tests, group_flags = _group_tests(rows, context)
    flags = _credit_error_modes(rows, flags, group_flags, context.rules) + group_flags
    sanity = dict(context.sanity) if context.sanity is not None else None
    if sanity is not None and not sanity.get("passed", True):
        flags.append(
            {
                "kind": "sanity",
                "message": (
                    "the maps barely change when the model's weights are randomised "
                    f"(mean Spearman {sanity.get('spearman_mean')}): they may not explain the model"
                ),
                "spearman_mean": sanity.get("spearman_mean"),
                "threshold": sanity.get("threshold"),
            }
        )
    summary = {
        "camcore_version": prov.get("camcore_version"),
        "model": {"path": context.model_path, "sha256": prov.get("model_sha256")},
        "layer": prov.get("layer"),
        "method": prov.get("method"),
        "task": context.task,
        "class_names_source": context.class_names_source,
        "class_names": list(context.class_names),
        "counts": {
            "samples": len(ok),
            "explained": int(ok.sum()),
            "errors": int((rows.errors != None).sum()),  # noqa: E711
            "labelled": int((rows.label != None).sum()),  # noqa: E711
            "with_region": int((ok & ~np.isnan(rows.region_energy)).sum()),
        },
        "accuracy": _num(_mean(rows.correct[labelled])) if labelled.any() else None,
        "classes": classes,
        "groups": groups,
        "group_tests": group_tests,
        "sanity": sanity,
        "flags": flags,
        "rules": {k: getattr(context.rules, k) for k in context.rules.__dataclass_fields__},
    }
    return json.loads(json.dumps(summary, default=_json_default))


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON: {type(x).__name__}")
