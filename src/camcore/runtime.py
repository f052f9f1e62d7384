"""onnxruntime sessions: provider selection, thread count, named inputs and outputs.

CUDA is used when it really initialises (a tiny probe session is created once per
process, with onnxruntime's logging silenced so a CPU-only machine with
onnxruntime-gpu installed prints no error spew); otherwise the CPU provider.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from camcore.errors import CamcoreError, InputError, ModelError

_QUIET = 4  # onnxruntime log severity: fatal only
_DEFAULT_SEVERITY = 3  # errors only: onnxruntime-gpu warns about every missing CUDA lib at 2
_MAX_INLINE_BYTES = 1_800_000_000


@dataclass(frozen=True)
class ProviderChoice:
    """The providers a session will use, and why."""

    providers: list[str]
    reason: str


def _probe_model() -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


@functools.cache
def cuda_status() -> tuple[bool, str]:
    """Whether the CUDA execution provider really initialises here, and why (not)."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False, f"this onnxruntime build ({ort.__version__}) has no CUDA provider"
    options = ort.SessionOptions()
    options.log_severity_level = _QUIET
    ort.set_default_logger_severity(_QUIET)
    try:
        session = ort.InferenceSession(
            _probe_model(), options, providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
        )
        active = session.get_providers()
    except Exception as exc:
        return False, f"CUDA provider failed to start ({str(exc).splitlines()[0][:120]})"
    finally:
        ort.set_default_logger_severity(_DEFAULT_SEVERITY)
    if "CUDAExecutionProvider" in active:
        return True, "CUDA provider initialised"
    return False, "CUDA provider is installed but did not initialise (no GPU or CUDA libraries)"


def _float16(model: onnx.ModelProto) -> bool:
    """Whether the model computes in float16 (an input or a weight in float16)."""
    half = onnx.TensorProto.FLOAT16
    return any(i.type.tensor_type.elem_type == half for i in model.graph.input) or any(
        t.data_type == half for t in model.graph.initializer
    )


def select_providers(requested: Sequence[str] | None = None) -> ProviderChoice:
    """CUDA when it works, else CPU; an explicit list is validated and kept in order."""
    available = ort.get_available_providers()
    if requested:
        unknown = [p for p in requested if p not in available]
        if unknown:
            raise CamcoreError(f"execution provider(s) {unknown} are not available; available: {available}")
        providers = list(requested)
        if "CPUExecutionProvider" not in providers:
            providers.append("CPUExecutionProvider")
        return ProviderChoice(providers, "requested by the caller")
    ok, why = cuda_status()
    if ok:
        return ProviderChoice(["CUDAExecutionProvider", "CPUExecutionProvider"], why)
    return ProviderChoice(["CPUExecutionProvider"], why)


def _inline_bytes(model: onnx.ModelProto) -> bytes | None:
    """The serialised model, or None when it is too big to pass as bytes (over
    ``_MAX_INLINE_BYTES``, or over protobuf's 2 GB limit, which makes serialising fail).
    Serialising directly spares a ``ByteSize()`` walk of the whole model first."""
    try:
        data = model.SerializeToString()
    except ValueError:  # "Message onnx.ModelProto exceeds maximum protobuf size of 2GB"
        return None
    return data if len(data) <= _MAX_INLINE_BYTES else None


class Session:
    """An inference session that takes and returns tensors by name.

    Its intra-op worker threads do not spin (``session.intra_op.allow_spinning`` 0) unless
    ``spinning``: a camcore call runs onnxruntime, then numpy and OpenCV (seeds, maps, the
    overlay), then onnxruntime again, and onnxruntime's default of threads spinning after each
    run took the cores that work needed. On 2 cores a small model's call was 1.4–1.9x faster
    without it and used half the CPU time (BENCHMARKS.md, "Where a small model's fixed overhead
    goes").

    Example:
        >>> s = Session("model.onnx", threads=2)
        >>> s.run({"input": x})["logits"].shape
        (1, 1000)
    """

    def __init__(
        self,
        model: onnx.ModelProto | str | Path,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        spinning: bool = False,
    ) -> None:
        self.choice = select_providers(providers)
        options = ort.SessionOptions()
        options.log_severity_level = _DEFAULT_SEVERITY
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        if isinstance(model, onnx.ModelProto) and _float16(model) and self.choice.providers == ["CPUExecutionProvider"]:
            # onnxruntime 1.31's layout optimisations (level ALL) crash on the CPU loading some float16
            # transformers (torch's float16 ViT exports); the extended fusions stay
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        if threads is not None:
            if threads < 1:
                raise CamcoreError(f"threads must be >= 1, got {threads}")
            options.intra_op_num_threads = threads
        source: str | bytes
        scratch: tempfile.TemporaryDirectory[str] | None = None
        if not isinstance(model, onnx.ModelProto):
            source = str(model)
        elif (inline := _inline_bytes(model)) is not None:
            source = inline
        else:
            # Too big for bytes: a file with external weights, removed once the session has
            # loaded them (where a platform keeps the file open, it stays until exit).
            scratch = tempfile.TemporaryDirectory(prefix="camcore-", ignore_cleanup_errors=True)
            source = os.path.join(scratch.name, "model.onnx")
            onnx.save(model, source, save_as_external_data=True, location="weights.bin")
        #: whether the model went to onnxruntime as bytes (else as a file with external weights)
        self.inline = scratch is None
        try:
            self.session = ort.InferenceSession(source, options, providers=self.choice.providers)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"onnxruntime cannot load the model: {first[:300]}") from None
        finally:
            if scratch is not None:
                # onnx.save moved the weights out of `model`: read them back, then drop the file.
                onnx.load_external_data_for_model(model, scratch.name)  # type: ignore[arg-type]
                scratch.cleanup()
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]

    @property
    def providers(self) -> list[str]:
        """The providers the session actually uses."""
        return list(self.session.get_providers())

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Run; returns ``{output name: array}``. Missing or extra inputs fail clearly."""
        missing = sorted(set(self.inputs) - set(feeds))
        extra = sorted(set(feeds) - set(self.inputs))
        if missing or extra:
            raise InputError(f"model inputs are {sorted(self.inputs)}; missing {missing}, unexpected {extra}")
        names = list(outputs) if outputs is not None else self.output_names
        try:
            values = self.session.run(names, dict(feeds))
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            shapes = {k: (tuple(v.shape), str(v.dtype)) for k, v in feeds.items()}
            dynamic = any(not isinstance(d, int) for i in self.session.get_inputs() for d in i.shape[1:])
            hint = (
                "; the model leaves its input size open but may work at one size only (a text recogniser's "
                "height, say): fix it with --size HxW or input_shapes="
                if dynamic
                else ""
            )
            raise InputError(f"onnxruntime rejected the inputs {shapes}: {first}{hint}") from None
        return dict(zip(names, values))
