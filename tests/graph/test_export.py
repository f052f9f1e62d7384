"""camcore.export_cam_model: the exported ``cam`` is the Python API's map, on three runtimes.

The exported graph (the model's outputs, ``cam`` and, with ``overlay``, ``overlay``) runs on
onnxruntime, on OpenVINO (CPU, f32 inference precision; in a spawn worker, as in
``test_rules_openvino.py``, skipped where openvino is absent) and on ``onnx.reference`` for a
small model. Its ``cam`` is compared with ``camcore.<Method>(model, layers)(x, targets)``:

* tiny torchvision-style classifiers (NCHW with a stride-2 layer, so the map is resized; NHWC
  as tf2onnx writes it; a dynamic spatial size) for every exportable method;
* the golden ResNet-18 (one layer and two layers of different grids), also against
  pytorch-grad-cam 1.5.7's maps stored in ``tests/golden`` for every shared method;
* reach exports: Keras NHWC (channels-last and channels-first layers), torch and timm ViTs
  (token grids after 1 and 5 leading tokens), Paddle at opset 9, float16 Keras and ViT.

Tolerances (max |exported - Python API| on [0, 1] maps): ``ORT_ATOL`` 1e-4 and ``OV_ATOL``
1e-3, the issue's bounds (observed: at most 3.4e-6 on float32 models, both runtimes). Float16
models get ``FP16_ATOL``: float16 keeps 11 bits, and the two sides read the layer at different
precisions: the Python API reads the float16 tensors the session returns, while inside the
exported graph onnxruntime's CPU runs float16 ops in float32 and drops the round trip to float16
before the graph's own widening Cast (and OpenVINO's f32 hint computes the whole model in f32).
Observed 5.8e-4 on onnxruntime and 1.6e-3 on OpenVINO; with the layer tensors made outputs (so
rounded to float16), onnxruntime's export matches to 1.2e-7.
"""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort
import pytest

import camcore
from camcore.cam import cam_class
from camcore.engine import Engine
from camcore.errors import CamcoreError
from camcore.graph.export import CAM_OUTPUT, CLASS_INPUT, IMAGE_INPUT, OVERLAY_OUTPUT, export_cam_model
from camcore.graph.export_methods import EXPORTABLE, REFUSALS
from camcore.methods import METHODS
from tests.golden_models import GOLDEN_DIR, decode_maps, load_golden
from tests.models import tiny_classifier, tiny_nhwc_classifier

ORT_ATOL, OV_ATOL, FP16_ATOL = 1e-4, 1e-3, 5e-3
REACH = Path(__file__).resolve().parent.parent / "reach"
MANIFEST = json.loads((REACH / "manifest.json").read_text())
HALF = onnx.TensorProto.FLOAT16

#: x (N, 3, 12, 12) -> Conv 3x3 stride 2 -> Relu ("feat", 6x6: the map is resized) -> GAP -> Gemm
STRIDED = """
<ir_version: 8, opset_import: ["" : 17]>
strided (float[N, 3, 12, 12] x) => (float[N, 5] logits) <float[4, 3, 3, 3] w, float[4] bias, float[5, 4] fc,
                                                          float[5] fc_b> {
    conv = Conv <pads = [1, 1, 1, 1], strides = [2, 2]> (x, w, bias)
    feat = Relu (conv)
    pooled = GlobalAveragePool (feat)
    flat = Flatten (pooled)
    logits = Gemm <transB = 1> (flat, fc, fc_b)
}
"""


@cache
def strided_model(curved: bool = False) -> onnx.ModelProto:
    """The STRIDED model; ``curved`` adds a Tanh after the layer, so that H·A (ShapleyCAM) is not 0."""
    bent = "bent = Tanh (feat)\n    pooled = GlobalAveragePool (bent)"
    text = STRIDED.replace("pooled = GlobalAveragePool (feat)", bent)
    model = onnx.parser.parse_model(text if curved else STRIDED)
    rng = np.random.default_rng(3)
    shapes = {"w": (4, 3, 3, 3), "bias": (4,), "fc": (5, 4), "fc_b": (5,)}
    for name, shape in shapes.items():
        value = rng.standard_normal(shape).astype(np.float32)
        model.graph.initializer.append(onnx.numpy_helper.from_array(value, name))
    onnx.checker.check_model(model, full_check=True)
    return model


