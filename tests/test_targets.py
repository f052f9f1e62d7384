"""Every target's seed against a numerical derivative of the target function, and the
targets end to end: nonlinear seeds, segmentation, detection boxes, outputs chosen by name."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import pytest

import camcore
from camcore.errors import CamcoreError
from camcore.targets import (
    BinaryClassifierOutputTarget,
    ClassifierOutputReST,
    ClassifierOutputSoftmaxTarget,
    ClassifierOutputTarget,
    DetectionBoxTarget,
    FinerWeightedTarget,
    RawScoresOutputTarget,
    RegressionOutputTarget,
    SemanticSegmentationTarget,
    SimilarityToConceptTarget,
)
from tests.models import tiny_classifier

RNG = np.random.default_rng(0)
BOX_ROWS = np.concatenate([RNG.uniform(20, 40, (6, 2)), RNG.uniform(10, 20, (6, 2)), RNG.standard_normal((6, 3))], 1)
REF = np.array([22.0, 21.0, 38.0, 42.0])  # xyxy, overlapping several boxes partially

CASES = [
    (ClassifierOutputTarget(2), RNG.standard_normal(5)),
    (ClassifierOutputSoftmaxTarget(1), RNG.standard_normal(5)),
    (ClassifierOutputReST(3), RNG.standard_normal(5)),
    (BinaryClassifierOutputTarget(0), RNG.standard_normal(1)),
    (BinaryClassifierOutputTarget(1), RNG.standard_normal(1)),
    (RawScoresOutputTarget(), RNG.standard_normal(4)),
    (RegressionOutputTarget(), RNG.standard_normal(1)),
    (RegressionOutputTarget(2), RNG.standard_normal(4)),
    (SemanticSegmentationTarget(1, RNG.uniform(0, 1, (3, 4))), RNG.standard_normal((2, 3, 4))),
    (SimilarityToConceptTarget(RNG.standard_normal(6)), RNG.standard_normal(6)),
    (FinerWeightedTarget(0, [1, 2, 3], 0.7), RNG.standard_normal(5)),
    (DetectionBoxTarget(label=1, box_index=4), BOX_ROWS),
    (DetectionBoxTarget(label=2, box=REF, box_format="xyxy"), BOX_ROWS),
    (DetectionBoxTarget(label=0, box=REF, box_format="xyxy", iou_weight=2.0, layout="channels_first"), BOX_ROWS.T),
    (DetectionBoxTarget(label=0, box=np.array([30.0, 31, 16, 20]), objectness=True), BOX_ROWS),
]


@pytest.mark.parametrize(("target", "output"), CASES, ids=[f"{type(t).__name__}-{i}" for i, (t, _) in enumerate(CASES)])
def test_seed_is_the_numerical_derivative(target, output: np.ndarray) -> None:
    output = output.astype(np.float64)
    seed = target.seed(output)
    assert seed.shape == output.shape
    eps = 1e-6
    fd = np.zeros_like(output)
    for idx in np.ndindex(output.shape):
        up, down = output.copy(), output.copy()
        up[idx] += eps
        down[idx] -= eps
        fd[idx] = (float(target(up)) - float(target(down))) / (2 * eps)
    np.testing.assert_allclose(seed, fd, rtol=1e-6, atol=1e-8)


def test_box_selection_by_index_and_iou() -> None:
    rows = np.zeros((3, 4 + 2))
    rows[:, :4] = [[0, 0, 10, 10], [20, 20, 30, 30], [21, 21, 31, 31]]
    rows[:, 4:] = [[1, 0], [0, 1], [1, 0]]
    assert DetectionBoxTarget(label=0, box_index=1, box_format="xyxy").select(rows) == 1
    # the best IoU with the reference among boxes predicting the label
    t = DetectionBoxTarget(label=0, box=np.array([20.0, 20, 30, 30]), box_format="xyxy")
    assert t.select(rows) == 2
    assert DetectionBoxTarget(label=1, box=np.array([20.0, 20, 30, 30]), box_format="xyxy").select(rows) == 1
    with pytest.raises(CamcoreError, match="out of range"):
        DetectionBoxTarget(label=5, box_index=0).select(rows)


def test_softmax_target_end_to_end() -> None:
    """The gradient at ``feat`` is Σ_j seed_j · W_j / Z with seed = p_k (e_k − p)."""
    model, w = tiny_classifier()
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    cam = camcore.GradCAM(model, ["feat"])
    cam(x, [ClassifierOutputSoftmaxTarget(3)])
    logits = cam.outputs[0].astype(np.float64)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    seed = -p[:, 3:4] * p
    seed[:, 3] += p[:, 3]
    want = seed @ w["fc_w"] / 64
    np.testing.assert_allclose(cam.gradients["feat"][:, :, 2, 5], want, rtol=1e-4, atol=1e-9)


SEG = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N,3,8,8] x) => (float[N,2,8,8] seg, float[N,2] cls) {
  w = Constant<value = float[4,3,1,1] {0.5,-0.2,0.3, 0.1,0.4,-0.5, -0.3,0.2,0.6, 0.2,0.1,-0.1}>()
  v = Constant<value = float[2,4,1,1] {1,-1,0.5,0.2, -0.3,0.8,1,-0.5}>()
  c = Conv(x, w)
  feat = Relu(c)
  seg = Conv(feat, v)
  p = GlobalAveragePool(seg)
  cls = Flatten(p)
}"""


