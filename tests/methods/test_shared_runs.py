"""The runs the methods share or skip give the maps the plain route gives: gradients of
output-dependent targets from the model cut at the layer, SESS scoring its patches on the
base method's own runs, one Score-CAM forward for identical masks, and numpy's BLAS on one
thread for the projections."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import numpy as np
import onnx
import pytest
import threadpoolctl
from onnx import TensorProto, helper, numpy_helper

import camcore
from camcore.blas import serial_blas
from camcore.methods.perturbation import masked_scores
from camcore.runtime import Session
from camcore.targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget, FinerWeightedTarget
from tests.models import tiny_classifier


def _x(seed: int, n: int = 2, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


def residual_classifier() -> onnx.ModelProto:
    """x -> Conv ("conv") -> Relu ("feat") -> Conv -> + conv -> GAP -> Gemm: a path around "feat"."""
    rng = np.random.default_rng(3)
    inits = {
        "w1": rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.5,
        "w2": rng.standard_normal((4, 4, 3, 3)).astype(np.float32) * 0.5,
        "fc_w": rng.standard_normal((5, 4)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["feat"]),
        helper.make_node("Conv", ["feat", "w2"], ["conv2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["conv2", "conv"], ["sum"]),
        helper.make_node("Tanh", ["sum"], ["act"]),
        helper.make_node("GlobalAveragePool", ["act"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "residual",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def dead_channel_classifier() -> onnx.ModelProto:
    """The tiny classifier with 8 channels at "feat": 5-7 dead (zero filter, bias -1: all 0
    after the Relu) and 4 a copy of 0, so 5 distinct channels."""
    model, w = tiny_classifier(channels=8, seed=4)
    conv_w, conv_b = w["conv_w"].copy(), w["conv_b"].copy()
    conv_w[5:], conv_b[5:] = 0.0, -1.0
    conv_w[4], conv_b[4] = conv_w[0], conv_b[0]
    for i, init in enumerate(model.graph.initializer):
        if init.name in ("conv_w", "conv_b"):
            value = conv_w if init.name == "conv_w" else conv_b
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(value, init.name))
    return model


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[Session, int]]]:
    """Every onnxruntime session run, in order, with the rows (batch) it ran."""
    seen: list[tuple[Session, int]] = []
    run = Session.run

    def spy(self: Session, feeds, outputs=None):  # type: ignore[no-untyped-def]
        seen.append((self, len(next(iter(feeds.values())))))
        return run(self, feeds, outputs)

    monkeypatch.setattr(Session, "run", spy)
    yield seen


def _kinds(cam: camcore.BaseCAM, seen: list[tuple[Session, int]]) -> list[str]:
    """The kind ("plain", "augmented", "tail", "cut") of each session run."""
    kind = {id(session): name for name, session in cam.engine.sessions()}
    return [kind[id(s)] for s, _ in seen]


@pytest.mark.parametrize("model", [tiny_classifier()[0], residual_classifier()], ids=["tiny", "residual"])
def test_output_dependent_seeds_take_the_gradient_of_the_cut_model(model: onnx.ModelProto) -> None:
    """Softmax and Finer-CAM targets: the gradient of the model cut at the layer, fed the layer's
    activation and the seed, equals the full augmented model's gradient."""
    x = _x(0)
    cam = camcore.GradCAM(model, ["feat"], threads=1)
    for targets in ([ClassifierOutputSoftmaxTarget(1), ClassifierOutputSoftmaxTarget(3)],
                    [FinerWeightedTarget(0, [1, 2]), FinerWeightedTarget(4, [3])]):  # fmt: skip
        got = cam.engine.run({"x": x}, targets, layers=["feat"])
        aug, session = cam.engine.compiled({"x": x}, "tensor", ["feat"])
        out = cam.engine.outputs_of({"x": x})
        seed = np.stack([t.seed(o) for t, o in zip(targets, out)]).astype(np.float32)
        res = session.run({"x": x, aug.seed_input: seed})
        np.testing.assert_allclose(got.gradients["feat"], res[aug.gradient_outputs["feat"]], rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(got.activations["feat"], res[aug.activation_outputs["feat"]])
        np.testing.assert_allclose(got.outputs[0], res["logits"], rtol=1e-6)


def test_finercam_runs_the_network_once(runs: list[tuple[Session, int]]) -> None:
    """Finer-CAM's class choice and its base method's seeds share one forward pass; the
    gradient then comes from the cut model."""
    model, _ = tiny_classifier()
    cam = camcore.FinerCAM(model, ["feat"], threads=1)
    cam(_x(1))
    runs.clear()
    cam(_x(2))
    assert _kinds(cam, runs) == ["plain", "tail"]


def test_the_call_memo_is_never_stale() -> None:
    """An input changed in place between two calls is run again."""
    model, _ = tiny_classifier()
    cam = camcore.FinerCAM(model, ["feat"], threads=1)
    x = _x(3)
    cam(x)
    x[:] = _x(4)
    np.testing.assert_array_equal(cam(x), camcore.FinerCAM(model, ["feat"], threads=1)(x.copy()))


def test_sess_scores_patches_on_the_base_methods_runs(runs: list[tuple[Session, int]]) -> None:
    """SESS with a layer base method explains every patch once and scores it on that run's
    outputs; a pre-filter (here one dropping no patch) takes pytorch-grad-cam's route,
    a forward pass per patch first. The maps agree."""
    model, _ = tiny_classifier()
    x = _x(5, n=2)
    one = camcore.SESS(model, ["feat"], threads=1, num_scales=3)
    two = camcore.SESS(model, ["feat"], threads=1, num_scales=3, pre_filter_ratio=1e-9)
    one(x), two(x)
    runs.clear()
    a = one(x)
    assert Counter(_kinds(one, runs)) == {"augmented": 1 + 2}  # the top-1 classes, then each image's patches
    runs.clear()
    b = two(x)
    assert Counter(_kinds(two, runs)) == {"augmented": 1 + 2, "plain": 2}
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_scorecam_scores_each_distinct_channel_once(runs: list[tuple[Session, int]]) -> None:
    """Dead and copied channels make equal masks: ScoreCAM scores 5 of the 8 channels per
    image and gives the map of SS-CAM without noise, which scores all 8."""
    model = dead_channel_classifier()
    x = _x(7)
    score = camcore.ScoreCAM(model, ["feat"], threads=1)
    noiseless = camcore.SSCAM(model, ["feat"], threads=1, std=0.0, num_samples=1)
    score(x), noiseless(x)
    runs.clear()
    want = noiseless(x)
    assert sum(rows for _, rows in runs) == 2 + 2 * 8  # the top-1 forward, then every channel
    runs.clear()
    got = score(x)
    assert sum(rows for _, rows in runs) == 2 + 2 * 5
    np.testing.assert_array_equal(got, want)


def test_distinct_masked_scores_equal_all_scores() -> None:
    """IS-CAM's path of scaled masks: scoring the distinct channels and copying is exact."""
    model = dead_channel_classifier()
    x = _x(8)
    cam = camcore.ISCAM(model, ["feat"], threads=1)
    grid = cam.engine.run({"x": x}, None, layers=cam.target_layers, gradients=False).activations["feat"]
    channels = np.tile(np.arange(8), (2, 1))[:, ::-1]
    targets = [ClassifierOutputTarget(1), ClassifierOutputTarget(3)]
    coeffs = (0.5, 1.5)

    def path(m: np.ndarray, _hw: tuple[int, int]) -> list[np.ndarray]:
        return [m * np.float32(k) for k in coeffs]

    context = cam.context({"x": x})
    every = masked_scores(context, {"x": x}, grid, channels, targets, path, 3)
    once = masked_scores(context, {"x": x}, grid, channels, targets, path, 3, distinct=True)
    np.testing.assert_array_equal(once, every)
    assert len(np.unique(every[0])) == 5


def test_serial_blas_gives_the_same_projection() -> None:
    rng = np.random.default_rng(6)
    a = rng.standard_normal((49, 64)).astype(np.float32)
    want = np.linalg.svd(a, full_matrices=True)[2][0]
    with serial_blas():
        got = np.linalg.svd(a, full_matrices=False)[2][0]
    np.testing.assert_array_equal(got, want)


def test_serial_blas_uses_one_thread() -> None:
    """numpy's BLAS (found when first used) runs on one thread inside the block. Libraries
    loaded later by other packages (scipy's own OpenBLAS, say) are not numpy's and not limited."""
    from camcore.blas import _blas_controller

    np.linalg.svd(np.eye(3))  # numpy's BLAS is loaded
    limited = {i["filepath"] for i in _blas_controller().info()}
    assert limited, "no BLAS library found to limit"
    with serial_blas():
        infos = [i for i in threadpoolctl.threadpool_info() if i["filepath"] in limited]
    assert infos and all(i["num_threads"] == 1 for i in infos)
