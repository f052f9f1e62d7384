"""Every camcore method that pytorch-grad-cam 1.5.7 has, against its maps on real networks.

``tools/make_gradcam_golden.py --methods`` ran pytorch-grad-cam (float32 torch, CPU) on the
golden torchvision networks (recipe weights, the kink-free golden input, batch 2):
ResNet-18 (``layer4``), DenseNet-121 (``features.norm5``; ScoreCAM on ``transition1``),
MobileNetV3-small (``features.12``, hard-swish: ShapleyCAM through its curvature) and
ViT-Ti/16 (the last block's ``ln_1`` with the documented ``reshape_transform``; camcore infers
the grid). Every method the two libraries share has a case on each CNN, with top-1,
explicit or softmax targets, ``aug_smooth`` or ``eigen_smooth``. The whole (N, H, W) maps
are stored (``tests/golden_models.encode_maps``: 24-bit fixed point, error <= 3e-8, 300x
below the tightest tolerance) and compared whole. Guided backprop is compared on the input
gradients. Nothing here needs torch.

Tolerances: max |camcore - pytorch-grad-cam| on [0, 1] maps. Both sides run float32 (torch
vs onnxruntime kernels) and min-max scale the maps, so most cases differ by float32 rounding
of the forward pass, the gradients and the channel sums: about 1e-6, and ``ATOL`` is ten
times the largest of those. Cases whose arithmetic amplifies the rounding have their own
bound in ``TOLERANCES``, about ten times the error observed, with the reason. The observed
errors are printed by ``python -m pytest tests/api/test_parity_methods.py -q -s``.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper

import camcore
from tests.golden_models import GOLDEN_DIR, decode_maps, load_golden

#: Largest |camcore - pytorch-grad-cam| on [0, 1] maps for the cases not in ``TOLERANCES``:
#: float32 rounding, observed at 4.6e-7 to 1.9e-6 (66 of the 104 cases).
ATOL = 2e-5
#: Why some cases sit above float32 rounding (each is about ten times its observed error).
_EIGEN = (
    "principal axis of the 3x3 grid's centred (9, C) matrix, whose two largest singular values "
    "are close (sigma2/sigma1 = 0.996 for ResNet-18's G*A, 0.96 for MobileNetV3's A): the "
    "projection amplifies rounding by about 1 / (1 - sigma2/sigma1)"
)
_KPCA = "first eigenvector of the centred 9x9 kernel matrix: close top eigenvalues, as for _EIGEN"
_ABLATION = (
    "each channel weight (s - s_c) / s is a difference of two nearly equal float32 scores "
    "(one of 192 to 1024 channels ablated)"
)
_XGRAD = (
    "XGradCAM divides by each channel's sum over the grid, which cancels on signed activations "
    "(to 4e-3 of its absolute sum on DenseNet's norm5, 4e-5 on ViT's ln_1 tokens)"
)
_SOFTMAX = (
    "softmax target on near-uniform probabilities (logits std 0.2 over 1000 classes): the "
    "channel weights are differences of nearly equal sums"
)
_SESS = "SESS pastes the maps of every patch and scale (each at float32 rounding), blurs and rescales"
_MOBILENET = (
    "MobileNetV3-small's hard-swish forward carries twice the float32 error of the others "
    "(its logits and target activation are 1.2e-6 and 1.9e-6 off float64 in the autograd "
    "cross-check, ResNet-18's 5e-7)"
)
_VIT = (
    "ViT-Ti/16's twelve attention blocks (logits 1.3e-6 off float64 in the autograd cross-check); "
    "HiResCAM and ScoreCAM keep per-token values, unaveraged"
)
#: (arch, case) -> (tolerance, why the error observed there is above float32 rounding).
TOLERANCES: dict[tuple[str, str], tuple[float, str]] = {
    ("densenet121", "ablationcam"): (7e-05, _ABLATION),  # observed 6.6e-06
    ("densenet121", "ablationcam_classes"): (9e-05, _ABLATION),  # observed 8.8e-06
    ("densenet121", "kpca_cam"): (9e-05, _KPCA),  # observed 8.3e-06
    ("densenet121", "xgradcam"): (6e-04, _XGRAD),  # observed 5.6e-05
    ("mobilenet_v3_small", "eigencam"): (5e-05, _EIGEN),  # observed 4.8e-06
    ("mobilenet_v3_small", "eigengradcam"): (3e-05, _EIGEN),  # observed 2.3e-06
    ("mobilenet_v3_small", "finercam"): (3e-05, _MOBILENET),  # observed 2.1e-06
    ("mobilenet_v3_small", "gradcam"): (3e-05, _MOBILENET),  # observed 2.2e-06
    ("mobilenet_v3_small", "gradcam_eigen"): (3e-05, _EIGEN),  # observed 2.3e-06
    ("mobilenet_v3_small", "gradcam_softmax"): (2e-04, _SOFTMAX),  # observed 1.2e-05
    ("mobilenet_v3_small", "gradcamelementwise"): (4e-05, _MOBILENET),  # observed 3.3e-06
    ("mobilenet_v3_small", "gradcamplusplus"): (3e-05, _MOBILENET),  # observed 2.3e-06
    ("mobilenet_v3_small", "hirescam"): (3e-05, _MOBILENET),  # observed 2.2e-06
    ("mobilenet_v3_small", "kpca_cam"): (5e-05, _KPCA),  # observed 4.7e-06
    ("mobilenet_v3_small", "layercam"): (3e-05, _MOBILENET),  # observed 3.0e-06
    ("mobilenet_v3_small", "layercam_eigen"): (7e-05, _EIGEN),  # observed 6.6e-06
    ("mobilenet_v3_small", "refinecam"): (3e-05, _MOBILENET),  # observed 2.1e-06
    ("mobilenet_v3_small", "segeigencam"): (3e-05, _EIGEN),  # observed 2.3e-06
    ("mobilenet_v3_small", "sess"): (6e-05, _SESS),  # observed 5.0e-06
    ("mobilenet_v3_small", "xgradcam"): (3e-05, _MOBILENET),  # observed 2.5e-06
    ("resnet18", "ablationcam"): (6e-05, _ABLATION),  # observed 5.2e-06
    ("resnet18", "ablationcam_classes"): (7e-05, _ABLATION),  # observed 6.8e-06
    ("resnet18", "ablationcam_two_layers"): (3e-05, _ABLATION),  # observed 2.9e-06
    ("resnet18", "eigengradcam"): (7e-05, _EIGEN),  # observed 6.9e-06
    ("resnet18", "gradcam_eigen"): (7e-05, _EIGEN),  # observed 6.9e-06
    ("resnet18", "segeigencam"): (7e-05, _EIGEN),  # observed 6.9e-06
    ("resnet18", "sess"): (3e-05, _SESS),  # observed 2.2e-06
    ("vit_ti_16", "ablationcam"): (3e-05, _ABLATION),  # observed 2.3e-06
    ("vit_ti_16", "finercam"): (3e-05, _VIT),  # observed 2.0e-06
    ("vit_ti_16", "gradcamelementwise"): (3e-05, _VIT),  # observed 2.3e-06
    ("vit_ti_16", "hirescam"): (6e-05, _VIT),  # observed 5.4e-06
    ("vit_ti_16", "scorecam"): (4e-05, _VIT),  # observed 3.9e-06
    ("vit_ti_16", "shapleycam"): (3e-05, _VIT),  # observed 2.2e-06
    ("vit_ti_16", "xgradcam"): (1e-03, _XGRAD),  # observed 1.0e-04
}
#: Largest max |camcore - pytorch-grad-cam| / max |pytorch-grad-cam| of guided backprop (whole input gradients).
GUIDED_RTOL = 1.5e-5  # observed 1.5e-6
#: Total size of the method golden files.
MAX_BYTES = 720 * 1024  # 674 KB: four networks, 104 cases, whole maps
FILES = sorted(GOLDEN_DIR.glob("methods_*.npz"))


def _arch(path) -> str:
    return path.stem.removeprefix("methods_")


@functools.cache
def _reference(arch: str) -> dict[str, np.ndarray]:
    """The stored arrays of ``methods_<arch>.npz``: one encoded map array per case, ``meta``."""
    with np.load(GOLDEN_DIR / f"methods_{arch}.npz") as npz:
        return {k: npz[k] for k in npz.files}


@functools.cache
def _meta(arch: str) -> dict[str, Any]:
    """Generator, explicit classes and per case: method, layers, target, smoothing, options."""
    return json.loads(str(_reference(arch)["meta"]))


@functools.cache
def _model(arch: str):
    model, arrays, _ = load_golden(arch)
    return model, arrays["input"]


@functools.cache
def _engine(arch: str) -> camcore.Engine:
    """One engine per network: the cases' compiled sessions are mostly the same."""
    model, _ = _model(arch)
    return camcore.Engine(model, threads=2)


