"""Make the PyTorch-autograd golden data of ``tests/golden/`` (needs torch + torchvision).

For each architecture this script

1. builds the real torchvision network (``weights=None``, ``eval()``) and replaces every
   parameter and buffer with a deterministic *recipe* tensor (see ``tests/golden_models.py``):
   He/LeCun-scaled weights, norm scales near 1, small biases, and BatchNorm running
   statistics calibrated in one forward pass of the recipe input so that activations stay O(1);
2. makes the golden input *kink-free*: the recipe input, nudged until every switch of the
   network (each input of a ReLU, ReLU6/Hardtanh (ONNX ``Clip``), Hardswish, Hardsigmoid,
   and each max-pool window's choice) is at least ``KINK_MARGIN`` of its tensor's maximum
   away from its kink (0, 6, +-3; the gap between a window's two largest values), measured
   in float64. PyTorch's float32 forward moves these values by at most 1.7e-6 of the maximum
   on these networks (onnxruntime's alike), so no float32 run flips a switch and every
   gradient is a smooth function of the rounding. A nudge is the least-norm input change
   that pushes the switches found too close (and holds those pushed before) to
   ``KINK_TARGET`` in the linearised network, quantised to multiples of ``NUDGE_QUANTUM``;
   it is stored as int16 (``input_nudge``). A switch no input moves is reported, not nudged;
   smooth networks (EfficientNet-B0, ConvNeXt-T, ViT-Ti/16) have none to clear;
3. exports it with the TorchScript exporter (opset 17, no constant folding, so BatchNorm is
   not fused and every initializer keeps its ``state_dict`` name), checks that each
   initializer equals its recipe bit for bit, strips it from the file and records the
   recipe in ``<arch>.json``; the stripped graph is ``<arch>.onnx`` (tens of KB);
4. computes, in float64 PyTorch autograd, the logits and, for three targets, the activation
   and its gradient of ``sum(seed * logits)`` for a one-hot and a random seed: the last-stage
   (CAM) layer, stored in full; a mid-network layer and the model input, stored as
   ``sample_flat`` samples with the random seed only; these go to ``<arch>.npz`` as float32.
   The ONNX tensor of each module output is located by value. The manifest records the
   switch margins reached and, per stored array, how far PyTorch's float32 autograd is
   from the float64 reference (``torch_float32_error``, relative to the array's maximum);
5. rebuilds the model from the recipe with ``tests/golden_models.py`` (numpy only), runs it in
   onnxruntime and checks logits and activation against the reference before writing.

Usage::

    /work/xcenv/bin/python tools/make_autograd_golden.py [--arch resnet18 ...] [--out DIR]
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import math
import sys
import time
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torchvision
from onnx import numpy_helper
from torch import nn
from torch.nn import functional as F  # noqa: N812  (the usual name)
from torch.overrides import TorchFunctionMode
from torchvision.models.vision_transformer import VisionTransformer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.golden_models import (  # noqa: E402
    NUDGE_QUANTUM,
    apply_nudge,
    rebuild_model,
    recipe_from_spec,
    recipe_values,
    sample_flat,
    save_npz,
)

BATCH = 2
ONEHOT_CLASS = 7
OPSET = 17
#: Stored initializers that are not recipes (shape constants) must stay below this size.
MAX_KEPT_BYTES = 4096
#: Elements per sample kept of the deep targets' arrays (activation, gradient).
DEEP_SAMPLE = 2048
#: Smallest distance of a switch input to its kink, relative to the max |value| of its tensor.
#: A float32 forward pass moves these values by at most ~1.7e-6 of it (measured in PyTorch).
KINK_MARGIN = 2e-5
#: Where a nudge puts a switch found closer than ``KINK_MARGIN`` (same units).
KINK_TARGET = 4e-5
#: Constrained switches closer than ``HOLD * KINK_TARGET`` are pushed or held in each round.
HOLD = 2.0
#: Tikhonov term of the least-norm nudge, relative to the mean squared row norm.
NUDGE_RIDGE = 1e-6
#: Rounds of nudging before giving up.
MAX_NUDGE_ROUNDS = 40


@dataclass(frozen=True)
class Arch:
    """One golden architecture: how to build it and which module outputs are targets.

    ``target_module`` is the last-stage (CAM) layer, stored in full; ``mid_module`` is a
    mid-network layer whose gradient flows back through many blocks, stored sampled.
    """

    build: Callable[[], nn.Module]
    image_size: int
    target_module: str
    mid_module: str


def _vgg11_bn() -> nn.Module:
    """VGG-11-BN with its real feature extractor and a narrower, pooled classifier head.

    The 25088-4096-4096 head would need 120 M weights; the head keeps its structure
    (Linear-ReLU-Dropout twice, then Linear) at width 512 after a global average pool.
    """
    model = torchvision.models.vgg11_bn(weights=None)
    model.avgpool = nn.AdaptiveAvgPool2d((1, 1))
    model.classifier = nn.Sequential(
        nn.Linear(512, 512), nn.ReLU(True), nn.Dropout(),
        nn.Linear(512, 512), nn.ReLU(True), nn.Dropout(),
        nn.Linear(512, 1000),
    )  # fmt: skip
    return model


def _vit_ti_16() -> nn.Module:
    """ViT-Ti/16 (12 layers, 3 heads, width 192) on 64x64 images: a 4x4 patch grid."""
    return VisionTransformer(image_size=64, patch_size=16, num_layers=12, num_heads=3, hidden_dim=192, mlp_dim=768)


ARCHS: dict[str, Arch] = {
    "resnet18": Arch(lambda: torchvision.models.resnet18(weights=None), 96, "layer4", "layer2"),
    "vgg11_bn": Arch(_vgg11_bn, 96, "features.27", "features.13"),
    "mobilenet_v2": Arch(lambda: torchvision.models.mobilenet_v2(weights=None), 96, "features.18", "features.10"),
    "mobilenet_v3_small": Arch(
        lambda: torchvision.models.mobilenet_v3_small(weights=None), 96, "features.12", "features.6"
    ),
    "densenet121": Arch(
        lambda: torchvision.models.densenet121(weights=None),
        96,
        "features.norm5",
        "features.transition2",
    ),
    "efficientnet_b0": Arch(lambda: torchvision.models.efficientnet_b0(weights=None), 96, "features.8", "features.5"),
    "convnext_tiny": Arch(lambda: torchvision.models.convnext_tiny(weights=None), 96, "features.7", "features.3"),
    "vit_ti_16": Arch(_vit_ti_16, 64, "encoder.layers.encoder_layer_11", "encoder.layers.encoder_layer_5"),
}


def _seed(name: str) -> int:
    """Return the recipe seed of a tensor: ``crc32`` of its name."""
    return zlib.crc32(name.encode())


def _spec(name: str, shape: tuple[int, ...], scale: float, offset: float = 0.0) -> dict[str, Any]:
    """Return a recipe spec (JSON-ready) for the tensor ``name``."""
    return {
        "source": name,
        "shape": [int(d) for d in shape],
        "seed": _seed(name),
        "scale": float(scale),
        "offset": float(offset),
    }


def _param_spec(name: str, shape: tuple[int, ...], module: nn.Module) -> dict[str, Any]:
    """Return the recipe of a parameter or non-BatchNorm-statistics buffer."""
    leaf = name.rsplit(".", 1)[-1]
    if isinstance(module, (nn.BatchNorm2d, nn.LayerNorm)):
        return _spec(name, shape, 0.1, 1.0) if leaf == "weight" else _spec(name, shape, 0.05)
    if leaf.endswith("bias"):
        return _spec(name, shape, 0.05)
    if leaf in ("class_token", "pos_embedding"):
        return _spec(name, shape, 0.5)
    if leaf == "layer_scale":  # ConvNeXt residual branch scale, (C, 1, 1)
        return _spec(name, shape, 0.05, 0.3)
    if leaf.endswith("weight") and len(shape) >= 2:
        fan_in = math.prod(shape[1:])
        gain = math.sqrt(2.0) if isinstance(module, nn.Conv2d) else 1.0
        return _spec(name, shape, gain / math.sqrt(fan_in))
    raise ValueError(f"no recipe rule for tensor {name!r} of shape {shape} in {type(module)}")


def _owner(model: nn.Module, name: str) -> nn.Module:
    """Return the module that owns the parameter or buffer ``name``."""
    path = name.rsplit(".", 1)[0] if "." in name else ""
    return model.get_submodule(path)


def _assign(tensor: torch.Tensor, spec: dict[str, Any]) -> None:
    """Overwrite ``tensor`` in place with its recipe values."""
    with torch.no_grad():
        tensor.copy_(torch.from_numpy(recipe_from_spec(spec)))


def apply_recipes(model: nn.Module, x: torch.Tensor) -> dict[str, dict[str, Any]]:
    """Give every float parameter and buffer of ``model`` its recipe; return the specs.

    BatchNorm running statistics are calibrated: a forward pre-hook measures the mean ``m``
    and variance ``v`` of each BatchNorm input (the layers before it already set) and sets
    ``running_mean = recipe(offset=m, scale=0.1 sqrt(v))`` and
    ``running_var = recipe(offset=v, scale=0.1 v)``. The measured scalars are part of the
    recorded recipe, so the values stay reproducible without torch.
    """
    specs: dict[str, dict[str, Any]] = {}
    state = model.state_dict(keep_vars=True)
    for name, tensor in state.items():
        if not tensor.is_floating_point() or name.endswith(("running_mean", "running_var")):
            continue
        specs[name] = _param_spec(name, tuple(tensor.shape), _owner(model, name))
        _assign(tensor, specs[name])

    def calibrate(prefix: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            mean = float(args[0].mean())
            var = float(args[0].var())
            for leaf, scale, offset in (
                ("running_mean", 0.1 * math.sqrt(var), mean),
                ("running_var", 0.1 * var, var),
            ):
                buf = getattr(module, leaf)
                specs[f"{prefix}.{leaf}"] = _spec(f"{prefix}.{leaf}", tuple(buf.shape), scale, offset)
                _assign(buf, specs[f"{prefix}.{leaf}"])

        return hook

    handles = [
        m.register_forward_pre_hook(calibrate(n)) for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)
    ]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    missing = [
        n for n, t in state.items() if t.is_floating_point() and n not in specs
    ]  # fmt: skip
    if missing:
        raise RuntimeError(f"tensors without a recipe: {missing[:5]}")
    return specs


def export_onnx(model: nn.Module, x: torch.Tensor) -> onnx.ModelProto:
    """Export with the TorchScript exporter: opset 17, no folding, dynamic batch."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (x,), buf, dynamo=False, opset_version=OPSET, do_constant_folding=False,
            input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )  # fmt: skip
    return onnx.load_from_string(buf.getvalue())