def test_segmentation_target_and_output_by_name() -> None:
    model = onnx.parser.parse_model(SEG)
    x = np.random.default_rng(2).standard_normal((2, 3, 8, 8)).astype(np.float32)
    mask = np.zeros((8, 8), np.float32)
    mask[2:5, 3:7] = 1
    cam = camcore.HiResCAM(model, ["feat"], output="seg")
    maps = cam(x, [SemanticSegmentationTarget(1, mask)])
    assert maps.shape == (2, 8, 8)
    # the gradient at feat is v[1] on the mask, 0 elsewhere (1x1 convs)
    v1 = np.array([-0.3, 0.8, 1, -0.5], np.float32)
    np.testing.assert_allclose(cam.gradients["feat"][0, :, 3, 4], v1, rtol=1e-6)
    assert not cam.gradients["feat"][0, :, 0, 0].any()
    # the other output, by name, with class targets
    assert camcore.GradCAM(model, ["feat"], output="cls")(x, [ClassifierOutputTarget(0)]).shape == (2, 8, 8)
    with pytest.raises(CamcoreError, match="unknown output"):
        camcore.GradCAM(model, ["feat"], output="nope")


YOLO = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N,3,8,8] x) => (float[N,16,6] boxes) {
  w = Constant<value = float[6,3,3,3] {0.1,0.2,-0.1,0.3,-0.2,0.1,0.2,0.1,-0.3,0.1,0.2,0.1,-0.1,0.3,0.2,0.1,-0.2,0.1,
    0.3,-0.1,0.2,0.1,0.2,-0.3,0.1,0.1,0.2, 0.2,-0.1,0.1,0.3,0.2,-0.1,0.1,0.2,0.3,-0.2,0.1,0.2,0.1,0.1,-0.1,0.2,0.3,0.1,
    0.2,0.1,-0.2,0.1,0.3,0.2,-0.1,0.1,0.2, 0.1,0.3,0.2,-0.1,0.1,0.2,0.3,-0.2,0.1,0.2,0.1,0.1,-0.1,0.2,0.3,0.1,0.2,0.1,
    -0.2,0.1,0.3,0.2,-0.1,0.1,0.2,0.1,0.2, 0.3,-0.1,0.2,0.1,0.2,-0.3,0.1,0.1,0.2,0.2,-0.1,0.1,0.3,0.2,-0.1,0.1,0.2,0.3,
    -0.2,0.1,0.2,0.1,0.1,-0.1,0.2,0.3,0.1, 0.2,0.1,-0.2,0.1,0.3,0.2,-0.1,0.1,0.2,0.1,0.2,-0.1,0.3,-0.2,0.1,0.2,0.1,-0.3,
    0.1,0.2,0.1,-0.1,0.3,0.2,0.1,-0.2,0.1, 0.3,-0.1,0.2,0.1,0.2,-0.3,0.1,0.1,0.2,0.2,-0.1,0.1,0.3,0.2,-0.1,0.1,0.2,0.3,
    -0.2,0.1,0.2,0.1,0.1,-0.1,0.2,0.3,0.1}>()
  c = Conv<pads = [1,1,1,1], strides = [2,2]>(x, w)
  feat = Sigmoid(c)
  shape = Constant<value = int64[3] {0, 6, 16}>()
  r = Reshape(feat, shape)
  boxes = Transpose<perm = [0, 2, 1]>(r)
}"""


def test_detection_box_target_end_to_end() -> None:
    model = onnx.parser.parse_model(YOLO)
    x = np.random.default_rng(3).standard_normal((2, 3, 8, 8)).astype(np.float32)
    cam = camcore.GradCAM(model, ["feat"])
    out = cam.engine.outputs_of({"x": x})
    ref = out[0, 7, :4]
    targets = [DetectionBoxTarget(label=1, box_index=5), DetectionBoxTarget(label=0, box=ref, box_format="cxcywh")]
    maps = cam(x, targets)
    assert maps.shape == (2, 8, 8)
    # box 5 of image 0: only position 5 of feat channel 4 + 1 = 5 gets gradient from the score
    g = cam.gradients["feat"][0].reshape(6, 16)
    s = out[0, 5, 5]
    assert np.count_nonzero(g) == 1 and np.isclose(g[5, 5], 1.0)
    assert s > 0


def test_registries_list_every_target_and_its_command_line_form() -> None:
    from camcore.targets import TARGET_TYPES, TARGETS, Target

    assert all(issubclass(cls, Target) for cls in TARGETS.values())
    assert {"ClassifierOutputTarget", "DetectionBoxTarget", "SemanticSegmentationTarget"} <= set(TARGETS)
    assert list(TARGET_TYPES) == ["class", "softmax", "binary", "raw", "regression"]
    assert all(kind.help for kind in TARGET_TYPES.values())
    row = np.array([0.1, 2.0, -1.0], np.float32)
    assert TARGET_TYPES["class"].build(None, None) is None  # top-1, chosen in the graph
    assert TARGET_TYPES["softmax"].build(None, row) == camcore.ClassifierOutputSoftmaxTarget(1)
    assert TARGET_TYPES["regression"].build(2, None) == camcore.RegressionOutputTarget(2)


def test_targets_refuse_what_they_cannot_explain() -> None:
    from camcore.targets import per_image

    for bad in (2.7, "3", True, None):
        with pytest.raises(CamcoreError, match="must be an integer"):
            camcore.ClassifierOutputTarget(bad)  # type: ignore[arg-type]
    with pytest.raises(CamcoreError, match="0 or 1"):
        camcore.BinaryClassifierOutputTarget(2)
    assert camcore.ClassifierOutputTarget(np.int64(4)).category == 4
    one = camcore.ClassifierOutputTarget(1)
    for targets, message in ((3, "list of Target objects"), (one, "list of Target"), ([3], "must be a Target"),
                             ([one] * 2, "2 targets")):  # fmt: skip
        with pytest.raises(CamcoreError, match=message):
            per_image(targets, 3)
    model, _ = tiny_classifier()
    cam = camcore.GradCAM(model, ["feat"])
    x = np.zeros((3, 3, 8, 8), np.float32)
    with pytest.raises(CamcoreError, match="list of Target objects"):
        cam(x, targets=3)  # type: ignore[arg-type]
    with pytest.raises(CamcoreError, match="out of range for 5 classes"):
        cam(x, targets=[camcore.ClassifierOutputTarget(5)])


def test_regression_target_takes_a_flat_index() -> None:
    out = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = camcore.RegressionOutputTarget(4)
    assert t(out) == 4.0 and t.seed(out).reshape(-1).tolist() == [0, 0, 0, 0, 1, 0]
    assert camcore.RegressionOutputTarget((1, 0))(out) == 3.0


def test_the_package_exports_every_registered_target() -> None:
    import camcore.targets as targets

    assert set(targets.TARGETS) <= set(targets.__all__)
    assert all(getattr(targets, name) is cls for name, cls in targets.TARGETS.items())
