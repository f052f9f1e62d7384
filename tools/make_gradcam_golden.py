"""Make the pytorch-grad-cam golden maps ``tests/golden/gradcam_<arch>.npz`` (needs torch).

For each architecture of ``tools/make_autograd_golden.py`` this script rebuilds the same
torchvision network with the same recipe weights (that tool's builders and
``apply_recipes``), feeds it the golden input (batch 2) and runs pytorch-grad-cam's
``GradCAM`` for a few cases: top-1 (``targets=None``), explicit per-image
``ClassifierOutputTarget`` classes and, for ResNet-18, two target layers at once. The
ViT cases use pytorch-grad-cam's documented ``reshape_transform`` (drop the class token,
tokens to the 4x4 grid, NHWC to NCHW).

Each case stores its whole maps (N, H, W) with ``tests/golden_models.encode_maps`` (24-bit
fixed point, error <= 3e-8, predictor + LZMA), the ONNX tensor names of its target layers
(each located by value in the exported graph, as the autograd tool does), the classes
explained and whether they were explicit. ``tests/api/test_parity_pytorch_grad_cam.py``
replays the cases with ``camcore.GradCAM`` on the recipe-rebuilt ONNX model, without torch.
The network is the autograd tool's (``build_model``: recipes, BatchNorm calibrated on the
recipe input) and the input is the golden one (the recipe plus its kink-clearing nudge).

Two pytorch-grad-cam behaviours are worked around, both outside the CAM method itself:

* its forward hook keeps ``output.detach()``, which shares storage with the module
  output; DenseNet's ``F.relu(features, inplace=True)`` after ``features.norm5`` then
  overwrites the saved activation with its ReLU, while the gradient stays that of the
  pre-ReLU tensor. A forward hook registered *after* pytorch-grad-cam's passes a clone
  downstream, so the saved tensor is the true ``norm5`` output (that of the ONNX
  ``BatchNormalization`` tensor). The tool prints how far the unpatched map is off.
* a targets list is ``zip``-ed with the batch, so one target for two images explains
  the first image only; every case passes one target per image.

For ``--methods`` (every method camcore shares with pytorch-grad-cam, on ResNet-18,
DenseNet-121, MobileNetV3-small and ViT-Ti/16) the AblationCAM cases use ablation layers
with the minimum taken once per ablation batch (``FixedValueAblationLayer`` and
``FixedValueAblationLayerVit``): the stock layers lower the value by a further 1e7 for each
earlier row, in place, wherever the layer has negative values (ViT's ``ln_1``, DenseNet's
``norm5``, MobileNetV3's hard-swish ``features.12``); on post-ReLU layers (ResNet-18's) the
value is 0 either way.

Usage::

    /work/xcenv/bin/python tools/make_gradcam_golden.py [--arch resnet18 ...] [--out DIR]
    /work/xcenv/bin/python tools/make_gradcam_golden.py --methods [resnet18 ...]
    /work/xcenv/bin/python tools/make_gradcam_golden.py --metrics
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytorch_grad_cam as pgc
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.golden_models import encode_maps, load_golden, load_manifest, save_npz  # noqa: E402


def _load_autograd_tool() -> ModuleType:
    """Import ``tools/make_autograd_golden.py`` (builders, recipes, tensor lookup) by path."""
    path = ROOT / "tools" / "make_autograd_golden.py"
    spec = importlib.util.spec_from_file_location("make_autograd_golden", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


mag = _load_autograd_tool()

GENERATOR = (
    f"tools/make_gradcam_golden.py: torch {torch.__version__}, "
    f"grad-cam {importlib.metadata.version('grad-cam')}, float32 CPU"
)
#: Smallest top-1 minus top-2 logit gap, relative to max|logit|, for a top-1 case: the
#: class chosen must not depend on float32 rounding.
MIN_TOP1_GAP = 1e-3


@dataclass(frozen=True)
class Case:
    """One pytorch-grad-cam call: target modules and per-image classes (None: top-1)."""

    name: str
    modules: tuple[str, ...]
    classes: tuple[int, ...] | None = None


def vit_reshape_transform(height: int, width: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """pytorch-grad-cam's documented ViT ``reshape_transform`` for an ``height x width`` grid.

    (N, 1 + h*w, C) tokens: drop the class token, reshape to (N, h, w, C), move C first.
    """

    def reshape_transform(tensor: torch.Tensor) -> torch.Tensor:
        result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)

    return reshape_transform


#: The explicit classes: image 0 and image 1 explain different classes.
CLASSES = (7, 281)
VIT_LN = "encoder.layers.encoder_layer_11.ln_1"

CASES: dict[str, list[Case]] = {
    "resnet18": [
        Case("top1", ("layer4",)),
        Case("classes", ("layer4",), CLASSES),
        Case("two_layers", ("layer3", "layer4")),
    ],
    "mobilenet_v2": [
        Case("top1", ("features.18",)),
        Case("classes", ("features.18",), CLASSES),
    ],
    "convnext_tiny": [
        Case("top1", ("features.7",)),
        Case("classes", ("features.7",), CLASSES),
    ],
    "densenet121": [
        Case("top1", ("features.norm5",)),
        Case("classes", ("features.norm5",), CLASSES),
    ],
    # The last encoder block's output reaches the logits through the class token only:
    # its patch-token gradients are exactly zero and so is the map (a degenerate case,
    # kept on purpose). The block's first LayerNorm, the usual ViT choice (timm's
    # ``blocks[-1].norm1`` in pytorch-grad-cam's examples), gives a real map.
    "vit_ti_16": [
        Case("top1", (VIT_LN,)),
        Case("classes", (VIT_LN,), CLASSES),
        Case("last_block_zero", ("encoder.layers.encoder_layer_11",)),
    ],
}


def build(name: str) -> tuple[nn.Module, np.ndarray]:
    """Return the recipe-weighted torch model of ``name`` and the golden input."""
    _, arrays, _ = load_golden(name)
    x = arrays["input"]
    model, _, _ = mag.build_model(name)
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).numpy()
    scale = float(np.abs(arrays["logits"]).max())
    err = float(np.abs(logits - arrays["logits"]).max()) / scale
    if err > 1e-4:
        raise RuntimeError(f"{name}: rebuilt torch model's logits are off by {err:.2e}")
    return model, x


def module_outputs(model: nn.Module, x: np.ndarray, paths: list[str]) -> dict[str, np.ndarray]:
    """Return the float32 output of each module in ``paths`` (cloned before in-place ops)."""
    captured: dict[str, np.ndarray] = {}

    def capture(path: str) -> Callable[[nn.Module, Any, torch.Tensor], None]:
        def hook(_m: nn.Module, _a: Any, out: torch.Tensor) -> None:
            captured[path] = out.detach().clone().numpy()

        return hook

    handles = [model.get_submodule(p).register_forward_hook(capture(p)) for p in paths]
    try:
        with torch.no_grad():
            model(torch.from_numpy(x))
    finally:
        for handle in handles:
            handle.remove()
    return captured


def onnx_names(name: str, model: nn.Module, x: np.ndarray, paths: list[str]) -> dict[str, str]:
    """Map each module path to the ONNX tensor of its output in the golden graph.

    The manifest's target module keeps the manifest's name (checked by value too); the
    others are found by value under their name scope, as the autograd tool does.
    """
    rebuilt, _, _ = load_golden(name)
    manifest = load_manifest(name)
    acts = module_outputs(model, x, paths)
    names = {p: mag.find_target_tensor(rebuilt, x, acts[p], p) for p in paths}
    target = manifest["target_module"]
    if target in names and names[target] != manifest["target_layer"]:
        raise RuntimeError(f"{name}: {target} found as {names[target]}, manifest says "
                           f"{manifest['target_layer']}")  # fmt: skip
    return names


def run_gradcam(
    model: nn.Module,
    x: np.ndarray,
    case: Case,
    reshape: Callable[[torch.Tensor], torch.Tensor] | None,
    clone_outputs: bool = True,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Run pytorch-grad-cam's GradCAM for ``case``: maps, classes explained, activations.

    With ``clone_outputs`` every target module passes a clone downstream (a hook
    registered after pytorch-grad-cam's), so in-place ops cannot alias the saved activation.
    """
    layers = [model.get_submodule(p) for p in case.modules]
    cam = GradCAM(model=model, target_layers=layers, reshape_transform=reshape)
    handles = [
        layer.register_forward_hook(lambda _m, _a, out: out.clone()) for layer in layers
    ] if clone_outputs else []  # fmt: skip
    try:
        targets = None
        if case.classes is not None:
            targets = [ClassifierOutputTarget(k) for k in case.classes]
        maps = cam(input_tensor=torch.from_numpy(x), targets=targets)
        logits = cam.outputs.detach().numpy()
        acts = [a.numpy().copy() for a in cam.activations_and_grads.activations]
    finally:
        for handle in handles:
            handle.remove()
        cam.activations_and_grads.release()
    if case.classes is None:
        top2 = np.sort(logits, axis=1)[:, -2:]
        gap = float((top2[:, 1] - top2[:, 0]).min()) / float(np.abs(logits).max())
        if gap < MIN_TOP1_GAP:
            raise RuntimeError(f"{case.name}: top-1 logit gap {gap:.2e} is too small")
        classes = logits.argmax(axis=1)
    else:
        classes = np.asarray(case.classes)
    return np.asarray(maps, dtype=np.float32), classes.astype(np.int64), acts


