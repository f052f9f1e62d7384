"""camcore's in-graph gradients against PyTorch autograd on real exported architectures.

The golden data of ``tests/golden/`` come from ``tools/make_autograd_golden.py``: real
torchvision networks with recipe weights, exported to ONNX, and float64 autograd
references of the logits, of a target activation and of its gradient for two seeds (a
one-hot class and a random vector). Nothing here needs torch: the weights are rebuilt
from their recipes by ``tests/golden_models.py``.

Tolerances: an array passes when ``|got - want| <= RTOL |want| + atol`` with
``atol = max(ATOL_FRAC, KINK_FACTOR * sensitivity) * max|want|``. The reference is
float64 and camcore runs in float32, so smooth arrays differ by accumulated rounding
(~1e-6 of the maximum). Networks with millions of ReLU/max-pool/clip inputs always hold
some within rounding of their switch point, and a float32 run flips a few: gradients
that flow back through the high-resolution stem then jump by up to a few percent. The
tool records each array's ``sensitivity``, its largest move under float32 and 1e-6 input
perturbations in PyTorch; it is ~1e-6 for smooth arrays, which keep the strict bound.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.golden_models import golden_architectures, load_golden, load_manifest, sample_flat

ARCHS = golden_architectures()
RTOL = 1e-4
ATOL_FRAC = 1e-4
KINK_FACTOR = 3.0


@dataclass
class Golden:
    """One architecture's rebuilt model, golden arrays, target tensor name and manifest."""

    arch: str
    model: onnx.ModelProto
    arrays: dict[str, np.ndarray]
    target: str
    manifest: dict[str, Any]

    def check(self, got: np.ndarray, key: str, what: str = "") -> None:
        """Compare ``got`` with the golden array ``key`` at that array's tolerance."""
        sensitivity = self.manifest["sensitivity"][key]
        assert_matches(got, self.arrays[key], f"{self.arch} {what or key}", sensitivity)


@pytest.fixture(scope="module", params=ARCHS)
def golden(request: pytest.FixtureRequest) -> Iterator[Golden]:
    """Load one architecture once for all tests of this module (pytest groups by it)."""
    arch = request.param
    model, arrays, target = load_golden(arch)
    yield Golden(arch, model, arrays, target, load_manifest(arch))


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    """Return a CPU onnxruntime session with default optimizations and 2 threads."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    """Return ``max|got - want| / max|want|``, the figure reported on failure."""
    return float(np.abs(got.astype(np.float64) - want).max() / np.abs(want).max())


def assert_matches(got: np.ndarray, want: np.ndarray, what: str, sensitivity: float = 0.0) -> None:
    """Assert ``got`` is ``want`` within ``RTOL`` and a fraction of its max magnitude.

    The fraction is ``ATOL_FRAC``, or ``KINK_FACTOR`` times the array's recorded kink
    sensitivity where that is larger (see the module docstring).
    """
    assert got.shape == want.shape, f"{what}: shape {got.shape} != reference {want.shape}"
    assert np.isfinite(got).all(), f"{what}: non-finite values"
    atol = max(ATOL_FRAC, KINK_FACTOR * sensitivity) * float(np.abs(want).max())
    bad = np.abs(got - want) > RTOL * np.abs(want) + atol
    assert not bad.any(), (
        f"{what}: {int(bad.sum())}/{bad.size} elements off; max error "
        f"{rel_err(got, want):.2e} of max|ref| (tolerance rtol={RTOL}, atol={atol:.2e})"
    )


def test_golden_files_are_small() -> None:
    """The golden directory stays light enough to live in the repository."""
    from tests.golden_models import GOLDEN_DIR

    total = sum(p.stat().st_size for p in GOLDEN_DIR.iterdir())
    assert total < 3 * 2**20, f"tests/golden holds {total / 2**20:.1f} MiB"
    assert len(ARCHS) >= 7, f"golden architectures: {ARCHS}"


def test_rebuilt_model_reproduces_reference(golden: Golden) -> None:
    """The recipe-rebuilt ONNX model computes PyTorch's logits (guards the loader itself)."""
    (logits,) = _session(golden.model).run(["logits"], {"input": golden.arrays["input"]})
    golden.check(logits, "logits")


