"""Every registered method, driven by the registry: batch input, (N, H, W) in [0, 1], the
exports and CLI choices derived from it, options checked."""

from __future__ import annotations

import functools

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import camcore
from camcore.cli import _parser
from camcore.errors import CamcoreError
from camcore.methods import METHODS
from camcore.runtime import Session
from tests.models import tiny_classifier

#: per-method options that keep the test fast (SESS: fewer scales on an 8x8 model)
FAST = {"sess": {"num_scales": 2}, "smoothgradcam++": {"num_samples": 2}}


@functools.cache
def _tiny() -> onnx.ModelProto:
    return tiny_classifier(size=8)[0]


#: (method, smoothing) pairs known to give degenerate maps
DEGENERATE: dict[tuple[str, str], str] = {}
CASES = [
    pytest.param(key, smooth, marks=[pytest.mark.xfail(reason=DEGENERATE.get((key, smooth), ""))])
    if (key, smooth) in DEGENERATE
    else (key, smooth)
    for smooth in ("plain", "eigen", "aug")
    for key in METHODS
]


@pytest.mark.parametrize(("key", "smooth"), CASES)
def test_every_method_batch_shape_range(key: str, smooth: str) -> None:
    m = METHODS[key]
    x = np.random.default_rng(1).standard_normal((3, 3, 8, 8)).astype(np.float32)
    layers = ["feat", "conv"] if key == "refinecam" else ["feat"]
    cam = getattr(camcore, m.name)(_tiny(), layers, threads=1, **FAST.get(key, {}))
    maps = cam(x, aug_smooth=smooth == "aug", eigen_smooth=smooth == "eigen")
    assert maps.shape == (3, 8, 8) and maps.dtype == np.float32
    assert np.all(np.isfinite(maps)) and maps.min() >= 0 and maps.max() <= 1 + 1e-6
    if not m.random:  # a map, not zeros: every image has a hot region (aug_smooth averages 6 scaled maps)
        assert maps.reshape(3, -1).max(axis=1).min() > 0.3, maps.reshape(3, -1).max(axis=1)
    # batch rows are independent: image 1 alone gives the same map (random methods excepted)
    if not m.random and smooth != "aug":
        alone = cam(x[1:2], eigen_smooth=smooth == "eigen")
        np.testing.assert_allclose(alone[0], maps[1], atol=1e-5)


def test_exports_and_cli_choices_come_from_the_registry() -> None:
    names = {m.name for m in METHODS.values()}
    assert names <= set(camcore.__all__)
    assert all(isinstance(getattr(camcore, n), type) and issubclass(getattr(camcore, n), camcore.BaseCAM)
               for n in names)  # fmt: skip
    explain = _parser()._subparsers._group_actions[0].choices["explain"]  # type: ignore[union-attr]
    method = next(a for a in explain._actions if a.dest == "method")
    assert list(method.choices) == list(METHODS)


def test_pytorch_grad_cam_names() -> None:
    want = {"GradCAM", "HiResCAM", "GradCAMElementWise", "GradCAMPlusPlus", "XGradCAM", "LayerCAM", "EigenCAM",
            "EigenGradCAM", "KPCA_CAM", "FullGrad", "ShapleyCAM", "FEM", "FinerCAM", "RefineCAM", "SegEigenCAM",
            "SESS", "RandomCAM", "CAM", "SmoothGradCAMpp", "GuidedGradCAM"}  # fmt: skip
    assert want <= {m.name for m in METHODS.values()}
    for extra in ("GuidedBackpropReLUModel", "DeepFeatureFactorization"):
        assert extra in camcore.__all__


def test_unknown_option_is_a_clear_error() -> None:
    with pytest.raises(CamcoreError, match="FEM has no option 'kk'; its options: k"):
        camcore.FEM(_tiny(), ["feat"], kk=3)