def strip_initializers(
    model: onnx.ModelProto, specs: dict[str, dict[str, Any]]
) -> tuple[onnx.ModelProto, dict[str, dict[str, Any]]]:
    """Remove every recipe initializer from ``model``; return it and the ONNX-name manifest.

    An initializer maps to a recipe by ``state_dict`` name, or else by exact value among
    tensors of the same shape; either way its stored values must equal the recipe's.
    """
    by_shape: dict[tuple[int, ...], list[str]] = {}
    for name, spec in specs.items():
        by_shape.setdefault(tuple(spec["shape"]), []).append(name)
    manifest: dict[str, dict[str, Any]] = {}
    kept = []
    for init in model.graph.initializer:
        value = numpy_helper.to_array(init)
        candidates = [init.name] if init.name in specs else by_shape.get(value.shape, [])
        match = next((c for c in candidates if np.array_equal(value, recipe_from_spec(specs[c]))), None)
        if match is not None:
            manifest[init.name] = specs[match]
        elif init.name in specs:
            raise RuntimeError(f"initializer {init.name!r} differs from its recipe")
        elif value.nbytes > MAX_KEPT_BYTES:
            raise RuntimeError(f"initializer {init.name!r} ({value.shape}) matches no recipe")
        else:
            kept.append(init)
    stripped = onnx.ModelProto()
    stripped.CopyFrom(model)
    del stripped.graph.initializer[:]
    stripped.graph.initializer.extend(kept)
    return stripped, manifest


