"""The audit's analysis: the flag rules on synthetic tables (scenes of camcore.scenes, maps
synthesised: object-centred for clean samples, a fixed corner spot for a planted shortcut),
determinism, the statistics helpers against scipy, and the sanity check on the demo model."""

from __future__ import annotations

import json
from dataclasses import replace
from functools import cache

import numpy as np
import pyarrow as pa
import pytest

from camcore.audit.analysis import SHORTCUT_KINDS, AuditContext, Rules, peak_dispersion, summarize
from camcore.audit.significance import benjamini_hochberg, cohens_h, fisher_upper_tail, one_sided_below
from camcore.audit.spectral import map_features, spectral_clusters
from camcore.scenes import CLASS_NAMES
from tests.audit.synth import Spec, make_table

CTX = AuditContext(class_names=list(CLASS_NAMES), class_names_source="labels", groups=["site", "camera"])


@cache
def _summary(spec: Spec) -> dict:
    return summarize(make_table(spec), CTX)


def _kinds(summary: dict, kinds: tuple[str, ...] = SHORTCUT_KINDS) -> list[tuple[str, str | None]]:
    return [(f["kind"], f.get("class")) for f in summary["flags"] if f["kind"] in kinds]


CLEAN = Spec(n=300, seed=1)
SHORTCUT = Spec(n=300, seed=2, shortcut="star", shortcut_rate=0.6, marked_rate=0.08)


def test_clean_data_raises_no_flag() -> None:
    s = _summary(CLEAN)
    assert s["flags"] == [], s["flags"]
    assert s["counts"] == {"samples": 300, "explained": 300, "errors": 0, "labelled": 300, "with_region": 300}
    for name, c in s["classes"].items():
        assert c["region_energy_mean"] > 2 * c["region_area_mean"], name  # the maps sit on the objects
        assert len(c["clusters"]) == 1, name  # objects anywhere: one strategy, not arbitrary cuts


def test_clean_data_without_regions_raises_no_flag() -> None:
    assert _summary(replace(CLEAN, regions=False))["flags"] == []


def test_planted_shortcut_is_flagged_and_only_there() -> None:
    s = _summary(SHORTCUT)
    flagged = _kinds(s)
    assert flagged and {c for _, c in flagged} == {"star"}, flagged
    cluster = next(f for f in s["flags"] if f["kind"] == "cluster")
    assert cluster["region_energy_mean"] < cluster["bound"]
    assert cluster["peak"][0] < 0.2 and cluster["peak"][1] < 0.2  # the spot, top-left
    star = s["classes"]["star"]
    assert len(star["clusters"]) == 2
    assert star["clusters"][cluster["cluster"]]["peak_dispersion"] < 0.05


def test_shortcut_as_the_main_behaviour_is_off_object() -> None:
    s = _summary(replace(SHORTCUT, shortcut_rate=1.0, marked_rate=0.0))
    assert ("off_object", "star") in _kinds(s)
    assert {c for _, c in _kinds(s)} == {"star"}


def test_shortcut_without_regions_is_a_fixed_spot() -> None:
    s = _summary(replace(SHORTCUT, regions=False, marked_rate=0.0, shortcut_rate=0.4))
    flags = [f for f in s["flags"] if f["kind"] in SHORTCUT_KINDS]
    assert [(f["kind"], f["class"]) for f in flags] == [("cluster", "star")]
    assert flags[0]["reason"] in ("fixed_spot", "fixed_spot_scan") and flags[0]["spot"]["enrichment"] >= 3


@pytest.mark.parametrize("regions", [True, False])
def test_a_small_fixed_spot_strategy_is_found_by_the_scan(regions: bool) -> None:
    """A quarter of the stars peak on the spot: too few for the clustering to split off here, but
    the scan finds them; clean classes stay clean."""
    s = _summary(Spec(n=300, seed=2, shortcut="star", shortcut_rate=0.25, regions=regions))
    assert len(s["classes"]["star"]["clusters"]) == 1
    flags = [f for f in s["flags"] if f["kind"] in SHORTCUT_KINDS]
    assert [(f["class"], f["reason"]) for f in flags] == [("star", "fixed_spot_scan")], s["flags"]
    assert flags[0]["p_adjusted"] < 0.01 and len(flags[0]["members"]) == 8


