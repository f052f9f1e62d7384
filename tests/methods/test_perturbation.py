"""ScoreCAM, SSCAM, ISCAM and AblationCAM: reductions between them, the memory bound of the
masked inputs, the cut model AblationCAM re-runs, and the top-k variant. (Their parity with
pytorch-grad-cam is in tests/api/test_parity_methods.py.)"""

from __future__ import annotations

import tracemalloc

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import camcore
from camcore.methods.perturbation import interp_matrix, upsample
from tests.models import tiny_classifier


def _x(seed: int, n: int = 2, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


def wide_classifier(channels: int = 256, size: int = 64, stride: int = 8) -> onnx.ModelProto:
    """x (N,3,S,S) -> strided Conv to ``channels`` -> Relu ("feat") -> GAP -> Gemm (10 classes)."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((channels, 3, stride, stride)).astype(np.float32) * 0.1, "w"),
        numpy_helper.from_array(rng.standard_normal((10, channels)).astype(np.float32), "fc_w"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["conv"], strides=[stride, stride]),
        helper.make_node("Relu", ["conv"], ["feat"]),
        helper.make_node("GlobalAveragePool", ["feat"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w"], ["logits"], transB=1),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, size, size])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])
    graph = helper.make_graph(nodes, "wide", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_upsample_is_aligned_corners_bilinear() -> None:
    """Corners map to corners and the weights of every output row sum to 1."""
    m = interp_matrix(3, 96)
    np.testing.assert_allclose(m.sum(axis=1), 1, atol=1e-6)
    assert m[0, 0] == 1 and m[-1, -1] == 1
    planes = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    up = upsample(planes, (3, 5))
    np.testing.assert_allclose(up[0, 1], [1.5, 2.0, 2.5, 3.0, 3.5])  # midway between the two rows


def test_sscam_without_noise_and_iscam_with_one_step_are_scorecam() -> None:
    model, _ = tiny_classifier()
    x = _x(0)
    ref = camcore.ScoreCAM(model, ["feat"])(x)
    ss = camcore.SSCAM(model, ["feat"], std=0.0, num_samples=3)(x)
    iss = camcore.ISCAM(model, ["feat"], num_samples=1)(x)
    np.testing.assert_array_equal(ss, ref)
    np.testing.assert_array_equal(iss, ref)
    noisy = camcore.SSCAM(model, ["feat"], std=2.0, num_samples=3, seed=0)(x)
    assert np.abs(noisy - ref).max() > 1e-3  # the noise is used
    np.testing.assert_array_equal(noisy, camcore.SSCAM(model, ["feat"], std=2.0, num_samples=3, seed=0)(x))
    assert np.abs(camcore.ISCAM(model, ["feat"], num_samples=4)(x) - ref).max() > 1e-4


def test_scorecam_weights_by_hand() -> None:
    """w = softmax_c(logit_k(x ⊙ M_c)) on the tiny classifier, computed independently."""
    model, _ = tiny_classifier()
    x = _x(1, n=1)
    cam = camcore.ScoreCAM(model, ["feat"])
    got = cam(x)
    act = cam.activations["feat"][0]
    k = int(cam.engine.outputs_of({"x": x})[0].argmax())
    masks = []
    for a in act:  # 8x8 layer at 8x8 input: the upsampling is the identity
        masks.append((a - a.min()) / (a.max() - a.min() + 1e-8))
    scores = np.asarray([cam.engine.outputs_of({"x": x * m[None, None]})[0, k] for m in masks])
    w = np.exp(scores - scores.max())
    w /= w.sum()
    raw = np.maximum(np.einsum("c,chw->hw", w, act), 0)
    want = (raw - raw.min()) / (raw.max() - raw.min() + 1e-7)
    np.testing.assert_allclose(got[0], want, atol=1e-5)


@pytest.mark.parametrize("batch_size", [4, 16])
def test_scorecam_peak_memory_is_bounded_by_the_batch(batch_size: int) -> None:
    """256 channels at 64x64: all masked inputs at once (pytorch-grad-cam) are 12.6 MB; camcore
    holds ``batch_size`` of them (48 KB each), whatever the channel count."""
    model = wide_classifier()
    x = _x(2, n=1, size=64)
    cam = camcore.ScoreCAM(model, ["feat"], batch_size=batch_size, threads=1)
    cam(x)  # compile the sessions first
    tracemalloc.start()
    try:
        cam(x)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    one = 3 * 64 * 64 * 4
    everything = 256 * one
    assert peak < 8 * batch_size * one + 1_000_000, f"peak {peak / 1e6:.1f} MB for batch {batch_size}"
    assert peak < everything / 4


def test_scorecam_topk_scores_only_k_channels() -> None:
    model = wide_classifier(channels=32, size=16, stride=4)
    x = _x(3, n=1, size=16)
    calls = []
    cam = camcore.ScoreCAM(model, ["feat"], top_k=5, batch_size=4)
    real = cam.engine.scores

    def spy(feeds, targets, batch_size=32, layers=()):  # type: ignore[no-untyped-def]
        calls.append(next(iter(feeds.values())).shape[0])
        return real(feeds, targets, batch_size, layers)

    cam.engine.scores = spy  # type: ignore[method-assign]
    out = cam(x)
    assert sum(calls) == 5 and max(calls) <= 4
    full = camcore.ScoreCAM(model, ["feat"])(x)
    assert out.shape == full.shape
    assert np.corrcoef(out.ravel(), full.ravel())[0, 1] > 0.5  # the top channels dominate the map
    grad = camcore.ScoreCAM(model, ["feat"], top_k=32, rank_by="gradient")(x)
    np.testing.assert_allclose(grad, full, atol=1e-6)  # k = C: every channel, any order
    with pytest.raises(camcore.CamcoreError, match="rank_by"):
        camcore.ScoreCAM(model, ["feat"], top_k=3, rank_by="size")(x)


def test_ablationcam_runs_only_the_cut_model_and_matches_a_full_rerun() -> None:
    """Ablation through the cut model = zeroing the channel in the full model (by hand)."""
    model, w = tiny_classifier(channels=6)
    x = _x(4)
    cam = camcore.AblationCAM(model, ["feat"], batch_size=4)
    seen = []
    real = cam.engine.downstream_scores

    def spy(layer, feeds, activations, targets, batch_size=None):  # type: ignore[no-untyped-def]
        seen.append((layer, activations.shape))
        return real(layer, feeds, activations, targets, batch_size)

    cam.engine.downstream_scores = spy  # type: ignore[method-assign]
    got = cam(x)
    assert seen and all(layer == "feat" and shape[0] <= 4 for layer, shape in seen)
    assert sum(shape[0] for _, shape in seen) == 2 * 6
    # by hand: logit_k = fc_w[k] · mean(feat) + fc_b[k]
    feat = cam.activations["feat"]
    k = (feat.mean(axis=(2, 3)) @ w["fc_w"].T + w["fc_b"]).argmax(axis=1)
    maps = []
    for i in range(2):
        pooled = feat[i].mean(axis=(1, 2))
        y = pooled @ w["fc_w"][k[i]] + w["fc_b"][k[i]]
        value = 0.0 if feat[i].min() == 0 else feat[i].min() - 1e7
        ablated = np.asarray([y - (pooled[c] - value) * w["fc_w"][k[i], c] for c in range(6)])
        weights = (y - ablated) / y
        raw = np.maximum(np.einsum("c,chw->hw", weights, feat[i]), 0)
        maps.append((raw - raw.min()) / (raw.max() - raw.min() + 1e-7))
    np.testing.assert_allclose(got, np.asarray(maps), atol=1e-4)


def test_ablationcam_ratio_and_topk_ablate_fewer_channels() -> None:
    model, _ = tiny_classifier(channels=8)
    x = _x(5, n=1)
    for opts, count in (({"top_k": 3}, 3), ({"ratio_channels_to_ablate": 0.25}, 4)):
        cam = camcore.AblationCAM(model, ["feat"], **opts)
        n: list[int] = []

        def spy(*a, real=cam.engine.downstream_scores, n=n, **k):  # type: ignore[no-untyped-def]
            n.append(a[2].shape[0])
            return real(*a, **k)

        cam.engine.downstream_scores = spy  # type: ignore[method-assign]
        assert cam(x).shape == (1, 8, 8)
        assert sum(n) == count, opts