def make(name: str, out: Path) -> dict[str, Any]:
    """Run every case of ``name``; write ``gradcam_<name>.npz``; return a summary."""
    model, x = build(name)
    cases = CASES[name]
    paths = sorted({p for case in cases for p in case.modules})
    tensors = onnx_names(name, model, x, paths)
    _, golden, _ = load_golden(name)
    golden_module, golden_act = load_manifest(name)["target_module"], golden["activation"]
    arrays: dict[str, np.ndarray] = {
        "cases": np.asarray([c.name for c in cases]),
        "generator": np.asarray(GENERATOR),
    }
    summary: dict[str, Any] = {"arch": name}
    for case in cases:
        reshape = None
        if name.startswith("vit"):
            grid = x.shape[-1] // 16
            reshape = vit_reshape_transform(grid, grid)
        maps, classes, acts = run_gradcam(model, x, case, reshape)
        plain, _, _ = run_gradcam(model, x, case, reshape, clone_outputs=False)
        if case.modules == (golden_module,) and reshape is None:
            err = float(np.abs(acts[0] - golden_act).max() / np.abs(golden_act).max())
            if err > 1e-4:
                raise RuntimeError(f"{name} {case.name}: saved activation off by {err:.2e}")
        arrays[f"{case.name}__maps"] = encode_maps(maps)
        arrays[f"{case.name}__layers"] = np.asarray([tensors[p] for p in case.modules])
        arrays[f"{case.name}__classes"] = classes
        arrays[f"{case.name}__explicit"] = np.asarray(case.classes is not None)
        summary[case.name] = f"classes={classes.tolist()} max={maps.max():.3g}"
        alias = float(np.abs(plain - maps).max())
        if alias:
            summary[case.name] += f" unpatched_diff={alias:.3g}"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"gradcam_{name}.npz"
    save_npz(path, arrays)
    summary["kb"] = round(path.stat().st_size / 1024, 1)
    return summary


