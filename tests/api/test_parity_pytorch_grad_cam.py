"""camcore.GradCAM maps against pytorch-grad-cam 1.5.7's GradCAM on real networks.

``tools/make_gradcam_golden.py`` ran pytorch-grad-cam (float32 torch, CPU) on the golden
torchvision networks of ``tests/golden/`` (recipe weights, golden input, batch 2) and
stored its whole maps in ``tests/golden/gradcam_<arch>.npz`` (``encode_maps``: 24-bit fixed
point, error <= 3e-8): top-1 and explicit per-image classes, a two-layer ResNet-18 case, and
ViT with the documented ``reshape_transform`` (here camcore infers the token grid itself).
Nothing here needs torch.

Tolerance: both pipelines run float32 (torch vs onnxruntime kernels) and min-max scale
every map, so they differ by the rounding of the forward pass, the gradients and the
channel sums, relative to the map's range. The observed maximum over all cases is 2.7e-6
on [0, 1] maps; ``ATOL`` is about ten times that, while any real pipeline difference stays
far outside it (a bicubic instead of bilinear resize moves ResNet-18's map by 0.1, a
nearest one by 0.55, DenseNet's in-place-ReLU aliasing in unpatched pytorch-grad-cam by
0.17 to 1).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import onnx
import pytest

import camcore
from tests.golden_models import GOLDEN_DIR, decode_maps, load_golden, load_manifest
from tests.tooling import load_tool

#: Largest |camcore - pytorch-grad-cam| allowed on maps scaled to [0, 1].
ATOL = 3e-5
#: Total size of the gradcam golden files.
MAX_BYTES = 128 * 1024

FILES = sorted(GOLDEN_DIR.glob("gradcam_*.npz"))


def _arch(path: Path) -> str:
    """``gradcam_resnet18.npz`` -> ``resnet18``."""
    return path.stem.removeprefix("gradcam_")


@functools.cache
def _reference(arch: str) -> dict[str, np.ndarray]:
    """The stored pytorch-grad-cam arrays of ``arch`` (plain arrays, no pickle)."""
    with np.load(GOLDEN_DIR / f"gradcam_{arch}.npz") as npz:
        return {key: npz[key] for key in npz.files}


def _cases() -> list[tuple[str, str]]:
    """(arch, case) pairs of every golden file."""
    return [(_arch(p), str(c)) for p in FILES for c in _reference(_arch(p))["cases"]]


@functools.cache
def _model(arch: str) -> tuple[onnx.ModelProto, np.ndarray]:
    """The recipe-rebuilt ONNX model of ``arch`` and the golden input."""
    model, arrays, _ = load_golden(arch)
    return model, arrays["input"]


@functools.cache
def _cam(arch: str, layers: tuple[str, ...]) -> camcore.GradCAM:
    """One camcore.GradCAM per (arch, layers), so the cases share compiled sessions."""
    model, _ = _model(arch)
    return camcore.GradCAM(model, target_layers=list(layers), threads=2)


def test_golden_files_present_and_small() -> None:
    """Every architecture with a CAM case has its golden file; together they stay small."""
    assert {_arch(p) for p in FILES} >= {
        "resnet18", "mobilenet_v2", "convnext_tiny", "densenet121", "vit_ti_16"
    }  # fmt: skip
    total = sum(p.stat().st_size for p in FILES)
    assert total < MAX_BYTES, f"gradcam golden files hold {total / 1024:.0f} KB"


@pytest.mark.parametrize(("arch", "case"), _cases())
def test_gradcam_matches_pytorch_grad_cam(arch: str, case: str) -> None:
    """camcore.GradCAM(model, target_layers)(x, targets) is pytorch-grad-cam's map."""
    ref = _reference(arch)
    want = decode_maps(ref[f"{case}__maps"])
    layers = tuple(str(name) for name in ref[f"{case}__layers"])
    classes = ref[f"{case}__classes"]
    explicit = bool(ref[f"{case}__explicit"])
    targets = [camcore.ClassifierOutputTarget(int(k)) for k in classes] if explicit else None
    _, x = _model(arch)
    cam = _cam(arch, layers)
    got = cam(x, targets)
    top1 = cam.outputs[0].argmax(axis=1)

    assert got.shape == want.shape and got.dtype == np.float32
    err = float(np.abs(got - want).max())
    print(f"{arch} {case}: max |camcore - pytorch-grad-cam| = {err:.2e}")
    assert err <= ATOL, f"{arch} {case}: max |camcore - pytorch-grad-cam| = {err:.2e} > {ATOL}"
    if not explicit:
        np.testing.assert_array_equal(top1, classes, err_msg=f"{arch} {case}: top-1 classes")
    elif want.any():
        # The explicit classes are not the top-1 ones, and explaining the top-1 classes
        # instead gives other maps: matching the golden maps above shows camcore explained
        # the golden's explicit classes.
        assert (classes != top1).all(), f"{arch} {case}: explicit classes {classes} are the top-1"
        other = cam(x, None)
        assert float(np.abs(other - want).max()) > 100 * ATOL, f"{arch} {case}: the map ignores the class"


def test_vit_zero_gradient_map_is_zero() -> None:
    """The last ViT block reaches the logits through the class token only: all-zero map.

    pytorch-grad-cam's map is exactly zero there; camcore's must be too, not scaled noise.
    """
    ref = _reference("vit_ti_16")
    assert not decode_maps(ref["last_block_zero__maps"]).any()


@pytest.mark.torch
def test_torch_live_resnet18_top1() -> None:
    """With torch and pytorch-grad-cam present, regenerate one case live and compare."""
    pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    pytest.importorskip("pytorch_grad_cam")
    tool = load_tool("make_gradcam_golden")

    model, x = tool.build("resnet18")
    live, classes, _ = tool.run_gradcam(model, x, tool.CASES["resnet18"][0], None)
    ref = _reference("resnet18")
    np.testing.assert_array_equal(classes, ref["top1__classes"])
    np.testing.assert_allclose(live, decode_maps(ref["top1__maps"]), rtol=0, atol=ATOL)
    assert load_manifest("resnet18")["target_layer"] == str(ref["top1__layers"][0])
