"""camcore.metrics on hand-built cases with known answers."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import camcore
from camcore import metrics
from camcore.metrics.road import linear_impute
from camcore.metrics.sanity import downstream_initializers, rankdata, spearman, ssim
from tests.models import tiny_classifier

S = 8


def region_sum_model(region: np.ndarray) -> onnx.ModelProto:
    """x (N,1,S,S) -> score (N,1) = the sum of x over ``region``."""
    nodes = [
        helper.make_node("Mul", ["x", "region"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axes"], ["score"], keepdims=0),
    ]
    inits = [numpy_helper.from_array(region.astype(np.float32)[None, None], "region"),
             numpy_helper.from_array(np.asarray([2, 3], np.int64), "axes")]  # fmt: skip
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, S, S])
    y = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])
    graph = helper.make_graph(nodes, "region_sum", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _region() -> np.ndarray:
    r = np.zeros((S, S), bool)
    r[2:4, 1:5] = True  # 8 of the 64 pixels
    return r


def test_registry_names_every_metric_once() -> None:
    assert set(metrics.__all__) >= set(metrics.METRICS)
    for name in ("CamMultImageConfidenceChange", "DropInConfidence", "IncreaseInConfidence", "ROADMostRelevantFirst",
                 "ROADLeastRelevantFirst", "ROADCombined", "ARCC", "DeletionAUC", "InsertionAUC", "PointingGame",
                 "EnergyPointingGame", "SanityCheck"):  # fmt: skip
        assert metrics.metric_by_name(name).cls is getattr(metrics, name)
    with pytest.raises(camcore.CamcoreError, match="unknown metric"):
        metrics.metric_by_name("Nope")


def test_deletion_and_insertion_auc_of_perfect_and_inverted_maps() -> None:
    """Score = sum of an 8-pixel region of a ones image. Deleting it first (the perfect map),
    pixel k/64 of the way: the score falls linearly to 0 after 8 pixels; the inverted map
    deletes it last. With 64 steps the trapezoid areas are exact."""
    region = _region()
    model = region_sum_model(region)
    x = np.ones((1, 1, S, S), np.float32)
    perfect = region.astype(np.float32)[None]  # ties: pixel order
    inverted = 1 - perfect
    targets = [camcore.RawScoresOutputTarget()]
    deletion = metrics.DeletionAUC(steps=64)
    good = deletion(x, perfect, targets, model)
    curve = deletion.curves[0]
    np.testing.assert_allclose(curve[:9], 8 - np.arange(9))
    assert good[0] == pytest.approx(32 / 64)  # triangle of base 8 px, height 8, over 64 px
    bad = deletion(x, inverted, targets, model)
    assert bad[0] == pytest.approx((56 * 8 + 32) / 64)
    insertion = metrics.InsertionAUC(steps=64)
    assert insertion(x, perfect, targets, model)[0] == pytest.approx((56 * 8 + 32) / 64)
    assert insertion(x, inverted, targets, model)[0] == pytest.approx(32 / 64)


def test_confidence_change_on_a_region_sum() -> None:
    """x ⊙ L keeps exactly the region's mass where L is its indicator: Δ = 0, else Δ = −8."""
    region = _region()
    model = region_sum_model(region)
    x = np.ones((2, 1, S, S), np.float32)
    cams = np.stack([region, ~region]).astype(np.float32)
    t = [camcore.RawScoresOutputTarget()]
    np.testing.assert_allclose(metrics.CamMultImageConfidenceChange()(x, cams, t, model), [0, -8])
    np.testing.assert_allclose(metrics.DropInConfidence()(x, cams, t, model), [0, 8])
    np.testing.assert_array_equal(metrics.IncreaseInConfidence()(x, cams * 2, t, model), [1, 0])


def test_road_removes_the_right_pixels() -> None:
    """A region-sum model on an image that is 1 in the region and 0 elsewhere: removing the
    region (MoRF with the perfect map) imputes it from zeros -> Δ = −8; LeRF keeps it -> 0."""
    region = _region()
    model = region_sum_model(region)
    x = region.astype(np.float32)[None, None]
    cam = (region + 0.01 * np.arange(S * S).reshape(S, S) / (S * S)).astype(np.float32)[None]
    t = [camcore.RawScoresOutputTarget()]
    morf = metrics.ROADMostRelevantFirst(percentile=87.5, noise=0.0)(x, cam, t, model)
    lerf = metrics.ROADLeastRelevantFirst(percentile=12.5, noise=0.0)(x, cam, t, model)
    assert morf[0] == pytest.approx(-8, abs=1e-4)
    assert lerf[0] == pytest.approx(0, abs=1e-4)
    combined = metrics.ROADCombined([12.5, 87.5], noise=0.0)(x, cam, t, model)
    assert combined[0] > 0  # the perfect map scores positive