# ---------------------------------------------------------------------- every method
@dataclass(frozen=True)
class MethodCase:
    """One pytorch-grad-cam method call, stored as ``methods_<arch>.npz`` entries ``<name>__*``.

    ``method`` is the pytorch-grad-cam class name (camcore's too); ``target`` is None (top-1),
    "classes" (ClassifierOutputTarget per image) or "softmax" (ClassifierOutputSoftmaxTarget).
    """

    name: str
    method: str
    modules: tuple[str, ...]
    target: str | None = None
    aug_smooth: bool = False
    eigen_smooth: bool = False
    options: tuple[tuple[str, Any], ...] = ()


def _cases(layer: str, *, conv: bool, extra: tuple[MethodCase, ...] = ()) -> list[MethodCase]:
    """The common cases: every layer method top-1, target and smoothing variants, FEM's k;
    ``conv``: a CNN, adding SESS and FullGrad (pytorch-grad-cam applies the ViT
    ``reshape_transform`` to FullGrad's conv bias layers too, which fails)."""
    m = (layer,)
    cases = [MethodCase(k.lower(), k, m) for k in (
        "GradCAM", "HiResCAM", "GradCAMElementWise", "GradCAMPlusPlus", "XGradCAM", "LayerCAM", "EigenCAM",
        "EigenGradCAM", "KPCA_CAM", "FEM", "SegEigenCAM", "ShapleyCAM", "FinerCAM")]  # fmt: skip
    cases += [
        MethodCase("gradcam_softmax", "GradCAM", m, target="softmax"),
        MethodCase("gradcampp_classes", "GradCAMPlusPlus", m, target="classes"),
        MethodCase("gradcam_aug", "GradCAM", m, aug_smooth=True),
        MethodCase("gradcam_eigen", "GradCAM", m, eigen_smooth=True),
        MethodCase("layercam_eigen", "LayerCAM", m, eigen_smooth=True),
        MethodCase("fem_k1", "FEM", m, options=(("k", 1),)),
    ]
    if conv:
        cases += [MethodCase("sess", "SESS", m, options=(("num_scales", 3),)), MethodCase("fullgrad", "FullGrad", m)]
    return cases + list(extra)


