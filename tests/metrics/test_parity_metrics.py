"""camcore.metrics against pytorch-grad-cam 1.5.7's metrics on the golden ResNet-18.

``tools/make_gradcam_golden.py --metrics`` ran pytorch-grad-cam's metrics (float32 torch,
CPU, ROAD noise 0) with fixed uint8 maps (stored) and explicit classes on the golden
ResNet-18 and its kink-free golden input. Confidence changes are logit differences; both
sides run float32 forward passes, and the ROAD imputation solves a sparse system (scipy
``spsolve`` there, numpy conjugate gradient here). Nothing here needs torch.

Tolerances: ``TOLERANCE`` holds, per metric, the largest |camcore - pytorch-grad-cam|
allowed, about ten times the difference observed (printed with ``-s``), with the reason.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import camcore
from camcore import metrics
from tests.golden_models import GOLDEN_DIR, load_golden

#: metric -> (largest |camcore - pytorch-grad-cam|, observed difference and why it is that size)
_LOGITS = "a difference of float32 logits (O(1)) from two forward passes of the masked images"
_ROAD = _LOGITS + ", after ROAD's imputation (a sparse solve, scipy's spsolve there, CG here)"
TOLERANCE: dict[str, tuple[float, str]] = {
    "confidence_change": (7e-6, _LOGITS + "; observed 6.6e-7"),
    "drop": (7e-6, _LOGITS + "; observed 6.6e-7"),
    "increase": (7e-6, "clipped to 0 on both sides (observed 0); before clipping it is confidence_change"),
    "morf80": (8e-6, _ROAD + "; observed 7.8e-7"),
    "lerf20": (1e-5, _ROAD + "; observed 9.5e-7"),
    "morf_auto": (7e-6, _ROAD + "; observed 6.6e-7"),
    "morf_avg": (7e-6, _ROAD + " (mean of three); observed 6.7e-7"),
    "lerf_avg": (7e-6, _ROAD + " (mean of three); observed 6.3e-7"),
    "combined": (2e-6, _ROAD + ", halved difference of two averages; observed 1.2e-7"),
    "arcc": (2e-6, "harmonic mean of coherency, complexity and ROAD (values 0.03, 0.08); observed 1.8e-7"),
}


@functools.cache
def _setup() -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, list, camcore.GradCAM]:
    with np.load(GOLDEN_DIR / "metrics_resnet18.npz") as npz:
        ref = {k: npz[k] for k in npz.files}
    model, arrays, _ = load_golden("resnet18")
    cams = ref["cams_u8"].astype(np.float32) / np.float32(255)
    targets = [camcore.ClassifierOutputTarget(int(k)) for k in ref["classes"]]
    cam = camcore.GradCAM(model, [str(ref["arcc_layers"][0])], threads=2)
    return ref, arrays["input"], cams, targets, cam


CASES = {
    "confidence_change": lambda: metrics.CamMultImageConfidenceChange(),
    "drop": lambda: metrics.DropInConfidence(),
    "increase": lambda: metrics.IncreaseInConfidence(),
    "morf80": lambda: metrics.ROADMostRelevantFirst(80, noise=0.0),
    "lerf20": lambda: metrics.ROADLeastRelevantFirst(20, noise=0.0),
    "morf_auto": lambda: metrics.ROADMostRelevantFirst("auto", noise=0.0),
    "morf_avg": lambda: metrics.ROADMostRelevantFirstAverage([20, 50, 80], noise=0.0),
    "lerf_avg": lambda: metrics.ROADLeastRelevantFirstAverage([20, 50, 80], noise=0.0),
    "combined": lambda: metrics.ROADCombined([30, 70], noise=0.0),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_metric_matches_pytorch_grad_cam(case: str) -> None:
    ref, x, cams, targets, cam = _setup()
    got = np.asarray(CASES[case]()(x, cams, targets, cam))
    want = ref[case]
    assert got.shape == want.shape
    err = float(np.abs(got - want).max())
    tol = TOLERANCE[case][0]
    print(f"{case}: got {got}, pytorch-grad-cam {want}, max diff {err:.2e} (tolerance {tol:.0e})")
    assert err <= tol, f"{case}: {got} vs {want}, max diff {err:.2e} > {tol:.0e}"


def test_arcc_matches_pytorch_grad_cam() -> None:
    """ARCC on maps for which ROAD is positive (inverted Grad-CAM maps, stored as uint8):
    with ROAD clipped to 0 it would be the constant 3e-8."""
    ref, x, _, targets, cam = _setup()
    cams = ref["arcc_cams_u8"].astype(np.float32) / np.float32(255)
    got = np.asarray(metrics.ARCC(cam, road_percentiles=[20, 80], noise=0.0)(x, cams, targets, cam))
    assert (ref["arcc"] > 1e-3).all()
    err = float(np.abs(got - ref["arcc"]).max())
    print(f"arcc: max diff {err:.2e}")
    assert err <= TOLERANCE["arcc"][0], f"arcc: {got} vs {ref['arcc']}"


def test_metrics_accept_a_model_path_or_proto() -> None:
    ref, x, cams, targets, _ = _setup()
    model, _, _ = load_golden("resnet18")
    got = metrics.CamMultImageConfidenceChange()(x, cams, targets, model)
    np.testing.assert_allclose(got, ref["confidence_change"], rtol=0, atol=TOLERANCE["confidence_change"][0])


def test_every_metric_has_a_tolerance() -> None:
    assert set(TOLERANCE) == {*CASES, "arcc"}
    assert all(tol > 0 and why for tol, why in TOLERANCE.values())