def test_linear_impute_solves_the_neighbour_system() -> None:
    """Every imputed pixel is the weighted mean of its neighbours; kept pixels are untouched;
    a linear ramp is reproduced exactly away from the border."""
    rng = np.random.default_rng(0)
    img = rng.standard_normal((3, 12, 12)).astype(np.float32)
    keep = rng.random((12, 12)) > 0.6
    out = linear_impute(img, keep).astype(np.float64)
    np.testing.assert_array_equal(out[:, keep], img[:, keep])
    from camcore.metrics.road import NEIGHBOURS, _shift

    inside = np.ones((12, 12))
    s = sum(w * _shift(inside, dy, dx) for (dy, dx), w in NEIGHBOURS)
    mean = sum(w * _shift(out, dy, dx) for (dy, dx), w in NEIGHBOURS) / s
    np.testing.assert_allclose(out[:, ~keep], mean[:, ~keep], atol=1e-5)
    ramp = np.tile(np.arange(12, dtype=np.float32), (1, 12, 1))
    hole = np.ones((12, 12), bool)
    hole[4:8, 4:8] = False
    np.testing.assert_allclose(linear_impute(ramp, hole), ramp, atol=1e-5)


def test_linear_impute_matches_scipy_spsolve() -> None:
    """The same system solved directly (scipy, if present; not a camcore dependency)."""
    sparse = pytest.importorskip("scipy.sparse")
    linalg = pytest.importorskip("scipy.sparse.linalg")
    from camcore.metrics.road import NEIGHBOURS

    rng = np.random.default_rng(1)
    h = w = 10
    img = rng.standard_normal((2, h, w))
    keep = rng.random((h, w)) > 0.5
    miss = np.argwhere(~keep)
    index = {tuple(p): i for i, p in enumerate(miss)}
    a = sparse.lil_matrix((len(miss), len(miss)))
    b = np.zeros((len(miss), 2))
    for i, (y, x) in enumerate(miss):
        for (dy, dx), wt in NEIGHBOURS:
            yy, xx = y + dy, x + dx
            if 0 <= yy < h and 0 <= xx < w:
                a[i, i] += wt
                if keep[yy, xx]:
                    b[i] += wt * img[:, yy, xx]
                else:
                    a[i, index[(yy, xx)]] -= wt
    want = linalg.spsolve(sparse.csc_matrix(a), b)
    got = linear_impute(img, keep)
    np.testing.assert_allclose(got[:, ~keep].T, want, atol=1e-6)


def test_pointing_games_on_known_peaks() -> None:
    cams = np.zeros((3, 20, 20), np.float32)
    cams[0, 5, 5] = 1  # inside the box
    cams[1, 15, 15] = 1  # 7 px (diagonal ~9.9) from the box corner (8, 8)
    cams[2] = 0.5  # flat: points everywhere
    boxes = [(2, 2, 9, 9)] * 3
    np.testing.assert_array_equal(metrics.PointingGame(tolerance=0)(cams, boxes=boxes), [1, 0, 1])
    np.testing.assert_array_equal(metrics.PointingGame(tolerance=10)(cams, boxes=boxes), [1, 1, 1])
    masks = np.zeros((3, 20, 20), bool)
    masks[:, 14:, 14:] = True
    np.testing.assert_array_equal(metrics.PointingGame(tolerance=0)(cams, masks=masks), [0, 1, 1])
    energy = metrics.EnergyPointingGame()(cams, boxes=boxes)
    np.testing.assert_allclose(energy, [1, 0, 49 / 400], rtol=1e-6)
    two = metrics.EnergyPointingGame()(cams[1:2], boxes=[[(2, 2, 9, 9), (14, 14, 16, 16)]])
    np.testing.assert_allclose(two, [1])
    with pytest.raises(camcore.CamcoreError, match="either boxes or masks"):
        metrics.PointingGame()(cams)


def test_rank_statistics() -> None:
    assert rankdata(np.array([1.0, 1.0, 1.0])).tolist() == [1.0, 1.0, 1.0]
    a = np.random.default_rng(0).random((2, 6, 6))
    np.testing.assert_allclose(spearman(a, a), 1)
    np.testing.assert_allclose(spearman(a, -a), -1)
    np.testing.assert_allclose(spearman(a, a**3 + 1), 1)  # monotone: rank correlation 1
    np.testing.assert_allclose(ssim(a, a), 1)
    assert (ssim(a, 1 - a) < 0.5).all()


def test_sanity_check_flags_a_method_blind_to_the_weights() -> None:
    """Randomising the classifier after ``feat`` changes Grad-CAM's map, not EigenCAM's (which
    reads the activations only): EigenCAM is flagged, Grad-CAM is not."""
    model, _ = tiny_classifier(channels=8, size=16)
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    assert downstream_initializers(model, "feat") == ["fc_w", "fc_b"]
    check = metrics.SanityCheck(threshold=0.5, seed=0)
    eigen = check(camcore.EigenCAM(model, ["feat"]), x)
    assert eigen.flagged and np.allclose(eigen.spearman, 1)
    grad = check(camcore.GradCAM(model, ["feat"]), x, [camcore.ClassifierOutputTarget(1)] * 2)
    assert not grad.flagged, grad.spearman
    assert eigen.randomised == grad.randomised == ["fc_w", "fc_b"]