def _float16(model: onnx.ModelProto) -> bool:
    return any(i.type.tensor_type.elem_type == HALF for i in model.graph.input) or any(
        t.data_type == HALF for t in model.graph.initializer
    )


def _session(model: onnx.ModelProto, level: str | None = None) -> ort.InferenceSession:
    """onnxruntime on the CPU with camcore.runtime's options (float16 models: extended fusions)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the optional class input's "initializer in graph inputs" notice
    if level is not None:
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    elif _float16(model):
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], level: str | None = None) -> dict[str, np.ndarray]:
    session = _session(model, level)
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def _api(model: onnx.ModelProto | str, method: str, x: np.ndarray, classes=None, layers=None) -> np.ndarray:
    targets = None if classes is None else [camcore.ClassifierOutputTarget(int(k)) for k in classes]
    return cam_class(method)(model, layers, threads=2)(x, targets)


def _err(got: np.ndarray, want: np.ndarray) -> float:
    assert got.shape == want.shape and got.dtype == np.float32, (got.shape, want.shape, got.dtype)
    return float(np.abs(got - want).max())


def _x(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ---------------------------------------------------------------------- the registry
@pytest.mark.parametrize("key", list(METHODS))
def test_every_method_is_exported_or_refused_with_its_reason(key: str) -> None:
    model = strided_model()
    if key in EXPORTABLE:
        proto = export_cam_model(model, method=key)
        assert [o.name for o in proto.graph.output] == ["logits", CAM_OUTPUT]
        return
    with pytest.raises(CamcoreError) as info:
        export_cam_model(model, method=key)
    message = str(info.value)
    assert "\n" not in message and f"{METHODS[key].name} cannot be exported" in message
    assert REFUSALS.get(key, "a pipeline") in message and "gradcam" in message


def test_the_closed_form_methods_are_exportable() -> None:
    assert set(EXPORTABLE) >= {"gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "gradcam-elementwise"}
    assert set(EXPORTABLE) <= set(METHODS)


# ---------------------------------------------------------------------- onnxruntime
TINY = {
    "strided": lambda: strided_model(),
    "nhwc": lambda: tiny_nhwc_classifier()[0],
}


@pytest.mark.parametrize("method", list(EXPORTABLE))
@pytest.mark.parametrize("name", list(TINY))
def test_tiny_models_equal_the_python_api(name: str, method: str) -> None:
    model = TINY[name]()
    x = _x(tuple(3 if not d.dim_value else d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim))
    proto = export_cam_model(model, method=method)
    got = _run(proto, {model.graph.input[0].name: x})
    assert _err(got[CAM_OUTPUT], _api(model, method, x)) <= ORT_ATOL
    assert got[CAM_OUTPUT].min() >= 0 and got[CAM_OUTPUT].max() <= 1
    plain = _run(model, {model.graph.input[0].name: x}, "ORT_ENABLE_BASIC")
    basic = _run(proto, {model.graph.input[0].name: x}, "ORT_ENABLE_BASIC")
    np.testing.assert_array_equal(basic["logits"], plain["logits"])  # bit for bit


def test_explicit_classes_the_default_and_a_broadcast_class() -> None:
    model, x = strided_model(), _x((3, 3, 12, 12), 1)
    proto = export_cam_model(model, method="gradcam++")
    top1 = _run(model, {"x": x})["logits"].argmax(axis=1)
    classes = (top1 + 1) % 5
    explicit = _run(proto, {"x": x, CLASS_INPUT: classes})[CAM_OUTPUT]
    assert _err(explicit, _api(model, "gradcam++", x, classes)) <= ORT_ATOL
    unfed = _run(proto, {"x": x})[CAM_OUTPUT]
    np.testing.assert_array_equal(unfed, _run(proto, {"x": x, CLASS_INPUT: np.full(3, -1, np.int64)})[CAM_OUTPUT])
    assert _err(unfed, _api(model, "gradcam++", x)) <= ORT_ATOL
    assert float(np.abs(unfed - explicit).max()) > 0.1  # the class reaches the map
    mixed = _run(proto, {"x": x, CLASS_INPUT: np.array([-1, 2, -1], np.int64)})[CAM_OUTPUT]
    assert _err(mixed, _api(model, "gradcam++", x, [top1[0], 2, top1[2]])) <= ORT_ATOL
    one = _run(proto, {"x": x, CLASS_INPUT: np.array([2], np.int64)})[CAM_OUTPUT]
    np.testing.assert_array_equal(one, _run(proto, {"x": x, CLASS_INPUT: np.full(3, 2, np.int64)})[CAM_OUTPUT])


def test_an_all_negative_map_gives_zeros_not_nan() -> None:
    """Class 0's classifier row made negative: Grad-CAM's M <= 0 everywhere, so the ReLU leaves 0 and
    the min-max scaling (x - min) / (1e-7 + max) keeps it 0, as the Python API does."""
    model = onnx.ModelProto()
    model.CopyFrom(strided_model())
    fc = next(t for t in model.graph.initializer if t.name == "fc")
    weights = onnx.numpy_helper.to_array(fc).copy()
    weights[0] = -np.abs(weights[0])
    fc.CopyFrom(onnx.numpy_helper.from_array(weights, "fc"))
    x, classes = _x((2, 3, 12, 12), 14), np.zeros(2, np.int64)
    got = _run(export_cam_model(model), {"x": x, CLASS_INPUT: classes})[CAM_OUTPUT]
    np.testing.assert_array_equal(got, np.zeros_like(got))
    np.testing.assert_array_equal(_api(model, "gradcam", x, classes), got)


def test_optional_class_is_an_overridable_default_and_required_a_plain_input() -> None:
    model = strided_model()
    optional = _session(export_cam_model(model))
    assert [i.name for i in optional.get_inputs()] == ["x"]
    assert [i.name for i in optional.get_overridable_initializers()] == [CLASS_INPUT]
    required = export_cam_model(model, class_input="required")
    assert CLASS_INPUT not in {i.name for i in required.graph.initializer}
    assert [i.name for i in _session(required).get_inputs()] == ["x", CLASS_INPUT]
    x = _x((2, 3, 12, 12), 2)
    got = _run(required, {"x": x, CLASS_INPUT: np.array([-1], np.int64)})[CAM_OUTPUT]
    np.testing.assert_array_equal(got, optional.run([CAM_OUTPUT], {"x": x})[0])


def test_shapleycam_takes_the_hessian_term_where_the_head_is_curved() -> None:
    model, x = strided_model(curved=True), _x((2, 3, 12, 12), 12)
    got = _run(export_cam_model(model, layers=["feat"], method="shapleycam"), {"x": x})[CAM_OUTPUT]
    assert _err(got, _api(model, "shapleycam", x, layers=["feat"])) <= ORT_ATOL
    assert float(np.abs(got - _api(model, "gradcam", x, layers=["feat"])).max()) > 1e-3  # H·A is not 0 here


def test_dynamic_spatial_size_and_size_fixing_it() -> None:
    model, _ = tiny_classifier(dynamic_spatial=True)
    proto = export_cam_model(model, method="layercam")
    for hw in ((8, 8), (12, 10)):
        x = _x((2, 3, *hw), 3)
        assert _err(_run(proto, {"x": x})[CAM_OUTPUT], _api(model, "layercam", x)) <= ORT_ATOL
    fixed = export_cam_model(model, size=(12, 10))
    dims = [d.dim_value or d.dim_param for d in fixed.graph.output[-1].type.tensor_type.shape.dim]
    assert dims[1:] == [12, 10]


@pytest.mark.parametrize("opset", [11, 13, 18, 21])
def test_opsets(opset: int) -> None:
    """Resize, reductions with axes as attributes (< 18) or inputs, Clip with inputs: from opset 11 on."""
    model, _ = tiny_classifier(opset=opset, dynamic_spatial=True)
    proto = export_cam_model(model, method="gradcam++", overlay=True)
    assert proto.opset_import[0].version == opset
    x, image = _x((2, 3, 9, 7), 13), np.zeros((2, 9, 7, 3), np.uint8)
    got = _run(proto, {"x": x, IMAGE_INPUT: image})
    assert _err(got[CAM_OUTPUT], _api(model, "gradcam++", x)) <= ORT_ATOL


@pytest.mark.parametrize("opset", [11, 17])
def test_a_static_size_resizes_by_constants_and_a_pooled_gradient_is_not_broadcast(opset: int) -> None:
    """STRIDED (12x12 input, 6x6 layer, GAP): the resize is two products with constant weights (no
    Resize, no shape arithmetic at run time), Grad-CAM's weights read the pooled gradient (no Expand
    to the grid and mean back) and the head's input gradient the chosen rows of its weight."""
    model = strided_model()
    if opset != 17:
        model = onnx.parser.parse_model(STRIDED.replace('"" : 17', f'"" : {opset}'))
        model.graph.initializer.extend(strided_model().graph.initializer)
    proto = export_cam_model(model, method="gradcam")
    ops = [n.op_type for n in proto.graph.node]
    assert "Resize" not in ops and ops.count("MatMul") == 2
    assert "Expand" not in ops
    assert ops.count("Gemm") == 1  # the head's: the seed's rows are gathered
    assert "Shape" not in ops  # ... from a weight scaled once, as (N, C, 1, 1): no run-time shapes
    x = _x((2, 3, 12, 12), 5)
    assert _err(_run(proto, {"x": x})[CAM_OUTPUT], _api(model, "gradcam", x)) <= ORT_ATOL


