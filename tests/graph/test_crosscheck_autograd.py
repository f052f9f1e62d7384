"""camcore's in-graph gradients against PyTorch autograd on real exported architectures.

The golden data of ``tests/golden/`` come from ``tools/make_autograd_golden.py``: real
torchvision networks with recipe weights, exported to ONNX, and float64 autograd
references of the logits, of a target activation and of its gradient for two seeds (a
one-hot class and a random vector). Nothing here needs torch: the weights are rebuilt
from their recipes by ``tests/golden_models.py``.

The golden input is kink-free: the tool nudged it until every switch of the network (each
ReLU, ReLU6/clip, hard-swish and hard-sigmoid input, each max-pool window's choice) is at
least 2e-5 of its tensor's maximum from its kink, in float64, while a float32 forward pass
moves those values by at most 1.7e-6 of it (measured in PyTorch). So camcore's float32 run
takes every switch the way the float64 reference does, and every array here is a smooth
function of float32 rounding.

Tolerances: an array passes when ``max|got - want| <= tol * max|want|``. ``TOLERANCE`` holds
``tol`` per array, about ten times the largest error observed over the architectures
(``python -m pytest tests/graph/test_crosscheck_autograd.py -q -s`` prints them); the manifest's
``torch_float32_error`` records the same figure for PyTorch's own float32 autograd.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.golden_models import (
    GOLDEN_DIR,
    golden_architectures,
    load_golden,
    load_manifest,
    recipe_from_spec,
    sample_flat,
)

ARCHS = golden_architectures()
#: Largest ``max|got - want| / max|want|`` per golden array, about ten times the largest
#: error observed (float32 accumulation against the float64 reference).
TOLERANCE: dict[str, float] = {
    # observed maxima over the 8 networks (camcore float32 vs float64 autograd), per array:
    "logits": 1e-5,  # 1.4e-6 (EfficientNet-B0)
    "activation": 2e-5,  # 2.1e-6 (EfficientNet-B0's SiLU stack)
    "grad_onehot": 5e-6,  # 5.2e-7 (VGG-11-BN); exact (0) on the linear heads after pooling
    "grad_random": 5e-6,  # 5.7e-7 (MobileNetV3-small)
    "mid_activation": 1e-5,  # 9.4e-7 (EfficientNet-B0)
    "mid_grad_random": 3e-5,  # 3.2e-6 (EfficientNet-B0, back through 11 blocks)
    "input_grad_random": 2e-5,  # 1.8e-6 (EfficientNet-B0); 1.4e-6 MobileNetV3-small, 6e-7 DenseNet-121
}
#: (arch, array) -> (tolerance, reason) where one architecture needs more than ``TOLERANCE``.
SPECIAL: dict[tuple[str, str], tuple[float, str]] = {}
#: Smallest kink margin the tool must have reached (relative to each switch tensor's maximum).
KINK_MARGIN = 2e-5


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
        tol = SPECIAL.get((self.arch, key), (TOLERANCE[key], ""))[0]
        assert_matches(got, self.arrays[key], f"{self.arch} {what or key}", tol)


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


def assert_matches(got: np.ndarray, want: np.ndarray, what: str, tol: float) -> None:
    """Assert ``max|got - want| <= tol * max|want|`` (and equal shapes, finite values)."""
    assert got.shape == want.shape, f"{what}: shape {got.shape} != reference {want.shape}"
    assert np.isfinite(got).all(), f"{what}: non-finite values"
    err = rel_err(got, want)
    print(f"{what}: max error {err:.2e} of max|ref| (tolerance {tol:.0e})")
    assert err <= tol, f"{what}: max error {err:.2e} of max|ref| > tolerance {tol:.0e}"


def test_golden_files_are_small() -> None:
    """The golden directory stays light enough to live in the repository."""
    total = sum(p.stat().st_size for p in GOLDEN_DIR.iterdir())
    assert total < 3.5 * 2**20, f"tests/golden holds {total / 2**20:.2f} MiB"
    assert len(ARCHS) >= 7, f"golden architectures: {ARCHS}"


def test_golden_input_is_kink_free(golden: Golden) -> None:
    """The manifest records the switch margins the tool reached on the stored input, and the
    stored input is the recipe plus that nudge (smooth networks have no switches to clear)."""
    nudge = golden.manifest["input_nudge"]
    recipe = recipe_from_spec(golden.manifest["input"])
    moved = int(np.count_nonzero(golden.arrays["input"] != recipe))
    if nudge["switch_tensors"] == 0:
        assert moved == 0 and nudge["nudged_values"] == 0
        return
    assert nudge["margin"] >= KINK_MARGIN and nudge["min_margin"] >= nudge["margin"], nudge
    assert 0 < moved <= nudge["nudged_values"]
    assert float(np.abs(golden.arrays["input"] - recipe).max()) <= 1.01 * nudge["max_abs_nudge"]


def test_tolerances_are_consistent() -> None:
    """Every array has a tolerance; special ones name real architectures and are looser."""
    assert set(TOLERANCE) == {
        "logits", "activation", "grad_onehot", "grad_random", "mid_activation", "mid_grad_random",
        "input_grad_random",
    }  # fmt: skip
    for (arch, key), (tol, why) in SPECIAL.items():
        assert arch in ARCHS and tol > TOLERANCE[key] and why, (arch, key)


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

    The arrays are ``sample_flat`` samples; the golden input is kink-free (module
    docstring), so no float32 rounding flips a ReLU, clip, hard-swish or max-pool switch.
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
    model, _, _ = tool.build_model("resnet18")
    _, arrays, _ = load_golden("resnet18")
    seeds = {"onehot": arrays["seed_onehot"], "random": arrays["seed_random"]}
    paths = {"last": manifest["target_module"], "mid": manifest["deep_modules"]["mid"], "input": ""}
    live = tool.stored_arrays(tool.reference(model, arrays["input"], paths, seeds))
    for key, want in live.items():
        # the live reference is float64 like the stored one, which is float32: rounding only
        assert_matches(want.astype(np.float32), arrays[key], f"live resnet18 {key}", 1e-6)