def _session(model: onnx.ModelProto, extra_outputs: list[str]) -> ort.InferenceSession:
    """Return an unoptimized onnxruntime session that also returns ``extra_outputs``."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in extra_outputs:
        probe.graph.output.append(onnx.ValueInfoProto(name=name))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def find_target_tensor(model: onnx.ModelProto, x: np.ndarray, act: np.ndarray, scope: str) -> str:
    """Return the ONNX tensor whose value is the target module's output ``act``.

    Among node outputs under the module's name scope (``/layer4/...``) it picks the last,
    in graph order, whose value matches ``act``; scope prefixes follow the exporter's
    ``/<attr>/<qualified name>/`` naming.
    """
    parts = scope.split(".")
    prefixes = {"/" + "/".join(".".join(parts[: i + 1]) for i in range(len(parts))) + "/"}
    prefixes.add("/" + "/".join(parts) + "/")
    names = [
        out for node in model.graph.node if node.op_type != "Constant"
        for out in node.output if any(out.startswith(p) for p in prefixes)
    ]  # fmt: skip
    if not names:
        raise RuntimeError(f"no ONNX tensor under scope {sorted(prefixes)}")
    values = _session(model, names).run(names, {"input": x})
    hits = [
        n for n, v in zip(names, values, strict=True)
        if v.shape == act.shape and np.allclose(v, act, rtol=1e-4, atol=1e-4 * np.abs(act).max())
    ]  # fmt: skip
    if not hits:
        raise RuntimeError(f"no tensor under {sorted(prefixes)} matches the target activation")
    return hits[-1]


def reference(
    model: nn.Module,
    x: np.ndarray,
    targets: dict[str, str],
    seeds: dict[str, np.ndarray],
    dtype: torch.dtype = torch.float64,
) -> dict[str, np.ndarray]:
    """Return autograd logits, and per target its activation and one gradient per seed.

    ``targets`` maps a key to a module path, or to ``""`` for the model input. Keys of the
    result are ``logits``, ``<key>_activation`` and ``<key>_grad_<seed>``. Each module's
    output retains its gradient and a clone is passed on, so an in-place op downstream
    (DenseNet's final ``relu_``) cannot alias the captured tensor.
    """
    model.to(dtype)
    captured: dict[str, torch.Tensor] = {}

    def capture(key: str) -> Callable[[nn.Module, Any, torch.Tensor], torch.Tensor]:
        def hook(_m: nn.Module, _a: Any, out: torch.Tensor) -> torch.Tensor:
            out.retain_grad()
            captured[key] = out
            return out.clone()

        return hook

    handles = [model.get_submodule(path).register_forward_hook(capture(key)) for key, path in targets.items() if path]
    result: dict[str, np.ndarray] = {}
    try:
        for seed_key, seed in seeds.items():
            xt = torch.from_numpy(x).to(dtype).requires_grad_(True)
            captured.update({key: xt for key, path in targets.items() if not path})
            logits = model(xt)
            (logits * torch.from_numpy(seed).to(dtype)).sum().backward()
            result["logits"] = logits.detach().numpy()
            for key, leaf in captured.items():
                result[f"{key}_activation"] = leaf.detach().numpy()
                result[f"{key}_grad_{seed_key}"] = leaf.grad.numpy()
    finally:
        for handle in handles:
            handle.remove()
        model.float()
    return result


def _rel_err(got: np.ndarray, want: np.ndarray) -> float:
    """Return ``max|got - want| / max|want|``."""
    return float(np.abs(got - want).max() / np.abs(want).max())


def stored_arrays(full: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Select what goes into the npz: the last target in full, the deep ones sampled.

    The deep targets keep the random-seed gradient only, and ``DEEP_SAMPLE`` evenly spaced
    elements per sample (``tests/golden_models.sample_flat``); the input is a recipe.
    """
    return {
        "logits": full["logits"],
        "activation": full["last_activation"],
        "grad_onehot": full["last_grad_onehot"],
        "grad_random": full["last_grad_random"],
        "mid_activation": sample_flat(full["mid_activation"], DEEP_SAMPLE),
        "mid_grad_random": sample_flat(full["mid_grad_random"], DEEP_SAMPLE),
        "input_grad_random": sample_flat(full["input_grad_random"], DEEP_SAMPLE),
    }


def dump_manifest(manifest: dict[str, Any]) -> str:
    """Return the manifest as JSON with one line per top-level key and per initializer."""
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in manifest.items() if k != "initializers"]
    inits = [f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in manifest["initializers"].items()]
    return "{\n" + "\n".join(lines) + '\n  "initializers": {\n' + ",\n".join(inits) + "\n  }\n}\n"