def test_subgroup_that_behaves_differently_is_flagged_and_the_control_is_not() -> None:
    s = _summary(Spec(n=300, seed=3, site_b_error=0.25))
    groups = [(f["column"], f["value"]) for f in s["flags"] if f["kind"] == "group"]
    assert len(groups) == 1 and groups[0][0] == "site", s["flags"]
    assert "camera" not in {c for c, _ in groups}
    assert not _kinds(s)
    test = s["groups"]["site"][groups[0][1]]["tests"]["accuracy"]
    assert test["significant"] and test["p_adjusted"] < 0.05 and abs(test["effect_size"]) >= 0.2


def test_thin_data_is_not_flagged_but_said() -> None:
    s = _summary(Spec(n=60, seed=4, shortcut="star", shortcut_rate=1.0))
    assert s["classes"]["star"]["samples"] < 20
    assert not _kinds(s)
    thin = [f for f in s["flags"] if f["kind"] == "thin_data"]
    assert [f["class"] for f in thin] == ["star"] and thin[0]["needed"] == 20


def test_summary_is_deterministic_and_json() -> None:
    table = make_table(Spec(n=200, seed=5, shortcut="star", site_b_error=0.3))
    a, b = summarize(table, CTX), summarize(table, CTX)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    shuffled = table.take(np.random.default_rng(0).permutation(table.num_rows))
    assert json.dumps(summarize(shuffled, CTX), sort_keys=True) == json.dumps(a, sort_keys=True)
    other = summarize(table, replace(CTX, seed=7))
    assert [f["kind"] for f in other["flags"]] == [f["kind"] for f in a["flags"]]


def test_failed_rows_are_counted_not_analysed() -> None:
    table = make_table(Spec(n=120, seed=6))
    error = pa.array(["cannot read"] * 5 + [None] * 115, pa.string())
    maps = table.column("map").to_pylist()
    maps = pa.array([None] * 5 + maps[5:], table.schema.field("map").type)
    table = table.set_column(table.schema.get_field_index("error"), "error", error)
    table = table.set_column(table.schema.get_field_index("map"), "map", maps)
    s = summarize(table, CTX)
    assert s["counts"]["errors"] == 5 and s["counts"]["explained"] == 115
    assert sum(c["samples"] for c in s["classes"].values()) == 115


def test_rules_are_reported() -> None:
    s = summarize(make_table(Spec(n=40, seed=7)), replace(CTX, rules=Rules(lift=3.0)))
    assert s["rules"]["lift"] == 3.0 and s["rules"]["min_samples"] == 20


# --------------------------------------------------------------------------- the helpers
def test_spectral_separates_strategies_and_keeps_a_continuum_whole() -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32]

    def blob(x: float, y: float) -> np.ndarray:
        return np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 18.0) + rng.random((32, 32)) * 0.1

    spot = [blob(4 + rng.normal(0, 0.5), 4 + rng.normal(0, 0.5)) for _ in range(40)]
    anywhere = [blob(*rng.uniform(6, 28, 2)) for _ in range(60)]
    two = spectral_clusters(map_features(np.asarray(spot + anywhere)))
    assert two.k == 2 and np.bincount(two.labels).tolist() == [60, 40]
    assert len(set(two.labels[:40])) == 1
    assert spectral_clusters(map_features(np.asarray(anywhere))).k == 1
    assert spectral_clusters(map_features(np.asarray(spot[:10]))).k == 1  # too few to split


def test_statistics_agree_with_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    p = np.array([0.001, 0.04, 0.03, 0.2, 0.5, 0.012])
    np.testing.assert_allclose(benjamini_hochberg(p), stats.false_discovery_control(p), rtol=1e-12)
    for k, n, k0, n0 in [(3, 4, 1, 6), (5, 66, 0, 184), (10, 100, 20, 900), (88, 215, 0, 785), (0, 10, 3, 10)]:
        assert fisher_upper_tail(k, n, k0, n0) == pytest.approx(stats.hypergeom.sf(k - 1, n + n0, k + k0, n), rel=1e-8)
    x = np.random.default_rng(1).normal(0.1, 0.2, 50)
    assert one_sided_below(x, 0.2) == pytest.approx(stats.norm.cdf((x.mean() - 0.2) / (x.std(ddof=1) / np.sqrt(50))))
    assert cohens_h(0.5, 0.5) == 0.0