def _cases() -> list[tuple[str, str]]:
    return [(_arch(p), c) for p in FILES for c in _meta(_arch(p))["cases"]]


def test_golden_methods_present_and_small() -> None:
    assert {_arch(p) for p in FILES} >= {"resnet18", "vit_ti_16", "densenet121", "mobilenet_v3_small"}
    total = sum(p.stat().st_size for p in FILES)
    assert total < MAX_BYTES, f"method golden files hold {total / 1024:.0f} KB"


def test_tolerances_name_real_cases() -> None:
    """Every special tolerance belongs to a stored case and is looser than the default."""
    cases = set(_cases())
    for key, (tol, why) in TOLERANCES.items():
        assert key in cases, f"tolerance for {key}, which has no golden case"
        assert tol > ATOL and why, key


def test_every_shared_method_has_a_golden_case() -> None:
    """Every deterministic registered method that pytorch-grad-cam has is checked, on every
    CNN golden network (the ViT lacks FullGrad, SESS and RefineCAM)."""
    # torchcam / captum / random
    not_in_pgc = {"CAM", "SmoothGradCAMpp", "SSCAM", "ISCAM", "GuidedGradCAM", "RandomCAM"}
    shared = {m.name for m in camcore.METHODS.values()} - not_in_pgc
    for arch in ("resnet18", "densenet121", "mobilenet_v3_small"):
        covered = {case["method"] for case in _meta(arch)["cases"].values()}
        missing = shared - covered
        assert not missing, f"no pytorch-grad-cam golden case for {sorted(missing)} on {arch}"