def build_model(name: str) -> tuple[nn.Module, dict[str, dict[str, Any]], dict[str, Any]]:
    """Return the recipe-weighted float32 model of ``name``, its recipe specs and the spec of
    its recipe input (the BatchNorm statistics are calibrated on that input, not on the
    nudged golden input, so the network does not depend on the nudge)."""
    arch = ARCHS[name]
    s = arch.image_size
    input_spec = _spec(f"input/{name}", (BATCH, 3, s, s), 1.0)
    torch.manual_seed(0)
    model = arch.build().eval()
    specs = apply_recipes(model, torch.from_numpy(recipe_from_spec(input_spec)))
    return model, specs, input_spec


# ---------------------------------------------------------------------- switches
#: Elementwise functions with kinks: name and the kinks given the call's arguments.
_ELEMENTWISE: dict[Callable[..., Any], Callable[[tuple[Any, ...], dict[str, Any]], tuple[float, ...]]] = {
    F.relu: lambda a, k: (0.0,),
    F.relu6: lambda a, k: (0.0, 6.0),
    F.hardtanh: lambda a, k: (
        float(a[1]) if len(a) > 1 else float(k.get("min_val", -1.0)),
        float(a[2]) if len(a) > 2 else float(k.get("max_val", 1.0)),
    ),
    F.hardswish: lambda a, k: (-3.0, 3.0),
    F.hardsigmoid: lambda a, k: (-3.0, 3.0),
}
_MAX_POOLS = (F.max_pool2d, F.max_pool2d_with_indices)
#: Kinked functions this recorder does not handle: an architecture using one is refused.
_UNHANDLED = (
    torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_, torch.clamp, torch.clip,
    torch.Tensor.clamp, torch.Tensor.clip, torch.abs, torch.Tensor.abs, F.leaky_relu,
    F.max_pool1d, F.max_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d, torch.maximum, torch.minimum,
)  # fmt: skip


