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
