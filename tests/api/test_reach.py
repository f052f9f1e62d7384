"""The reach set: models exported by other frameworks' own exporters (tests/reach, made by
tools/make_reach_models.py), explained at camcore's default layer with none of those frameworks
installed.

For each: the default layer is the one the framework's own Grad-CAM uses, laid out as the graph
shows it; the map equals the reference the framework computed (pytorch-grad-cam for torch,
tf.GradientTape for Keras, jax.grad for JAX); the layer gradient agrees with finite differences
of the model cut at the layer, in float64; the CLI writes maps at the input's own size.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from onnx.reference import ReferenceEvaluator

import camcore
from camcore.cli import main
from camcore.graph import prepare_model
from camcore.graph.parts import downstream_model
from camcore.maps import assemble
from tests.graph.fd import PRECISE_OPS, to_double

REACH = Path(__file__).resolve().parent.parent / "reach"
MANIFEST = json.loads((REACH / "manifest.json").read_text())
NAMES = sorted(MANIFEST)


def _case(name: str) -> tuple[dict, dict[str, np.ndarray], str]:
    data = dict(np.load(REACH / f"{name}.npz"))
    return MANIFEST[name], data, str(REACH / f"{name}.onnx")


#: float16 keeps 11 bits: maps and gradients of the float16 exports agree with the float32
#: framework's and with float64 finite differences to float16's precision, not float32's
MAP_TOLERANCE = {"fp32": 2e-5, "fp16": 1e-2}
GRADIENT_TOLERANCE = {"fp32": (1e-4, 1e-5), "fp16": (2e-2, 1e-3)}


def _precision(entry: dict) -> str:
    return "fp16" if entry["precision"].startswith("fp16") else "fp32"


def _hw(entry: dict, x: np.ndarray) -> tuple[int, int]:
    return (x.shape[1], x.shape[2]) if entry["input_layout"] == "NHWC" else (x.shape[2], x.shape[3])


def test_the_set_covers_every_framework_and_exporter() -> None:
    exporters = {entry["exporter"].split("(")[0].split()[0] for entry in MANIFEST.values()}
    assert exporters == {"torch.onnx.export", "tf2onnx", "jax2onnx", "paddle2onnx"}
    assert {entry["input_layout"] for entry in MANIFEST.values()} == {"NCHW", "NHWC"}
    assert {entry["layout"] for entry in MANIFEST.values()} == {"channels_first", "channels_last", "tokens"}
    assert {entry["precision"] for entry in MANIFEST.values()} == {"fp32", "fp16", "fp16, fp32 inputs and outputs"}


@pytest.mark.parametrize("name", NAMES)
def test_default_layer_and_its_layout(name: str) -> None:
    entry, _, path = _case(name)
    cam = camcore.GradCAM(path, None)
    assert cam.target_layers == [entry["default_layer"]]
    layout = cam.engine.layer_layout(entry["default_layer"])
    assert layout is not None and layout.kind == entry["layout"]
    assert cam.engine.input_layout == entry["input_layout"]


@pytest.mark.parametrize("name", NAMES)
def test_map_equals_the_frameworks_own(name: str) -> None:
    entry, data, path = _case(name)
    x, target = data["x"], int(data["target"])
    got = camcore.GradCAM(path, None)(x, [camcore.ClassifierOutputTarget(target)] * len(x))
    hw = _hw(entry, x)
    want = data["cam"] if entry["map"] == "final" else assemble([data["cam"]], hw)
    assert got.shape == (len(x), *hw) and np.ptp(want) > 0.5
    np.testing.assert_allclose(got, want, atol=MAP_TOLERANCE[_precision(entry)])


@pytest.mark.parametrize("name", NAMES)
def test_layer_gradient_matches_finite_differences(name: str) -> None:
    entry, data, path = _case(name)
    x, target, layer = data["x"][:1], int(data["target"]), entry["default_layer"]
    cam = camcore.GradCAM(path, None)
    cam(x, [camcore.ClassifierOutputTarget(target)])
    act, grad = cam.activations[layer].astype(np.float64), cam.gradients[layer]
    rtol, atol = GRADIENT_TOLERANCE[_precision(entry)]
    proto, info = prepare_model(path, {cam.engine.input_names[0]: list(x.shape)})
    cut, bypass = downstream_model(proto, info, layer, cam.engine.output)  # residuals read x too
    ref = ReferenceEvaluator(to_double(cut), new_ops=PRECISE_OPS)
    held = {name: x.astype(np.float64) for name in bypass}

    def score(a: np.ndarray) -> float:
        return float(ref.run([cam.engine.output], {layer: a, **held})[0][0, target])

    rng = np.random.default_rng(11)
    eps = 1e-6
    for _ in range(3):
        v = rng.standard_normal(act.shape)
        fd = (score(act + eps * v) - score(act - eps * v)) / (2 * eps)
        np.testing.assert_allclose(float(np.sum(grad.astype(np.float64) * v)), fd, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", ["jax_cnn_op23", "keras_se_op18", "torch_vit_dynamo"])
def test_cli_writes_maps_at_the_inputs_size(name: str, tmp_path: Path) -> None:
    import cv2

    entry, data, path = _case(name)
    hw = _hw(entry, data["x"])
    image = tmp_path / "img.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (*hw, 3), np.uint8))
    assert main(["explain", path, str(image), "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["target_layers"] == [entry["default_layer"]]
    assert np.load(summary["images"][0]["map"]).shape == hw