@dataclass
class Switch:
    """One recorded switch tensor: elementwise inputs ``value`` with ``kinks``, or a max-pool's
    window gaps ``value`` (largest minus second largest) with the window maxima ``top``."""

    kind: str
    value: torch.Tensor
    kinks: tuple[float, ...] = ()
    top: torch.Tensor | None = None

    def margin(self) -> tuple[torch.Tensor, float]:
        """Elementwise distance to the kink relative to the tensor's scale, and that scale."""
        v = self.value.detach()
        if self.top is not None:
            top = self.top.detach()
            scale = float(top.abs().max())
            dist = v.clone()
            dist[(v == 0) & (top == 0)] = math.inf  # ties of post-ReLU zeros: no gradient reaches them
        else:
            scale = float(v.abs().max())
            dist = torch.stack([(v - k).abs() for k in self.kinks]).amin(0)
        return dist / max(scale, 1e-30), scale

    def push(self, index: tuple[int, ...], scale: float, target: float) -> float:
        """The move of element ``index`` that puts it ``target * scale`` from its kink (0 if it is)."""
        v = float(self.value[index])
        if self.top is not None:
            return max(target * scale - v, 0.0)
        kink = min(self.kinks, key=lambda k: abs(v - k))
        d = v - kink
        return max(target * scale - abs(d), 0.0) * (1.0 if d >= 0 else -1.0)