METHOD_CASES: dict[str, list[MethodCase]] = {
    "resnet18": _cases(
        "layer4",
        conv=True,
        extra=(
            MethodCase("refinecam", "RefineCAM", ("layer3", "layer4")),
            MethodCase("fullgrad_eigen", "FullGrad", (), eigen_smooth=True),
            MethodCase("scorecam", "ScoreCAM", ("layer4",)),
            MethodCase("scorecam_classes", "ScoreCAM", ("layer4",), target="classes"),
            MethodCase("ablationcam", "AblationCAM", ("layer4",)),
            MethodCase("ablationcam_classes", "AblationCAM", ("layer4",), target="classes"),
            MethodCase("ablationcam_two_layers", "AblationCAM", ("layer3", "layer4")),
        ),
    ),
    "vit_ti_16": _cases(
        VIT_LN,
        conv=False,
        extra=(
            MethodCase("scorecam", "ScoreCAM", (VIT_LN,)),
            MethodCase("scorecam_classes", "ScoreCAM", (VIT_LN,), target="classes"),
            MethodCase("ablationcam", "AblationCAM", (VIT_LN,)),
            MethodCase("ablationcam_classes", "AblationCAM", (VIT_LN,), target="classes"),
        ),
    ),
    # ScoreCAM runs the whole network once per channel: on DenseNet it explains
    # ``transition1`` (128 channels) rather than ``norm5`` (1024, 35 s per case in camcore).
    "densenet121": _cases(
        "features.norm5",
        conv=True,
        extra=(
            MethodCase("refinecam", "RefineCAM", ("features.denseblock3", "features.norm5")),
            MethodCase("scorecam", "ScoreCAM", ("features.transition1",)),
            MethodCase("scorecam_classes", "ScoreCAM", ("features.transition1",), target="classes"),
            MethodCase("ablationcam", "AblationCAM", ("features.norm5",)),
            MethodCase("ablationcam_classes", "AblationCAM", ("features.norm5",), target="classes"),
        ),
    ),
    # ShapleyCAM goes through hard-swish curvature here.
    "mobilenet_v3_small": _cases(
        "features.12",
        conv=True,
        extra=(
            MethodCase("shapleycam_classes", "ShapleyCAM", ("features.12",), target="classes"),
            MethodCase("refinecam", "RefineCAM", ("features.8", "features.12")),
            MethodCase("scorecam", "ScoreCAM", ("features.12",)),
            MethodCase("scorecam_classes", "ScoreCAM", ("features.12",), target="classes"),
            MethodCase("ablationcam", "AblationCAM", ("features.12",)),
            MethodCase("ablationcam_classes", "AblationCAM", ("features.12",), target="classes"),
        ),
    ),
}


