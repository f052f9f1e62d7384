"""Provider selection: CUDA only when it really starts, clear errors for unknown providers."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from onnx.external_data_helper import uses_external_data

from camcore import runtime
from camcore.errors import CamcoreError


def test_cpu_fallback_when_cuda_does_not_initialise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "cuda_status", lambda: (False, "no GPU here"))
    choice = runtime.select_providers()
    assert choice.providers == ["CPUExecutionProvider"] and choice.reason == "no GPU here"


def test_cuda_first_when_it_initialises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "cuda_status", lambda: (True, "CUDA provider initialised"))
    assert runtime.select_providers().providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_cuda_status_matches_this_machine() -> None:
    ok, reason = runtime.cuda_status()
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert not ok and "no CUDA provider" in reason
    assert isinstance(reason, str) and reason


def test_unknown_provider_is_a_clear_error() -> None:
    with pytest.raises(CamcoreError, match="not available"):
        runtime.select_providers(["NoSuchExecutionProvider"])


def test_requested_provider_keeps_cpu_fallback() -> None:
    assert runtime.select_providers(["CPUExecutionProvider"]).providers == ["CPUExecutionProvider"]


def test_bad_thread_count() -> None:
    from tests.models import tiny_classifier

    with pytest.raises(CamcoreError, match="threads must be >= 1"):
        runtime.Session(tiny_classifier()[0], threads=0)


@pytest.mark.parametrize("limit", [None, 0])
def test_models_too_big_to_pass_inline_go_through_external_data(monkeypatch: pytest.MonkeyPatch, limit) -> None:
    """Bytes when the model fits, else a temporary file with external weights: same outputs."""
    from tests.models import tiny_classifier

    model = tiny_classifier(channels=32)[0]  # weights over onnx.save's 1 KB external-data threshold
    before = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    want = runtime.Session(model).run({"x": x})
    if limit is not None:
        monkeypatch.setattr(runtime, "_MAX_INLINE_BYTES", limit)
    session = runtime.Session(model)
    assert session.inline == (limit is None)
    for t in model.graph.initializer:  # the caller's model keeps its weights
        assert not uses_external_data(t)
        np.testing.assert_array_equal(numpy_helper.to_array(t), before[t.name])
    for name, value in session.run({"x": x}).items():
        np.testing.assert_array_equal(value, want[name])


def test_float16_models_run_on_the_cpu_without_the_layout_optimisations() -> None:
    """onnxruntime 1.31 crashes (segfault) loading torch's float16 ViT at level ALL on the CPU;
    camcore's sessions stop at the extended fusions for float16 models there."""
    from pathlib import Path

    import onnx

    from camcore.runtime import Session

    reach = Path(__file__).resolve().parent / "reach"
    model = onnx.load(str(reach / "torch_vit_dynamo_fp16.onnx"))
    x = np.load(reach / "torch_vit_dynamo_fp16.npz")["x"]
    session = Session(model, ["CPUExecutionProvider"])
    assert session.run({"x": x})["logits"].dtype == np.float16


def test_worker_threads_do_not_spin_between_runs() -> None:
    """A call alternates onnxruntime runs with numpy work: idle pool threads must not spin on the
    cores that work needs (``spinning=True`` restores onnxruntime's default)."""
    from camcore.runtime import Session
    from tests.models import tiny_classifier

    model, _ = tiny_classifier()
    for spinning, want in ((False, "0"), (True, "1")):
        options = Session(model, ["CPUExecutionProvider"], spinning=spinning).session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == want
