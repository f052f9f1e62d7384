"""Provider selection: CUDA only when it really starts, clear errors for unknown providers."""

from __future__ import annotations

import onnxruntime as ort
import pytest

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
