"""Surgery invariant on real networks: the original outputs stay bit for bit identical."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from camcore.graph import augment
from tests.golden_models import golden_architectures, load_golden


@pytest.mark.parametrize("arch", golden_architectures())
def test_original_outputs_are_bit_identical(arch: str) -> None:
    model, arrays, target = load_golden(arch)
    x = arrays["input"]
    plain = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    aug = augment(model, [target])
    session = ort.InferenceSession(aug.model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = plain.run(None, {"input": x})
    got = session.run(aug.original_outputs, {"input": x, aug.seed_input: np.full(len(x), -1, np.int64)})
    for w, g in zip(want, got):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("level", ["ORT_ENABLE_BASIC", "ORT_ENABLE_ALL"])
def test_reach_exports_keep_their_outputs(level: str) -> None:
    """Every reach export (torch dynamo/TorchScript, tf2onnx, jax2onnx) with its default layer.
    Up to onnxruntime's basic optimisations the outputs are bit for bit the same. Its extended
    fusions (Add + LayerNormalization -> SkipLayerNormalization, MatMul + scale -> FusedMatMul)
    apply to the plain model but not where the backward pass reads the tensor in between, so a
    transformer's outputs may differ in the last bits there (README: Limits)."""
    import json
    from pathlib import Path

    import onnx

    reach = Path(__file__).resolve().parent.parent / "reach"
    names = sorted(json.loads((reach / "manifest.json").read_text()))
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    worst = 0.0
    extended = ort.SessionOptions()  # what camcore uses for float16 models on the CPU (runtime.Session)
    extended.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    for name in names:
        model = onnx.load(str(reach / f"{name}.onnx"))
        x = np.load(reach / f"{name}.npz")["x"]
        # level ALL crashes onnxruntime 1.31 on torch's float16 ViT, camcore or not
        chosen = extended if x.dtype == np.float16 and level == "ORT_ENABLE_ALL" else options
        plain = ort.InferenceSession(model.SerializeToString(), chosen, providers=["CPUExecutionProvider"])
        aug = augment(model, None, seed="tensor")
        session = ort.InferenceSession(aug.model.SerializeToString(), chosen, providers=["CPUExecutionProvider"])
        want = plain.run(None, {plain.get_inputs()[0].name: x})[0]
        seed = np.ones(want.shape, want.dtype)
        got = session.run(aug.original_outputs[:1], {plain.get_inputs()[0].name: x, aug.seed_input: seed})[0]
        if level == "ORT_ENABLE_BASIC":
            np.testing.assert_array_equal(got, want, err_msg=name)
        else:
            np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6, err_msg=name)
            worst = max(worst, float(np.abs(got - want).max()))
    assert worst < 1e-6