def test_fem_needs_no_gradient_graph_and_no_class() -> None:
    proto = export_cam_model(strided_model(), method="fem")
    assert CLASS_INPUT not in {i.name for i in proto.graph.input}
    assert not any(n.name.startswith("camcore/") for n in proto.graph.node)  # no augment nodes


# ---------------------------------------------------------------------- real networks
@cache
def _resnet18() -> tuple[onnx.ModelProto, np.ndarray, Engine]:
    model, arrays, _ = load_golden("resnet18")
    return model, arrays["input"], Engine(model, threads=2)


def _golden(name: str) -> dict[str, np.ndarray]:
    with np.load(GOLDEN_DIR / name) as npz:
        return {k: npz[k] for k in npz.files}


@pytest.mark.parametrize("case", ["top1", "classes", "two_layers"])
def test_resnet18_equals_the_python_api_and_pytorch_grad_cam(case: str) -> None:
    _, x, engine = _resnet18()
    ref = _golden("gradcam_resnet18.npz")
    layers = [str(v) for v in ref[f"{case}__layers"]]
    classes = ref[f"{case}__classes"] if bool(ref[f"{case}__explicit"]) else None
    proto = _resnet18_export(tuple(layers), "gradcam")
    feeds = {"input": x} if classes is None else {"input": x, CLASS_INPUT: classes.astype(np.int64)}
    got = _run(proto, feeds)[CAM_OUTPUT]
    targets = None if classes is None else [camcore.ClassifierOutputTarget(int(k)) for k in classes]
    assert _err(got, camcore.GradCAM(engine, layers)(x, targets)) <= ORT_ATOL
    assert _err(got, decode_maps(ref[f"{case}__maps"])) <= ORT_ATOL