def test_peak_dispersion_of_a_spot_and_of_uniform_peaks() -> None:
    rng = np.random.default_rng(2)
    assert peak_dispersion(np.full(20, 0.1), np.full(20, 0.1)) == 0.0
    assert peak_dispersion(*rng.random((2, 5000))) == pytest.approx(0.27, abs=0.02)


def test_sanity_check_on_the_demo_model() -> None:
    import camcore
    from camcore.audit.sanity import sanity_check
    from camcore.demo import DEMO_MODEL, load_demo_meta, preprocess
    from camcore.scenes import generate_batch

    meta = load_demo_meta()
    x = preprocess(np.stack([s.image for s in generate_batch(8, 99)]), meta)
    result = sanity_check(camcore.GradCAM(str(DEMO_MODEL), meta["target_layer"]), x)
    assert result["samples"] == 8 and result["repeats"] == 3 and result["passed"] is True
    assert result["spearman_mean"] < 0.5 and result["randomised_initializers"] > 0
    assert not [f for f in summarize(make_table(Spec(n=30)), replace(CTX, sanity=result))["flags"]]
    failed = {**result, "passed": False, "spearman_mean": 0.93}
    flags = summarize(make_table(Spec(n=30)), replace(CTX, sanity=failed))["flags"]
    assert [f["kind"] for f in flags] == ["sanity"]


def test_a_group_differing_only_by_its_class_mix_is_not_flagged() -> None:
    """Value "V" holds every circle (a class the model gets wrong 40% of the time) and 10% of the
    rest at random: its accuracy is lower, but not within any class. Permuting within classes
    sees that; a plain permutation test would flag it."""
    table = make_table(Spec(n=300, seed=11, base_error=0.0, site_b_error=0.0))
    rng = np.random.default_rng(0)
    labels = table.column("label").to_pylist()
    circle = np.asarray([v == "circle" for v in labels])
    wrong = circle & (rng.random(len(labels)) < 0.4)
    correct = pa.array(~wrong)
    ward = pa.array(np.where(circle | (rng.random(len(labels)) < 0.1), "V", "W"))
    table = table.set_column(table.schema.get_field_index("correct"), "correct", correct)
    table = table.set_column(table.schema.get_field_index("camera"), "camera", ward)
    s = summarize(table, CTX)
    accuracy = s["groups"]["camera"]["V"]["accuracy"], s["groups"]["camera"]["W"]["accuracy"]
    assert accuracy[0] < accuracy[1] - 0.15
    assert not [f for f in s["flags"] if f["kind"] == "group"], s["flags"]


def test_an_aligned_dataset_has_no_shortcut() -> None:
    """Every class's maps on one spot (as in aligned faces or scans), no regions: the spot is no
    shortcut of any class, since the other classes peak there as often."""
    s = _summary(Spec(n=300, seed=12, regions=False, aligned=True))
    assert not _kinds(s), s["flags"]
    assert all(c["peak_dispersion"] < 0.05 for c in s["classes"].values())


def test_maps_lost_at_random_places_are_no_shortcut() -> None:
    """Site B's maps land anywhere for 80% of its images (a camera the model cannot read): off the
    objects, but nowhere in particular. The site is a finding; no class has a shortcut."""
    s = _summary(Spec(n=300, seed=13, site_b_lost=0.8, site_b_error=0.5))
    assert not _kinds(s), s["flags"]
    assert [(f["kind"], f["column"]) for f in s["flags"]] == [("group", "site")]


def test_a_class_that_receives_the_lost_images_is_not_off_object() -> None:
    """Site B's images are lost (maps in noise) and mostly called "triangle": most of triangle's
    maps sit off the (other classes') objects, but its own objects get its attention."""
    s = _summary(Spec(n=300, seed=14, site_b_lost=1.0, site_b_error=0.9, wrong_to="triangle"))
    triangle = s["classes"]["triangle"]
    assert triangle["region_energy_mean_all"] < 0.15 < triangle["region_energy_mean"]
    assert not _kinds(s), s["flags"]