def _targets(kind: str | None, classes: tuple[int, ...]) -> list[Any] | None:
    if kind is None:
        return None
    cls = ClassifierOutputSoftmaxTarget if kind == "softmax" else ClassifierOutputTarget
    return [cls(k) for k in classes]


class ReshapedShapleyCAM(pgc.ShapleyCAM):
    """pytorch-grad-cam 1.5.7's ShapleyCAM with a ``reshape_transform`` fails: it keeps the graph
    (``detach=False``), so the saved activations are not reshaped, and ``get_cam_image`` multiplies
    the reshaped weights with the token tensor. This applies the transform there, as intended."""

    def get_cam_image(self, input_tensor, target_layer, targets, activations, grads, eigen_smooth):  # type: ignore[no-untyped-def]
        weights = self.get_cam_weights(input_tensor, target_layer, targets, activations, grads)
        acts = self.activations_and_grads.reshape_transform(activations).detach().cpu().numpy()
        weighted = weights[:, :, None, None] * acts
        return pgc.utils.svd_on_activations.get_2d_projection(weighted) if eigen_smooth else weighted.sum(axis=1)


class FixedValueAblationLayer(pgc.ablation_layer.AblationLayer):
    """pytorch-grad-cam 1.5.7's ``AblationLayer`` takes ``torch.min(output)`` again for each row
    of an ablation batch after the earlier rows were set in place, so row r gets
    ``min - (r + 1)·1e7`` when the minimum is not 0. This takes the minimum once per batch, so
    every ablated channel gets ``min - 1e7`` (0 if the minimum is 0), as camcore."""

    def __call__(self, x):  # type: ignore[no-untyped-def]
        output = self.activations
        lo = torch.min(output)
        value = 0.0 if lo == 0 else lo - 1e7
        for i in range(output.size(0)):
            output[i, self.indices[i], :] = value
        return output


class FixedValueAblationLayerVit(pgc.ablation_layer.AblationLayerVit):
    """pytorch-grad-cam 1.5.7's ``AblationLayerVit`` takes ``torch.min(output)`` again for each
    row of an ablation batch after the earlier rows were set in place, so row r gets
    ``min - (r + 1)·1e7`` when the minimum is not 0. This takes the minimum once per batch, so
    every ablated channel gets ``min - 1e7`` (0 if the minimum is 0), as camcore."""

    def __call__(self, x):  # type: ignore[no-untyped-def]
        output = self.activations.transpose(1, self.activations.dim() - 1)
        lo = torch.min(output)
        value = 0.0 if lo == 0 else lo - 1e7
        for i in range(output.size(0)):
            output[i, self.indices[i], :] = value
        return output.transpose(output.dim() - 1, 1)