def _window_gaps(
    x: torch.Tensor,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Largest minus second largest value, and the largest, of every max-pool window."""
    pair = lambda v: (int(v), int(v)) if isinstance(v, int) else tuple(int(i) for i in v)  # noqa: E731
    k, p, d = pair(kernel_size), pair(padding), pair(dilation)
    s = pair(stride) if stride not in (None, [], ()) else k
    if d != (1, 1) or ceil_mode:
        raise NotImplementedError("max-pool switch margins need dilation 1 and floor mode")
    xp = F.pad(x, (p[1], p[1], p[0], p[0]), value=-math.inf)
    top2 = xp.unfold(2, k[0], s[0]).unfold(3, k[1], s[1]).flatten(-2).topk(2, dim=-1).values
    return top2[..., 0] - top2[..., 1], top2[..., 0]


class SwitchRecorder(TorchFunctionMode):
    """Records every switch of a forward pass (see :class:`Switch`); in-place activations run
    out of place (same values, and the recorded input keeps its autograd history)."""

    def __init__(self) -> None:
        super().__init__()
        self.switches: list[Switch] = []

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = dict(kwargs or {})
        if func in _ELEMENTWISE:
            kinks = _ELEMENTWISE[func](args, kwargs)
            self.switches.append(Switch(func.__name__, args[0], kinks))
            if func is F.hardtanh:
                return F.hardtanh(args[0], kinks[0], kinks[1])
            return func(args[0])
        if func in _MAX_POOLS:
            gap, top = _window_gaps(*args, **kwargs)
            self.switches.append(Switch("max_pool2d", gap, top=top))
        elif func in _UNHANDLED:
            raise NotImplementedError(f"no switch margins for {func}")
        return func(*args, **kwargs)


def record_switches(model: nn.Module, x: torch.Tensor) -> tuple[list[Switch], torch.Tensor]:
    """Run ``model`` on ``x`` recording its switches; return them and the output."""
    recorder = SwitchRecorder()
    with recorder:
        out = model(x)
    return recorder.switches, out


def kink_free_nudge(model: nn.Module, x0: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Return int16 ``nudge`` such that ``apply_nudge(x0, nudge)`` keeps every switch at least
    ``KINK_MARGIN`` from its kink (float64), and a summary.

    Each round measures the margins in float64. Every switch found closer than
    ``KINK_MARGIN`` joins the constrained set; the constrained switches closer than
    ``HOLD * KINK_TARGET`` are pushed to ``KINK_TARGET`` (or held where they already are) by
    the least-norm input change of the network linearised at the input, image by image:
    ``dx = G^T (G G^T + r I)^-1 w``, one row of ``G`` per switch (its float32 input
    gradient, computed when it joins), ``r = NUDGE_RIDGE * trace(G G^T) / rows`` (neighbouring
    switches can have near-equal rows). A least-norm change spreads over all pixels, so it
    moves the other switches by a small fraction of the push and the rounds converge; it is
    quantised to ``NUDGE_QUANTUM`` and the margins re-measured.
    """
    model64 = copy.deepcopy(model).double()
    nudge = np.zeros(x0.shape, dtype=np.int64)
    rows: dict[tuple[int, tuple[int, ...]], np.ndarray | None] = {}
    first: dict[str, Any] = {}
    for rnd in range(MAX_NUDGE_ROUNDS):
        x = apply_nudge(x0, nudge)
        with torch.no_grad():
            switches, out = record_switches(model64, torch.from_numpy(x).double())
            plain = model64(torch.from_numpy(x).double())
        if not torch.equal(out, plain):
            raise RuntimeError("recording the switches changed the model's output")
        if not switches:  # a smooth network (GELU, SiLU, no max-pool): nothing to clear
            return np.zeros(x0.shape, np.int16), {"switch_tensors": 0, "rounds": 0, "nudged_values": 0}
        margins = [sw.margin() for sw in switches]
        # A switch no input moves (a depthwise conv of inputs all clipped to 0 or 6: its BatchNorm
        # shift) is computed from constants alone: its float32 error is ~1e-7 of its own size,
        # not of its tensor's, so it keeps its side; it is reported, not nudged.
        fixed = {k for k, row in rows.items() if row is not None and not row.any()}
        for i, idx in fixed:
            margins[i][0][idx] = math.inf
        worst = min(float(m.min()) for m, _ in margins)
        close = [
            (i, tuple(int(j) for j in idx)) for i, (m, _) in enumerate(margins)
            for idx in torch.nonzero(m < KINK_MARGIN)
        ]  # fmt: skip
        if not first:
            first = {"switch_tensors": len(switches), "switch_values": sum(int(m.numel()) for m, _ in margins),
                     "close_at_recipe_input": len(close), "min_margin_at_recipe_input": worst}  # fmt: skip
        print(f"  nudge round {rnd}: {len(close)} switches closer than {KINK_MARGIN:g} (min margin "
              f"{worst:.2e}), {len(rows)} constrained, {len(fixed)} input-independent", flush=True)  # fmt: skip
        if not close:
            kinds: dict[str, float] = {}
            for sw, (m, _) in zip(switches, margins, strict=True):
                kinds[sw.kind] = min(kinds.get(sw.kind, math.inf), float(m.min()))
            const = [float(switches[i].margin()[0][idx]) for i, idx in fixed]
            return nudge.astype(np.int16), {
                **first, "rounds": rnd, "constrained": len(rows), "min_margin": worst,
                "min_margin_by_kind": kinds, "input_independent": len(fixed),
                "input_independent_min_margin": min(const, default=None),
                "nudged_values": int(np.count_nonzero(nudge)),
                "max_abs_nudge": float(np.abs(nudge).max()) * NUDGE_QUANTUM,
            }  # fmt: skip
        for key in close:
            rows.setdefault(key, None)
        for n in range(x.shape[0]):
            cons = [k for k in rows if k[1][0] == n and float(margins[k[0]][0][k[1]]) < HOLD * KINK_TARGET]
            need = [k for k in cons if rows[k] is None]
            if need:
                xt = torch.from_numpy(x[n : n + 1].copy()).requires_grad_(True)
                graph, _ = record_switches(model, xt)
                for i, idx in need:
                    (g,) = torch.autograd.grad(graph[i].value[(0, *idx[1:])], xt, retain_graph=True)
                    rows[(i, idx)] = g.double().numpy().ravel()
                del graph
            cons = [k for k in cons if rows[k].any()]  # type: ignore[union-attr]  # no input moves it: no flip either
            if not cons:
                continue
            g_mat = np.stack([rows[k] for k in cons])  # type: ignore[misc]
            want = np.asarray([switches[i].push(idx, margins[i][1], KINK_TARGET) for i, idx in cons])
            gram = g_mat @ g_mat.T
            ridge = NUDGE_RIDGE * float(np.trace(gram)) / len(cons)
            dx = g_mat.T @ np.linalg.solve(gram + ridge * np.eye(len(cons)), want)
            nudge[n] += np.rint(dx / NUDGE_QUANTUM).reshape(x.shape[1:]).astype(np.int64)
        if np.abs(nudge).max() >= 2**15:
            raise RuntimeError("the input nudge left the int16 range")
    raise RuntimeError(f"no kink-free input after {MAX_NUDGE_ROUNDS} rounds")


def references(
    name: str, model: nn.Module, x: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, float]]:
    """Return the float64 references (all targets, full), the seeds, and per stored array the
    error of PyTorch's float32 autograd relative to the array's maximum (a measurement of
    float32 rounding on the kink-free input; ~1e-6)."""
    arch = ARCHS[name]
    with torch.no_grad():
        shape = model(torch.from_numpy(x)).shape
    onehot = np.zeros(shape, dtype=np.float32)
    onehot[:, ONEHOT_CLASS] = 1.0
    seeds = {"onehot": onehot, "random": recipe_values(shape, _seed(f"seed/{name}"), 1.0)}
    paths = {"last": arch.target_module, "mid": arch.mid_module, "input": ""}
    full_ref = reference(model, x, paths, seeds)
    ref = stored_arrays(full_ref)
    f32 = stored_arrays(reference(model, x, paths, seeds, torch.float32))
    return full_ref, seeds, {key: _rel_err(f32[key], ref[key]) for key in ref}