@cache
def _resnet18_export(layers: tuple[str, ...], method: str) -> onnx.ModelProto:
    return export_cam_model(_resnet18()[0], layers=list(layers), method=method)


#: the methods_resnet18.npz case of each exportable method pytorch-grad-cam shares (top-1 targets)
SHARED = {"gradcam++": "gradcamplusplus", "xgradcam": "xgradcam", "layercam": "layercam", "hirescam": "hirescam",
          "gradcam-elementwise": "gradcamelementwise", "fem": "fem", "shapleycam": "shapleycam"}  # fmt: skip


def test_every_shared_exportable_method_has_a_golden_case() -> None:
    assert set(SHARED) | {"gradcam"} == set(EXPORTABLE)


@pytest.mark.parametrize("method", list(SHARED))
def test_resnet18_methods_equal_pytorch_grad_cam(method: str) -> None:
    _, x, engine = _resnet18()
    ref = _golden("methods_resnet18.npz")
    spec = json.loads(str(ref["meta"]))["cases"][SHARED[method]]
    assert not spec["target"] and not spec["options"]
    got = _run(_resnet18_export(tuple(spec["layers"]), method), {"input": x})[CAM_OUTPUT]
    assert _err(got, cam_class(method)(engine, spec["layers"])(x)) <= ORT_ATOL
    assert _err(got, decode_maps(ref[SHARED[method]])) <= ORT_ATOL


