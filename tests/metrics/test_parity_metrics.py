"""camcore.metrics against pytorch-grad-cam 1.5.7's metrics on the golden ResNet-18.

``tools/make_gradcam_golden.py --metrics`` ran pytorch-grad-cam's metrics (float32 torch,
CPU, ROAD noise 0) with fixed uint8 maps (stored) and explicit classes. Confidence changes
are logit differences; both sides run float32 forward passes, so they agree to ~1e-5 of
the logits; the ROAD imputation (scipy ``spsolve`` there, numpy conjugate gradient here)
adds ~1e-6. Nothing here needs torch.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import camcore
from camcore import metrics
from tests.golden_models import GOLDEN_DIR, load_golden

ATOL = 1e-3


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
    print(f"{case}: got {got}, pytorch-grad-cam {want}, max diff {err:.2e}")
    assert err <= ATOL, f"{case}: {got} vs {want}"


def test_arcc_matches_pytorch_grad_cam() -> None:
    ref, x, cams, targets, cam = _setup()
    got = metrics.ARCC(cam, road_percentiles=[20, 80], noise=0.0)(x, cams, targets, cam)
    np.testing.assert_allclose(got, ref["arcc"], atol=ATOL)


def test_metrics_accept_a_model_path_or_proto() -> None:
    ref, x, cams, targets, _ = _setup()
    model, _, _ = load_golden("resnet18")
    got = metrics.CamMultImageConfidenceChange()(x, cams, targets, model)
    np.testing.assert_allclose(got, ref["confidence_change"], atol=ATOL)