def make(name: str, arch: Arch, out: Path) -> dict[str, Any]:
    """Build, export, strip and verify one architecture; write its three golden files."""
    model, specs, input_spec = build_model(name)
    nudge, kinks = kink_free_nudge(model, recipe_from_spec(input_spec))
    x = apply_nudge(recipe_from_spec(input_spec), nudge)
    full_ref, _, float32_error = references(name, model, x)
    full = export_onnx(model, torch.from_numpy(x))
    stripped, manifest_inits = strip_initializers(full, specs)
    ref = stored_arrays(full_ref)
    seed_spec = _spec(f"seed/{name}", ref["logits"].shape, 1.0)
    target = find_target_tensor(full, x, ref["activation"].astype(np.float32), arch.target_module)
    mid = find_target_tensor(full, x, full_ref["mid_activation"].astype(np.float32), arch.mid_module)

    manifest = {
        "arch": name,
        "target_module": arch.target_module,
        "target_layer": target,
        "deep_modules": {"mid": arch.mid_module, "input": "input"},
        "deep_targets": {"mid": mid, "input": "input"},
        "deep_sample": DEEP_SAMPLE,
        "onehot_class": ONEHOT_CLASS,
        "input": input_spec,
        "input_nudge": {
            "quantum": NUDGE_QUANTUM,
            "margin": KINK_MARGIN,
            "target": KINK_TARGET,
            "hold": HOLD,
            "ridge": NUDGE_RIDGE,
            **kinks,
        },
        "seed_random": seed_spec,
        "generator": {
            "tool": "tools/make_autograd_golden.py",
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "onnx": onnx.__version__,
            "opset": OPSET,
            "exporter": "torch.onnx.export(dynamo=False, do_constant_folding=False)",
            "reference": "float64 torch autograd",
        },
        "torch_float32_error": float32_error,
        "initializers": manifest_inits,
    }
    rebuilt = rebuild_model(stripped, manifest)
    onnx.checker.check_model(rebuilt, full_check=True)
    got_logits, got_act = _session(rebuilt, [target]).run(["logits", target], {"input": x})
    scale = float(np.abs(ref["logits"]).max())
    np.testing.assert_allclose(got_logits, ref["logits"], rtol=1e-4, atol=1e-4 * scale)
    act_scale = float(np.abs(ref["activation"]).max())
    np.testing.assert_allclose(got_act, ref["activation"], rtol=1e-4, atol=1e-4 * act_scale)
    for key in ("grad_onehot", "grad_random", "mid_grad_random", "input_grad_random"):
        g = ref[key]
        if not (np.isfinite(g).all() and np.abs(g).max() > 0 and np.count_nonzero(g) > g.size // 20):
            raise RuntimeError(f"{name}: trivial gradient {key}")
    if not 0.05 < float(ref["logits"].std()) < 50.0:
        raise RuntimeError(f"{name}: logits std {ref['logits'].std():.3g} is not O(1)")

    out.mkdir(parents=True, exist_ok=True)
    onnx.save(stripped, str(out / f"{name}.onnx"))
    (out / f"{name}.json").write_text(dump_manifest(manifest))
    save_npz(out / f"{name}.npz", {**{k: v.astype(np.float32) for k, v in ref.items()}, "input_nudge": nudge})
    return {
        "arch": name,
        "target": target,
        "act_shape": ref["activation"].shape,
        "logits_std": float(ref["logits"].std()),
        "act_std": float(ref["activation"].std()),
        "mid": mid,
        "grad_max": float(np.abs(ref["grad_random"]).max()),
        "input_grad_max": float(np.abs(ref["input_grad_random"]).max()),
        "ort_logits_err": float(np.abs(got_logits - ref["logits"]).max() / scale),
        "kink_min_margin": kinks.get("min_margin", "none"),
        "nudged": kinks["nudged_values"],
        "torch_f32_err": max(float32_error.values()),
        "onnx_kb": (out / f"{name}.onnx").stat().st_size / 1024,
        "n_recipes": len(manifest_inits),
    }


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, make the requested architectures and print a summary line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="*", choices=sorted(ARCHS), default=sorted(ARCHS))
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "golden")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"onnx {onnx.__version__}, onnxruntime {ort.__version__}, numpy {np.__version__}; "
          f"batch {BATCH}, opset {OPSET}, one-hot class {ONEHOT_CLASS}, deep sample {DEEP_SAMPLE}; "
          f"kink margin {KINK_MARGIN:g}, nudge target {KINK_TARGET:g} (hold below {HOLD:g}x, ridge {NUDGE_RIDGE:g}), "
          f"nudge quantum 2^{math.log2(NUDGE_QUANTUM):.0f}, "
          f"{torch.get_num_threads()} threads; archs {args.arch} -> {args.out}")  # fmt: skip
    for name in args.arch:
        t0 = time.perf_counter()
        info = make(name, ARCHS[name], args.out)
        print(", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
              + f", {time.perf_counter() - t0:.1f}s", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