#: reach exports: NHWC with channels-last and channels-first layers (jax2onnx's NHWC layer once lost
#: its bit-identical logits to a Transpose in the map: onnxruntime's transpose optimiser rewrote the
#: model's nodes), token grids after 1 and 5 leading tokens, opset 9 (upgraded to 11), float16 (CNN, ViT)
REACH_CASES = [
    "keras_se_op18",
    "keras_plain_op13",
    "jax_cnn_op23",
    "torch_vit_dynamo",
    "timm_vit_registers_torchscript",
    "paddle_cnn_op9",
    "keras_se_op13_fp16",
    "torch_vit_dynamo_fp16",
]


def _reach(name: str) -> tuple[str, np.ndarray, float]:
    fp16 = MANIFEST[name]["precision"].startswith("fp16")
    return str(REACH / f"{name}.onnx"), np.load(REACH / f"{name}.npz")["x"], fp16


@pytest.mark.parametrize("name", REACH_CASES)
def test_reach_exports_equal_the_python_api(name: str) -> None:
    path, x, fp16 = _reach(name)
    proto = export_cam_model(path)
    feeds = {proto.graph.input[0].name: x}
    got = _run(proto, feeds)
    hw = x.shape[1:3] if MANIFEST[name]["input_layout"] == "NHWC" else x.shape[2:]
    assert got[CAM_OUTPUT].shape == (len(x), *hw)
    assert _err(got[CAM_OUTPUT], _api(path, "gradcam", x)) <= (FP16_ATOL if fp16 else ORT_ATOL)
    plain = _run(onnx.load(path), feeds, "ORT_ENABLE_BASIC")
    basic = _run(proto, feeds, "ORT_ENABLE_BASIC")
    for out, value in plain.items():
        np.testing.assert_array_equal(basic[out], value, err_msg=f"{name}: output {out!r}")


# ---------------------------------------------------------------------- onnx.reference
def test_reference_evaluator_runs_the_export() -> None:
    from onnx.reference import ReferenceEvaluator

    model, x = strided_model(), _x((2, 3, 12, 12), 4)
    proto = export_cam_model(model, method="xgradcam", overlay=True)
    image = np.random.default_rng(5).integers(0, 256, (2, 12, 12, 3), dtype=np.uint8)
    cam, picture = ReferenceEvaluator(proto).run([CAM_OUTPUT, OVERLAY_OUTPUT], {"x": x, IMAGE_INPUT: image})
    assert _err(cam, _api(model, "xgradcam", x)) <= ORT_ATOL
    np.testing.assert_array_equal(picture, camcore.overlay(image, cam, 0.5, "jet"))


# ---------------------------------------------------------------------- the overlay
def _blend(levels: np.ndarray, image: np.ndarray, colormap: str, alpha: float) -> np.ndarray:
    """The C++ overlay's blend (cpp/src/kernels.hpp ``blend_of``) of colour levels onto ``image``, in numpy."""
    table = camcore.colorize(np.arange(256, dtype=np.uint8)[None], colormap)[0].astype(np.int64)
    premul = np.floor(256.0 * float(np.float32(alpha)) * table + 0.5).astype(np.int64) + 126
    weight = min(65535, int(np.floor(65536.0 * float(np.float32(1.0 - alpha)) + 0.5)))
    t = premul[levels] + ((image.astype(np.int64) * weight) >> 8)
    return ((t + 1 + ((t >> 8) & 1)) >> 8).astype(np.uint8)