@pytest.mark.parametrize(("arch", "case"), _cases())
def test_method_matches_pytorch_grad_cam(arch: str, case: str) -> None:
    meta = _meta(arch)
    spec = meta["cases"][case]
    _, x = _model(arch)
    cam = getattr(camcore, spec["method"])(_engine(arch), spec["layers"] or None, **spec["options"])
    targets = None
    if spec["target"]:
        cls = camcore.ClassifierOutputSoftmaxTarget if spec["target"] == "softmax" else camcore.ClassifierOutputTarget
        targets = [cls(int(k)) for k in meta["classes"]]
    got = cam(x, targets, aug_smooth=spec["aug_smooth"], eigen_smooth=spec["eigen_smooth"])
    want = decode_maps(_reference(arch)[case])
    assert got.shape == want.shape == (x.shape[0], *x.shape[2:])
    err = float(np.abs(got - want).max())
    tol = TOLERANCES.get((arch, case), (ATOL, ""))[0]
    print(f"{arch} {case}: max |camcore - pytorch-grad-cam| = {err:.2e} (tolerance {tol:.0e})")
    assert err <= tol, f"{arch} {case}: max |camcore - pytorch-grad-cam| = {err:.2e} > {tol:.0e}"


def test_guided_backprop_matches_pytorch_grad_cam() -> None:
    ref = _reference("resnet18")
    model, x = _model("resnet18")
    guided = camcore.GuidedBackpropReLUModel(model, threads=2)
    gb = guided(x)
    assert gb.shape == (x.shape[0], x.shape[2], x.shape[3], x.shape[1])
    want = decode_maps(ref["guided"]).transpose(0, 2, 3, 1)  # stored channels first
    err = float(np.abs(gb - want).max() / np.abs(want).max())
    print(f"resnet18 guided backprop: max relative difference {err:.2e}")
    assert err <= GUIDED_RTOL
    single = guided(x[:1])  # one image: (H, W, C), as pytorch-grad-cam
    np.testing.assert_allclose(single, gb[0], rtol=1e-5, atol=1e-6 * float(np.abs(gb).max()))


def _biases_through_identity(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every BatchNormalization's bias fed through an Identity node, as the
    TorchScript exporter leaves initializers it stored once for several equal ones (e.g.
    every BatchNorm bias of one width at its init value 0). The values do not change."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = []
    for node in out.graph.node:
        if node.op_type == "BatchNormalization":
            fed = f"{node.input[2]}__shared"
            nodes.append(helper.make_node("Identity", [node.input[2]], [fed]))
            node.input[2] = fed
        nodes.append(node)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def test_fullgrad_takes_bias_terms_fed_through_identity() -> None:
    """FullGrad finds every BatchNorm bias term also where the exporter shared the initializer and
    feeds it through an Identity (it dropped them: 0.14 off pytorch-grad-cam on such a DenseNet-121)."""
    model, x = _model("densenet121")
    cam = camcore.FullGrad(_biases_through_identity(model), None, threads=2)
    err = float(np.abs(cam(x) - decode_maps(_reference("densenet121")["fullgrad"])).max())
    assert err <= ATOL, f"densenet121 FullGrad with Identity-fed biases: {err:.2e}"