@pytest.fixture(scope="module")
def tensor_seed_run(golden: Golden) -> dict[str, np.ndarray]:
    """Augment with ``seed="tensor"`` and run both seeds in one batch of twice the size."""
    from camcore.graph import augment

    aug = augment(golden.model, [golden.target], seed="tensor")
    a = golden.arrays
    feeds = {
        "input": np.concatenate([a["input"], a["input"]]),
        aug.seed_input: np.concatenate([a["seed_onehot"], a["seed_random"]]),
    }
    names = ["logits", aug.activation_outputs[golden.target], aug.gradient_outputs[golden.target]]
    logits, act, grad = _session(aug.model).run(names, feeds)
    n = a["input"].shape[0]
    return {
        "logits": logits[:n],
        "logits_2": logits[n:],
        "activation": act[:n],
        "activation_2": act[n:],
        "grad_onehot": grad[:n],
        "grad_random": grad[n:],
    }


@pytest.mark.parametrize("key", ["logits", "activation"])
def test_augmented_forward_matches_autograd(golden: Golden, tensor_seed_run: dict[str, np.ndarray], key: str) -> None:
    """The augmented model still computes the logits and exposes the target activation."""
    golden.check(tensor_seed_run[key], key)
    golden.check(tensor_seed_run[f"{key}_2"], key, f"{key} (second half of the batch)")


@pytest.mark.parametrize("seed", ["onehot", "random"])
def test_gradient_matches_autograd(golden: Golden, tensor_seed_run: dict[str, np.ndarray], seed: str) -> None:
    """d<seed, logits>/d activation equals PyTorch autograd, for a one-hot and a random seed."""
    golden.check(tensor_seed_run[f"grad_{seed}"], f"grad_{seed}")


def test_class_seed_matches_onehot_gradient(golden: Golden) -> None:
    """``seed="class"`` with the class index gives the one-hot gradient."""
    from camcore.graph import augment

    aug = augment(golden.model, [golden.target], seed="class")
    cls = golden.manifest["onehot_class"]
    x = golden.arrays["input"]
    feeds = {"input": x, aug.seed_input: np.full(x.shape[0], cls, dtype=np.int64)}
    (grad,) = _session(aug.model).run([aug.gradient_outputs[golden.target]], feeds)
    golden.check(grad, "grad_onehot", "class-seed gradient")


@pytest.fixture(scope="module")
def deep_run(golden: Golden) -> dict[str, np.ndarray]:
    """Augment for a mid-network layer and the model input at once (random seed)."""
    from camcore.graph import augment

    manifest = golden.manifest
    k = manifest["deep_sample"]
    mid, inp = manifest["deep_targets"]["mid"], manifest["deep_targets"]["input"]
    aug = augment(golden.model, [mid, inp], seed="tensor")
    a = golden.arrays
    names = [
        aug.activation_outputs[mid],
        aug.gradient_outputs[mid],
        aug.activation_outputs[inp],
        aug.gradient_outputs[inp],
    ]
    feeds = {"input": a["input"], aug.seed_input: a["seed_random"]}
    mid_act, mid_grad, in_act, in_grad = _session(aug.model).run(names, feeds)
    np.testing.assert_array_equal(in_act, a["input"])
    return {
        "mid_activation": sample_flat(mid_act, k),
        "mid_grad_random": sample_flat(mid_grad, k),
        "input_grad_random": sample_flat(in_grad, k),
    }


@pytest.mark.parametrize("key", ["mid_activation", "mid_grad_random", "input_grad_random"])
def test_deep_gradient_matches_autograd(golden: Golden, deep_run: dict[str, np.ndarray], key: str) -> None:
    """Gradients that flow back through the whole network (a mid layer, the input) match.

    The arrays are ``sample_flat`` samples; the golden input was chosen so that neither
    float32 rounding nor a 1e-6 input perturbation flips a ReLU or max-pool switch.
    """
    golden.check(deep_run[key], key)


@pytest.mark.torch
def test_torch_live_gradient_matches_golden() -> None:
    """With torch present, regenerate ResNet-18's reference live and compare to the golden."""
    pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
    import make_autograd_golden as tool

    manifest = load_manifest("resnet18")
    model = tool.ARCHS["resnet18"].build().eval()
    _, arrays, _ = load_golden("resnet18")
    import torch

    tool.apply_recipes(model, torch.from_numpy(arrays["input"]))
    seeds = {"onehot": arrays["seed_onehot"], "random": arrays["seed_random"]}
    paths = {"last": manifest["target_module"], "mid": manifest["deep_modules"]["mid"], "input": ""}
    live = tool.stored_arrays(tool.reference(model, arrays["input"], paths, seeds))
    for key, want in live.items():
        assert_matches(want.astype(np.float32), arrays[key], f"live resnet18 {key}")