def run_method(
    model: nn.Module, x: np.ndarray, case: MethodCase, reshape: Callable[[torch.Tensor], torch.Tensor] | None
) -> np.ndarray:
    """pytorch-grad-cam's ``case.method`` on ``x``; outputs of hooked modules are cloned downstream."""
    cls = getattr(pgc, case.method)
    if case.method == "ShapleyCAM" and reshape is not None:
        cls = ReshapedShapleyCAM
    layers = [model.get_submodule(p) for p in case.modules]
    options = dict(case.options)
    if case.method == "AblationCAM":
        options["ablation_layer"] = FixedValueAblationLayerVit() if reshape is not None else FixedValueAblationLayer()
    cam = cls(model=model, target_layers=layers, reshape_transform=reshape, **options)
    hooked = layers
    if case.method == "FullGrad":
        hooked = list(cam.target_layers)
    handles = [layer.register_forward_hook(lambda _m, _a, out: out.clone()) for layer in hooked]
    kwargs: dict[str, Any] = {"eigen_smooth": case.eigen_smooth}
    if case.aug_smooth:
        kwargs["aug_smooth"] = True
    # the fused CPU attention kernels have no double backward (ShapleyCAM): use the math one
    from torch.nn.attention import SDPBackend, sdpa_kernel

    try:
        with sdpa_kernel(SDPBackend.MATH):
            maps = cam(input_tensor=torch.from_numpy(x), targets=_targets(case.target, CLASSES), **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return np.asarray(maps, dtype=np.float32)


def run_guided(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """pytorch-grad-cam's GuidedBackpropReLUModel, image by image (it does only the first): (N, H, W, C)."""
    gb = pgc.GuidedBackpropReLUModel(model)
    return np.stack([gb(torch.from_numpy(x[i : i + 1]), target_category=None) for i in range(len(x))])


def make_methods(name: str, out: Path) -> dict[str, Any]:
    """Every method case of ``name``; writes ``methods_<name>.npz``: per case its whole maps
    (``encode_maps``, entry ``<case>``), ``guided`` (ResNet-18's guided backprop, channels
    first) and ``meta``, one JSON string: generator, explicit classes, and per case the
    method, its target layers (ONNX names), target kind, smoothing flags and options."""
    model, x = build(name)
    cases = METHOD_CASES[name]
    paths = sorted({p for case in cases for p in case.modules})
    tensors = onnx_names(name, model, x, paths)
    reshape = None
    if name.startswith("vit"):
        grid = x.shape[-1] // 16
        reshape = vit_reshape_transform(grid, grid)
    meta: dict[str, Any] = {"generator": GENERATOR, "classes": list(CLASSES), "cases": {}}
    arrays: dict[str, np.ndarray] = {}
    for case in cases:
        torch.manual_seed(0)
        t0 = time.perf_counter()
        maps = run_method(model, x, case, reshape)
        print(f"  {name} {case.name}: {case.method} {case.modules} max {maps.max():.3g}, "
              f"{time.perf_counter() - t0:.1f}s", flush=True)  # fmt: skip
        arrays[case.name] = encode_maps(maps)
        meta["cases"][case.name] = {
            "method": case.method, "layers": [tensors[p] for p in case.modules], "target": case.target or "",
            "aug_smooth": case.aug_smooth, "eigen_smooth": case.eigen_smooth, "options": dict(case.options),
        }  # fmt: skip
    if name == "resnet18":  # (N, H, W, C), stored channels first: the predictor runs over (H, W)
        arrays["guided"] = encode_maps(run_guided(model, x).transpose(0, 3, 1, 2))
    arrays["meta"] = np.asarray(json.dumps(meta, sort_keys=True))
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"methods_{name}.npz"
    save_npz(path, arrays)
    return {"arch": name, "cases": len(cases), "kb": round(path.stat().st_size / 1024, 1)}


# ---------------------------------------------------------------------- metrics
#: the ROAD percentiles of the single-percentile cases
ROAD_SINGLE = (("morf80", "ROADMostRelevantFirst", 80), ("lerf20", "ROADLeastRelevantFirst", 20),
               ("morf_auto", "ROADMostRelevantFirst", "auto"))  # fmt: skip


def metric_cams(n: int, size: int) -> np.ndarray:
    """(n, size, size) uint8 maps: a blob per image, off-centre, plus a ramp (few ties but
    exactly reproducible: the metrics see ``q / 255`` in float32)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    cams = []
    for i in range(n):
        cy, cx = size * (0.3 + 0.35 * i), size * (0.65 - 0.3 * i)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (size / 6) ** 2))
        cams.append(np.round(255 * (0.8 * blob + 0.2 * xx / size)).astype(np.uint8))
    return np.stack(cams)


def make_metrics(name: str, out: Path) -> dict[str, Any]:
    """pytorch-grad-cam's metrics on ``name`` with fixed maps; writes ``metrics_<name>.npz``.

    The ROAD imputer's noise is set to 0 (it draws torch noise camcore cannot replay).
    """
    import pytorch_grad_cam.metrics.road as road
    from pytorch_grad_cam.metrics.arcc import ARCC
    from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange as ConfidenceChange
    from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence, IncreaseInConfidence

    road.NoisyLinearImputer.__init__.__defaults__ = (0.0, road.neighbors_weights)
    model, x = build(name)
    q = metric_cams(len(x), x.shape[-1])
    cams = q.astype(np.float32) / np.float32(255)
    xt = torch.from_numpy(x)
    targets = [ClassifierOutputTarget(k) for k in CLASSES]
    arrays: dict[str, np.ndarray] = {"generator": np.asarray(GENERATOR), "cams_u8": q, "classes": np.asarray(CLASSES)}
    for key, cls in (("confidence_change", ConfidenceChange), ("drop", DropInConfidence),
                     ("increase", IncreaseInConfidence)):  # fmt: skip
        arrays[key] = np.asarray(cls()(xt, cams, targets, model), np.float32)
    for key, cls_name, pct in ROAD_SINGLE:
        arrays[key] = np.asarray(getattr(road, cls_name)(pct)(xt, cams, targets, model), np.float32)
    arrays["morf_avg"] = road.ROADMostRelevantFirstAverage([20, 50, 80])(xt, cams, targets, model)
    arrays["lerf_avg"] = road.ROADLeastRelevantFirstAverage([20, 50, 80])(xt, cams, targets, model)
    arrays["combined"] = road.ROADCombined([30, 70])(xt, cams, targets, model)
    # ARCC takes the harmonic mean with ROAD clipped to [0, 1]: with the maps above ROAD is
    # negative and ARCC a constant 3e-8, so it gets maps for which ROAD is positive on this
    # random-weights network, the inverted Grad-CAM maps (stored as uint8).
    gradcam = GradCAM(model=model, target_layers=[model.layer4])
    arcc_q = 255 - np.round(255 * gradcam(input_tensor=xt, targets=targets)).astype(np.uint8)
    gradcam.activations_and_grads.release()
    arcc_cams = arcc_q.astype(np.float32) / np.float32(255)
    arrays["arcc_cams_u8"] = arcc_q
    gradcam = GradCAM(model=model, target_layers=[model.layer4])
    arrays["arcc"] = np.asarray(ARCC(gradcam, road_percentiles=[20, 80])(xt, arcc_cams, targets, model), np.float32)
    gradcam.activations_and_grads.release()
    if not (arrays["arcc"] > 1e-3).all():
        raise RuntimeError(f"ARCC {arrays['arcc']} is degenerate (ROAD clipped to 0)")
    arrays["arcc_layers"] = np.asarray([onnx_names(name, model, x, ["layer4"])["layer4"]])
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"metrics_{name}.npz"
    save_npz(path, arrays)
    return {"arch": name, "kb": round(path.stat().st_size / 1024, 1)}


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, make the requested architectures and print a summary line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="*", choices=sorted(CASES), default=sorted(CASES))
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "golden")
    parser.add_argument("--methods", nargs="*", choices=sorted(METHOD_CASES), default=None,
                        help="make methods_<arch>.npz (every method) for these architectures instead")  # fmt: skip
    parser.add_argument("--metrics", action="store_true", help="make metrics_resnet18.npz (pytorch-grad-cam metrics)")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    print(GENERATOR)
    print(f"numpy {np.__version__}; explicit classes {CLASSES}; min top-1 gap {MIN_TOP1_GAP:g}; "
          f"{torch.get_num_threads()} threads; "
          + ("metrics: resnet18" if args.metrics else
             f"methods: {args.methods or sorted(METHOD_CASES)}" if args.methods is not None else
             f"gradcam: {args.arch}") + f" -> {args.out}")  # fmt: skip
    if args.metrics:
        print(make_metrics("resnet18", args.out))
        return 0
    if args.methods is not None:
        for name in args.methods or sorted(METHOD_CASES):
            t0 = time.perf_counter()
            info = make_methods(name, args.out)
            print(", ".join(f"{k}={v}" for k, v in info.items()) + f", {time.perf_counter() - t0:.1f}s", flush=True)
        return 0
    for name in args.arch:
        t0 = time.perf_counter()
        info = make(name, args.out)
        print(", ".join(f"{k}={v}" for k, v in info.items())
              + f", {time.perf_counter() - t0:.1f}s", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