@pytest.mark.parametrize(("colormap", "alpha"), [("jet", 0.5), ("turbo", 0.3), ("mpl_viridis", 0.7), ("jet", 1.0)])
def test_overlay_at_the_input_size_is_camcores_overlay_exactly(colormap: str, alpha: float) -> None:
    model, x = strided_model(), _x((2, 3, 12, 12), 6)
    proto = export_cam_model(model, overlay=True, colormap=colormap, alpha=alpha)
    image = np.random.default_rng(7).integers(0, 256, (2, 12, 12, 3), dtype=np.uint8)
    got = _run(proto, {"x": x, IMAGE_INPUT: image})
    assert got[OVERLAY_OUTPUT].dtype == np.uint8 and got[OVERLAY_OUTPUT].shape == image.shape
    want = camcore.overlay(image, got[CAM_OUTPUT], alpha, colormap)
    np.testing.assert_array_equal(got[OVERLAY_OUTPUT], want)
    levels = np.floor(np.clip(255 * got[CAM_OUTPUT], 0, 255)).astype(np.int64)
    np.testing.assert_array_equal(_blend(levels, image, colormap, alpha), want)  # the helper below is the C++'s


@pytest.mark.parametrize(("colormap", "alpha", "hw"), [("turbo", 0.3, (37, 29)), ("mpl_viridis", 0.7, (224, 200))])
def test_overlay_at_another_size_differs_by_at_most_one_level_on_rare_pixels(
    colormap: str, alpha: float, hw: tuple[int, int]
) -> None:
    """The graph resizes ``cam`` to the image with ONNX ``Resize``, camcore.overlay with its C++
    copy of OpenCV's float32 INTER_LINEAR: where 255 * the resized value lies within float32
    rounding of an integer, the colour level may differ by one (seen on 1 of 268,800 values)."""
    from camcore.postprocess import resize_cam

    model, x = strided_model(), _x((2, 3, 12, 12), 6)
    proto = export_cam_model(model, overlay=True, colormap=colormap, alpha=alpha)
    image = np.random.default_rng(7).integers(0, 256, (2, *hw, 3), dtype=np.uint8)
    got = _run(proto, {"x": x, IMAGE_INPUT: image})
    want = camcore.overlay(image, got[CAM_OUTPUT], alpha, colormap)
    differs = got[OVERLAY_OUTPUT] != want
    assert differs.mean() <= 1e-4
    levels = np.stack([np.floor(np.clip(255 * resize_cam(c, hw), 0, 255)) for c in got[CAM_OUTPUT]]).astype(np.int64)
    near = [_blend(np.clip(levels + d, 0, 255), image, colormap, alpha) for d in (-1, 0, 1)]
    np.testing.assert_array_equal(near[1], want)
    assert np.all(np.any([got[OVERLAY_OUTPUT] == n for n in near], axis=0))


# ---------------------------------------------------------------------- refusals
def test_bad_options_and_models_are_refused_in_one_line() -> None:
    from tests.detector_models import tiny_detector

    model = strided_model()
    cases = [
        (dict(overlay=True, colormap="rainbowish"), "unknown colormap 'rainbowish'"),
        (dict(overlay=True, alpha=1.5), "alpha must be a number in [0, 1]"),
        (dict(class_input="maybe"), "class_input must be"),
        (dict(layers=["flat"]), "rank 2"),
        (dict(method="EigenCAM"), "needs an SVD"),
    ]
    for kwargs, expected in cases:
        with pytest.raises(CamcoreError, match=None) as info:
            export_cam_model(model, **kwargs)
        assert expected in str(info.value) and "\n" not in str(info.value), (kwargs, str(info.value))
    clash = onnx.ModelProto()
    clash.CopyFrom(model)
    for node in clash.graph.node:
        node.input[:] = ["cam" if i == "pooled" else i for i in node.input]
        node.output[:] = ["cam" if o == "pooled" else o for o in node.output]
    with pytest.raises(CamcoreError, match="already has a tensor named 'cam'"):
        export_cam_model(clash)
    with pytest.raises(CamcoreError, match=r"explains an \(N, classes\) output"):
        export_cam_model(tiny_detector(), layers=["feat"])


def test_writes_atomically_and_never_over_its_input(tmp_path: Path) -> None:
    source = tmp_path / "model.onnx"
    onnx.save(strided_model(), str(source))
    with pytest.raises(CamcoreError, match="is an input"):
        export_cam_model(source, source)
    out = tmp_path / "cam.onnx"
    proto = export_cam_model(source, out, method="hirescam")
    assert onnx.load(str(out)) == proto
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cam.onnx", "model.onnx"]


