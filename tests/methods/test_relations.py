"""Relations between methods that must hold exactly, and the extra graph outputs they use
(Hessian-vector products, input and bias gradients) against independent computations."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import camcore
from camcore.graph.parts import downstream_model
from tests.models import tiny_classifier


def _x(seed: int, n: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 8, 8)).astype(np.float32)


def _with_positive_head(scale: float = 1.0) -> onnx.ModelProto:
    """The tiny classifier with a non-negative classifier: every gradient at ``feat`` is >= 0."""
    model, _ = tiny_classifier()
    for i, init in enumerate(model.graph.initializer):
        if init.name == "fc_w":
            w = scale * (np.abs(numpy_helper.to_array(init)) + 0.1)
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(w.astype(np.float32), "fc_w"))
    return model


def test_constant_gradients_gradcam_hirescam_xgradcam_cam_shapley_agree() -> None:
    """GAP -> linear head: dy/dA = W_k / Z at every position, so the maps coincide (CAM up to
    the 1/Z scale the min-max scaling removes; ShapleyCAM because H·A = 0 for a linear head)."""
    model, _ = tiny_classifier()
    x = _x(0)
    ref = camcore.GradCAM(model, ["feat"])(x)
    for cls in (camcore.HiResCAM, camcore.XGradCAM, camcore.CAM, camcore.ShapleyCAM):
        np.testing.assert_allclose(cls(model, ["feat"])(x), ref, atol=2e-5, err_msg=cls.__name__)


def test_positive_gradients_layercam_elementwise_hirescam_agree() -> None:
    """G >= 0 and A >= 0 (after ReLU): max(G, 0)·A = max(G·A, 0) = G·A."""
    model = _with_positive_head()
    x = _x(1)
    ref = camcore.LayerCAM(model, ["feat"])(x)
    for cls in (camcore.GradCAMElementWise, camcore.HiResCAM):
        np.testing.assert_allclose(cls(model, ["feat"])(x), ref, atol=2e-5, err_msg=cls.__name__)


def test_smoothgradcampp_without_noise_is_gradcampp() -> None:
    """σ = 0: every noisy copy is the image, and the moments are those of G. (The head is
    scaled so that G ~ 1: the two formulas' ε, 1e-8 and 1e-6, then do not matter.)"""
    model = _with_positive_head(scale=100.0)
    x = _x(2)
    a = camcore.SmoothGradCAMpp(model, ["feat"], std=0.0, num_samples=2)(x)
    b = camcore.GradCAMPlusPlus(model, ["feat"])(x)
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_refinecam_of_one_layer_is_its_base_method() -> None:
    model, _ = tiny_classifier()
    x = _x(3)
    np.testing.assert_allclose(camcore.RefineCAM(model, ["feat"])(x), camcore.GradCAMPlusPlus(model, ["feat"])(x),
                               atol=1e-5)  # fmt: skip


def test_finercam_alpha_zero_is_gradcam_of_the_top_class() -> None:
    """α = 0: T = Σ p_j z_m / Σ p_j = z_m, the top logit."""
    model, _ = tiny_classifier()
    x = _x(4)
    np.testing.assert_allclose(camcore.FinerCAM(model, ["feat"], alpha=0.0)(x), camcore.GradCAM(model, ["feat"])(x),
                               atol=1e-5)  # fmt: skip


def test_eigen_projection_of_rank_one_contributions() -> None:
    """Contributions u_c·m(i, j): the first principal component is ±|u|·(m − mean m)."""
    from camcore.methods.projection import project_2d

    rng = np.random.default_rng(5)
    u, m = rng.standard_normal((2, 6)), rng.standard_normal((2, 5, 4))
    proj = project_2d((u[:, :, None, None] * m[:, None]).astype(np.float32))
    for p, ui, mi in zip(proj, u, m):
        want = np.linalg.norm(ui) * (mi - mi.mean())
        assert min(np.abs(p - want).max(), np.abs(p + want).max()) < 1e-5


def test_eigen_smooth_projects_the_method_contributions() -> None:
    """eigen_smooth replaces the channel sum by the projection of the same contributions."""
    from camcore.maps import scale_cam_image
    from camcore.methods.gradient import hirescam
    from camcore.methods.projection import project_2d

    model, _ = tiny_classifier()
    x = _x(5)
    cam = camcore.HiResCAM(model, ["feat"])
    eig = cam(x, eigen_smooth=True)
    raw = project_2d(hirescam(cam.activations["feat"], cam.gradients["feat"]))
    # per layer: ReLU, scale, resize; then the mean over (one) layers and a last scaling
    np.testing.assert_allclose(eig, scale_cam_image(scale_cam_image(np.maximum(raw, 0), (8, 8))), atol=1e-6)


def test_aug_smooth_is_the_mean_over_flips_and_brightness() -> None:
    model, _ = tiny_classifier()
    x = _x(6)
    cam = camcore.GradCAM(model, ["feat"])
    want = np.mean([(cam(x[..., ::-1] * f)[..., ::-1] if flip else cam(x * f))
                    for flip in (False, True) for f in (0.9, 1.0, 1.1)], axis=0)  # fmt: skip
    np.testing.assert_allclose(cam(x, aug_smooth=True), want, atol=1e-6)


def test_guided_backprop_equals_the_gradient_without_relu() -> None:
    text = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N,2,4,4] x) => (float[N,3] y) {
  w = Constant<value = float[3,2] {1,-2,0.5,3,-1,2}>()
  t = Tanh(x)
  p = GlobalAveragePool(t)
  f = Flatten(p)
  y = Gemm<transB = 1>(f, w)
}"""
    model = onnx.parser.parse_model(text)
    x = np.random.default_rng(7).standard_normal((2, 2, 4, 4)).astype(np.float32)
    gb = camcore.GuidedBackpropReLUModel(model)(x, target_category=[0, 2])
    w = np.array([[1, -2], [0.5, 3], [-1, 2]], np.float32)
    want = (w[[0, 2]][:, :, None, None] * (1 - np.tanh(x) ** 2) / 16).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(gb, want, rtol=1e-5, atol=1e-7)


def test_fullgrad_completeness_of_input_and_bias_gradients() -> None:
    """A ReLU network is piecewise linear: y_k = <x, ∇x y_k> + Σ_biases <b, ∇b y_k> + fc_b[k].

    The Conv bias gradient is the sum of the gradient of its output over the batch-row's
    positions; this checks the input and bias-term gradients FullGrad uses."""
    model, w = tiny_classifier()
    x = _x(8, n=2)
    cam = camcore.FullGrad(model)
    terms = cam.engine.bias_terms()
    assert [t for t, _ in terms] == ["conv"]
    fwd = cam.engine.run({"x": x}, None, layers=[], gradients=False, extra=["x", "conv"])
    logits = fwd.outputs[0]
    k = logits.argmax(1)
    total = (fwd.extra["x"] * x).sum(axis=(1, 2, 3))
    total += (terms[0][1][None, :, None, None] * fwd.extra["conv"]).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(total + w["fc_b"][k], logits[np.arange(2), k], rtol=1e-4, atol=1e-5)


CURVED = """<ir_version: 8, opset_import: ["" : 17]>
g (double[N,6] x) => (double[N,3] y) {
  w1 = Constant<value = double[6,5] {0.3,-0.2,0.5,0.1,-0.4, 0.2,0.6,-0.3,0.2,0.1, -0.5,0.1,0.2,0.4,0.3,
                                     0.1,-0.1,0.3,-0.2,0.5, 0.4,0.2,-0.6,0.1,-0.3, -0.2,0.3,0.1,0.5,0.2}>()
  w2 = Constant<value = double[5,3] {0.5,-0.3,0.2, 0.1,0.4,-0.5, -0.2,0.3,0.6, 0.3,-0.1,0.2, 0.2,0.5,-0.4}>()
  z = MatMul(x, w1)
  h = Sigmoid(z)
  m = ReduceMean<axes = [1]>(h)
  c = Sub(h, m)
  a = Abs(c)
  t = Tanh(c)
  s = Mul(t, a)
  y = MatMul(s, w2)
}"""


def test_hessian_vector_product_matches_finite_differences_of_the_gradient() -> None:
    """augment(..., hvp=True) differentiates the gradient graph: H·A at ``h`` against central
    differences of the gradient G(A ± εA), computed on the model cut at ``h`` (float64)."""
    model = onnx.parser.parse_model(CURVED)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 6))
    seed = rng.standard_normal((3, 3))
    aug = camcore.augment(model, ["h"], seed="tensor", hvp=True)
    sess = ort.InferenceSession(aug.model.SerializeToString(), providers=["CPUExecutionProvider"])
    out = dict(zip([o.name for o in aug.model.graph.output], sess.run(None, {"x": x, aug.seed_input: seed})))
    a, hv = out[aug.activation_outputs["h"]], out[aug.hvp_outputs["h"]]
    assert np.abs(hv).max() > 1e-3  # the curvature is real

    cut, _ = downstream_model(model, camcore.Engine(model, output="y").info, "h", "y")
    grad_of = camcore.augment(cut, ["h"], seed="tensor")
    gs = ort.InferenceSession(grad_of.model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = grad_of.gradient_outputs["h"]

    def g(values: np.ndarray) -> np.ndarray:
        res = dict(zip([o.name for o in grad_of.model.graph.output],
                       gs.run(None, {"h": values, grad_of.seed_input: seed})))  # fmt: skip
        return res[name]

    eps = 1e-5
    fd = (g(a + eps * a) - g(a - eps * a)) / (2 * eps)
    np.testing.assert_allclose(hv, fd, rtol=1e-6, atol=1e-9)


def test_shapleycam_uses_the_hessian() -> None:
    """On a curved head ShapleyCAM differs from Grad-CAM by exactly the -½ H·A term."""
    text = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N,3,8,8] x) => (float[N,4] y) {
  w = Constant<value = float[2,3,3,3] {0.2,-0.1,0.3,0.1,0.4,-0.2,0.3,0.1,-0.3,0.2,0.1,0.2,-0.4,0.3,0.1,0.2,-0.1,0.2,
                                       0.1,0.3,-0.2,0.2,0.1,0.3,-0.1,0.2,0.4,-0.3,0.1,0.2,0.3,-0.2,0.1,0.2,0.1,-0.1,
                                       0.3,0.2,-0.1,0.1,0.2,0.3,-0.2,0.1,0.2,0.1,-0.3,0.2,0.3,0.1,0.2,-0.1,0.2,0.1}>()
  f = Conv<pads = [1,1,1,1]>(x, w)
  feat = Softplus(f)
  sq = Mul(feat, feat)
  p = GlobalAveragePool(sq)
  v = Flatten(p)
  k = Constant<value = float[2,4] {1,-1,0.5,2,-0.5,1,1,-1}>()
  y = MatMul(v, k)
}"""
    model = onnx.parser.parse_model(text)
    x = _x(10, n=2)
    cam = camcore.ShapleyCAM(model, ["feat"])
    maps = cam(x)
    a, g, hv = cam.activations["feat"], cam.gradients["feat"], cam.hvp["feat"]
    # y = mean(A²)·k: G = 2A/Z·k_c, H·A = 2A/Z·k_c = G
    np.testing.assert_allclose(hv, g, rtol=1e-5, atol=1e-8)
    w = (g - 0.5 * hv).mean(axis=(2, 3))
    raw = np.maximum((w[:, :, None, None] * a).sum(1), 0)
    raw = (raw - raw.min(axis=(1, 2), keepdims=True)) / (1e-7 + np.ptp(raw, axis=(1, 2), keepdims=True))
    np.testing.assert_allclose(maps, raw, atol=1e-5)