def test_base_method_accepts_a_class_or_a_key() -> None:
    x = np.random.default_rng(2).standard_normal((2, 3, 8, 8)).astype(np.float32)
    a = camcore.FinerCAM(_tiny(), ["feat"], base_method=camcore.GradCAMPlusPlus)(x)
    b = camcore.FinerCAM(_tiny(), ["feat"], base_method="gradcam++")(x)
    np.testing.assert_array_equal(a, b)
    default = camcore.FinerCAM(_tiny(), ["feat"])(x)  # Grad-CAM: the option is not ignored
    assert np.abs(a - default).max() > 0.05


def test_positional_reshape_transform_like_pytorch_grad_cam() -> None:
    calls = []

    def reshape(t: np.ndarray) -> np.ndarray:
        calls.append(t.shape)
        return t

    camcore.GradCAM(_tiny(), ["feat"], reshape)(np.zeros((1, 3, 8, 8), np.float32))
    assert calls == [(1, 4, 8, 8), (1, 4, 8, 8)]


def test_random_cam_seed_option() -> None:
    """The same seed gives the same maps, another seed other maps, and the maps are the
    documented U(-1, 1) channel weights drawn from ``default_rng(seed)`` applied to the activations."""
    x = np.random.default_rng(3).standard_normal((2, 3, 8, 8)).astype(np.float32)
    a = camcore.RandomCAM(_tiny(), ["feat"], seed=5)(x)
    b = camcore.RandomCAM(_tiny(), ["feat"], seed=5)(x)
    c = camcore.RandomCAM(_tiny(), ["feat"], seed=6)(x)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0.1
    # independently: the Relu activations from a plain onnxruntime run, weighted, ReLU, min-max scaled
    model = onnx.ModelProto()
    model.CopyFrom(_tiny())
    model.graph.output.append(onnx.helper.make_tensor_value_info("feat", onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feat = sess.run(["feat"], {"x": x})[0]
    for seed, maps in ((5, a), (6, c)):
        w = np.random.default_rng(seed).uniform(-1, 1, size=(2, 4)).astype(np.float32)
        raw = np.maximum(np.einsum("nc,nchw->nhw", w, feat), 0)
        raw -= raw.min(axis=(1, 2), keepdims=True)
        np.testing.assert_allclose(maps, raw / (1e-7 + raw.max(axis=(1, 2), keepdims=True)), atol=1e-5)


def test_deep_feature_factorization() -> None:
    x = np.random.default_rng(4).standard_normal((2, 3, 8, 8)).astype(np.float32)
    dff = camcore.DeepFeatureFactorization(_tiny(), "feat", computation_on_concepts="classifier")
    concepts, maps, scores = dff(x, n_components=3)
    assert concepts.shape == (4, 3) and maps.shape == (2, 3, 8, 8) and scores.shape == (3, 5)
    assert maps.min() >= 0 and maps.max() <= 1 + 1e-6
    # the factorisation reconstructs the shifted activations
    from camcore.methods.factorization import nmf

    v = np.random.default_rng(0).random((6, 4)) @ np.random.default_rng(1).random((4, 20))
    w, h = nmf(v, 4, iterations=2000)
    assert np.linalg.norm(v - w @ h) < 0.05 * np.linalg.norm(v)


def test_sess_patches_use_the_cam_batch_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """``SESS(..., batch_size=2)`` scores and explains its patches 2 at a time (the CAM's
    ``batch_size``, which BaseCAM takes, is the one SESS uses), with the same maps."""
    x = np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype(np.float32)
    maps, sizes = {}, {}
    run = Session.run
    for batch_size in (2, 32):
        cam = camcore.SESS(_tiny(), ["feat"], threads=1, num_scales=2, batch_size=batch_size)
        seen: list[int] = []

        def spy(self, feeds, outputs=None, _run=run, _s=seen):  # type: ignore[no-untyped-def]
            _s.append(len(next(iter(feeds.values()))))
            return _run(self, feeds, outputs)

        monkeypatch.setattr(Session, "run", spy)
        maps[batch_size] = cam(x)
        sizes[batch_size] = seen
    assert max(sizes[2]) == 2 and max(sizes[32]) == 5  # 5 patches: 1 at scale 8, 4 at scale 10
    np.testing.assert_allclose(maps[2], maps[32], atol=1e-6)