# ---------------------------------------------------------------------- OpenVINO
def _openvino_outputs(data: bytes, feeds: dict[str, np.ndarray], names: list[str]) -> tuple[list[str], list]:
    """OpenVINO's inputs and outputs ``names`` of the model ``data`` (CPU, f32), in the worker."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(data, b""), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    inputs = [i.get_any_name() for i in compiled.inputs]
    got = compiled({k: v for k, v in feeds.items() if k in inputs})
    return inputs, [np.asarray(got[compiled.output(n)]) for n in names]


@pytest.fixture(scope="module")
def openvino() -> Iterator[ProcessPoolExecutor]:
    if importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino is not installed")
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


def _on_openvino(pool: ProcessPoolExecutor, proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict:
    names = [o.name for o in proto.graph.output]
    inputs, got = pool.submit(_openvino_outputs, proto.SerializeToString(), feeds, names).result()
    return {"inputs": inputs, **dict(zip(names, got))}


def test_openvino_tiny_models_every_method_and_class(openvino: ProcessPoolExecutor) -> None:
    for name, make in TINY.items():
        model = make()
        x = _x((3, 3, 12, 12) if name == "strided" else (3, 10, 8, 3), 8)
        for method in EXPORTABLE if name == "strided" else ["gradcam"]:
            proto = export_cam_model(model, method=method, class_input="required")
            feeds = {model.graph.input[0].name: x, CLASS_INPUT: np.array([-1], np.int64)}
            got = _on_openvino(openvino, proto, feeds)
            assert _err(got[CAM_OUTPUT], _api(model, method, x)) <= OV_ATOL, (name, method)
    model, x = strided_model(), _x((3, 3, 12, 12), 9)
    classes = np.array([4, 0, 2], np.int64)
    proto = export_cam_model(model, class_input="required")
    got = _on_openvino(openvino, proto, {"x": x, CLASS_INPUT: classes})
    assert got["inputs"] == ["x", CLASS_INPUT]
    assert _err(got[CAM_OUTPUT], _api(model, "gradcam", x, classes)) <= OV_ATOL
    optional = _on_openvino(openvino, export_cam_model(model), {"x": x, CLASS_INPUT: classes})
    assert optional["inputs"] == ["x"]  # OpenVINO folds an input with a default: top-1 only
    assert _err(optional[CAM_OUTPUT], _api(model, "gradcam", x)) <= OV_ATOL


def test_openvino_overlay_is_exact(openvino: ProcessPoolExecutor) -> None:
    model, x = strided_model(), _x((2, 3, 12, 12), 10)
    proto = export_cam_model(model, overlay=True, colormap="turbo", alpha=0.3)
    image = np.random.default_rng(11).integers(0, 256, (2, 12, 12, 3), dtype=np.uint8)
    got = _on_openvino(openvino, proto, {"x": x, IMAGE_INPUT: image})
    np.testing.assert_array_equal(got[OVERLAY_OUTPUT], camcore.overlay(image, got[CAM_OUTPUT], 0.3, "turbo"))


def test_openvino_resnet18_two_layers(openvino: ProcessPoolExecutor) -> None:
    _, x, engine = _resnet18()
    layers = [str(v) for v in _golden("gradcam_resnet18.npz")["two_layers__layers"]]
    got = _on_openvino(openvino, _resnet18_export(tuple(layers), "gradcam"), {"input": x})
    assert _err(got[CAM_OUTPUT], camcore.GradCAM(engine, layers)(x)) <= OV_ATOL


@pytest.mark.parametrize("name", ["keras_se_op18", "torch_vit_dynamo", "paddle_cnn_op9", "keras_se_op13_fp16"])
def test_openvino_reach_exports(name: str, openvino: ProcessPoolExecutor) -> None:
    path, x, fp16 = _reach(name)
    proto = export_cam_model(path, method="gradcam++")
    got = _on_openvino(openvino, proto, {proto.graph.input[0].name: x})
    assert _err(got[CAM_OUTPUT], _api(path, "gradcam++", x)) <= (FP16_ATOL if fp16 else OV_ATOL)