@pytest.mark.parametrize("method", ["CAM"])
def test_cam_needs_a_gap_linear_head(method: str) -> None:
    model, _ = tiny_classifier()
    with pytest.raises(camcore.CamcoreError, match="global average pool"):
        getattr(camcore, method)(model, ["conv"])(_x(11))


def test_runner_scores_and_downstream_scores_agree_with_the_model() -> None:
    """The perturbation-method hooks: forward scores in batches, and re-running only the part
    after a layer with replaced activations (zeroing a channel = ablating it)."""
    model, w = tiny_classifier()
    x = _x(12, n=5)
    cam = camcore.GradCAM(model, ["feat"], batch_size=2)
    targets = [camcore.ClassifierOutputTarget(k) for k in (0, 1, 2, 3, 4)]
    logits = cam.engine.outputs_of({"x": x})
    np.testing.assert_allclose(cam.engine.scores({"x": x}, targets), logits[np.arange(5), [0, 1, 2, 3, 4]], rtol=1e-6)
    feat = cam.engine.run({"x": x}, None, layers=cam.target_layers, gradients=False).activations["feat"]
    same = cam.engine.downstream_scores("feat", {"x": x}, feat, targets)
    np.testing.assert_allclose(same, logits[np.arange(5), [0, 1, 2, 3, 4]], rtol=1e-5, atol=1e-6)
    ablated = feat.copy()
    ablated[:, 1] = 0
    drop = cam.engine.downstream_scores("feat", {"x": x[:1]}, ablated, targets)
    want = [(logits[i, k] - w["fc_w"][k, 1] * feat[i, 1].mean()) for i, k in enumerate(range(5))]
    np.testing.assert_allclose(drop, want, rtol=1e-5, atol=1e-5)