@pytest.mark.parametrize("regions", [True, False])
def test_flat_maps_peaking_in_a_corner_are_no_shortcut(regions: bool) -> None:
    """Site B's images are unreadable: flat maps whose highest pixel sits in the corner (as zero
    padding leaves it), all called "triangle". Their peaks coincide, but no energy is there."""
    spec = Spec(n=300, seed=15, site_b_lost=1.0, site_b_error=0.9, wrong_to="triangle", lost_corner=True,
                regions=regions)  # fmt: skip
    s = _summary(spec)
    assert s["classes"]["triangle"]["peak_dispersion"] < 0.05  # the peaks do sit on one spot
    assert not _kinds(s), s["flags"]


def test_a_hard_sites_fallback_cluster_is_the_sites_finding() -> None:
    """Site B's images are unreadable and mostly called "triangle", their maps on the frame's
    bottom-left edge (energy there, one fixed spot): a cluster of wrong predictions from one flagged
    site is the model's fallback, reported by the site's flag, not a shortcut of "triangle"."""
    spec = Spec(n=300, seed=17, site_b_lost=1.0, site_b_error=0.9, wrong_to="triangle", lost_edge=True)
    s = _summary(spec)
    assert not _kinds(s), s["flags"]
    (site,) = [f for f in s["flags"] if f["kind"] == "group"]  # A vs the rest is B vs the rest: either is named
    assert site["column"] == "site"
    (credit,) = site["explains"]
    assert (credit["class"], credit["value"]) == ("triangle", "B")
    assert credit["accuracy"] < 0.5 and credit["share_of_cluster"] >= 0.5
    assert "fallback, not a shortcut" in site["message"]


def test_a_shortcut_carried_by_one_site_stays_a_shortcut() -> None:
    """Only site B's stars carry the mark and it works (the stars are called star): a flagged site
    does not take the credit for a cluster of correct predictions."""
    spec = Spec(n=400, seed=18, shortcut="star", shortcut_rate=0.7, site_b_error=0.3)
    s = _summary(spec)
    assert ("cluster", "star") in _kinds(s) or ("off_object", "star") in _kinds(s), s["flags"]


def test_in_a_three_valued_column_only_the_deviant_value_is_flagged() -> None:
    """Site C errs 40% of the time, A and B 2%: against "the rest" A and B look better, but only
    because the rest holds C; once C is set aside they differ in nothing."""
    s = _summary(Spec(n=450, seed=16, site_b_error=0.02, site_c_error=0.4))
    groups = [(f["column"], f["value"]) for f in s["flags"] if f["kind"] == "group"]
    assert groups == [("site", "C")], s["flags"]
    explained = [v for v, g in s["groups"]["site"].items() if g.get("explained_by")]
    assert explained and all(s["groups"]["site"][v]["explained_by"] == ["C"] for v in explained)


def test_a_small_shift_of_a_map_statistic_is_no_finding() -> None:
    """camera = y's border energy is shifted by 0.35 standard deviations (significant at this size,
    but no medium effect): no flag. Its accuracy falling from 98% to 90% (Cohen's h 0.35) is one."""
    table = make_table(Spec(n=500, seed=17))
    camera = np.asarray(table.column("camera").to_pylist()) == "y"
    border = np.asarray(table.column("border_energy").to_numpy(zero_copy_only=False), np.float64)
    shifted = np.where(camera, border + 0.35 * border.std(), border).astype(np.float32)
    table = table.set_column(table.schema.get_field_index("border_energy"), "border_energy", pa.array(shifted))
    s = summarize(table, CTX)
    test = s["groups"]["camera"]["y"]["tests"]["border_energy"] if "y" in s["groups"]["camera"] else None
    test = test or s["groups"]["camera"]["x"]["tests"]["border_energy"]
    assert test["p_adjusted"] < 0.05 and 0.2 < abs(test["effect_size"]) < 0.5
    assert not [f for f in s["flags"] if f["kind"] == "group"], s["flags"]
    rng = np.random.default_rng(3)
    correct = np.asarray(table.column("correct").to_pylist()) & ~(camera & (rng.random(len(camera)) < 0.08))
    table = table.set_column(table.schema.get_field_index("correct"), "correct", pa.array(correct))
    assert [f["column"] for f in summarize(table, CTX)["flags"] if f["kind"] == "group"] == ["camera"]
