"""Make the PyTorch-autograd golden data of ``tests/golden/`` (needs torch + torchvision).

For each architecture this script

1. builds the real torchvision network (``weights=None``, ``eval()``) and replaces every
   parameter and buffer with a deterministic *recipe* tensor (see ``tests/golden_models.py``):
   He/LeCun-scaled weights, norm scales near 1, small biases, and BatchNorm running
   statistics calibrated in one forward pass so that activations stay O(1);
2. exports it with the TorchScript exporter (opset 17, no constant folding, so BatchNorm is
   not fused and every initializer keeps its ``state_dict`` name), checks that each
   initializer equals its recipe bit for bit, strips it from the file and records the
   recipe in ``<arch>.json``; the stripped graph is ``<arch>.onnx`` (tens of KB);
3. computes, in float64 PyTorch autograd, the logits and, for three targets, the activation
   and its gradient of ``sum(seed * logits)`` for a one-hot and a random seed: the last-stage
   (CAM) layer, stored in full; a mid-network layer and the model input, stored as
   ``sample_flat`` samples with the random seed only; these go to ``<arch>.npz`` as float32.
   The ONNX tensor of each module output is located by value. Each stored array's kink
   sensitivity (its move under float32 and 1e-6 input perturbations) goes to the manifest;
4. rebuilds the model from the recipe with ``tests/golden_models.py`` (numpy only), runs it in
   onnxruntime and checks logits and activation against the reference before writing.

Usage::

    /work/xcenv/bin/python tools/make_autograd_golden.py [--arch resnet18 ...] [--out DIR]
"""

from __future__ import annotations

import argparse
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
from torchvision.models.vision_transformer import VisionTransformer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.golden_models import rebuild_model, recipe_from_spec, recipe_values, sample_flat  # noqa: E402

BATCH = 2
ONEHOT_CLASS = 7
OPSET = 17
#: Stored initializers that are not recipes (shape constants) must stay below this size.
MAX_KEPT_BYTES = 4096
#: Reference dtypes of the sensitivity probes; every probe but the first perturbs the input.
PROBES = (torch.float32, torch.float32, torch.float32, torch.float64, torch.float64)
#: Elements per sample kept of the deep targets' arrays (activation, gradient).
DEEP_SAMPLE = 2048


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


def references(name: str, arch: Arch) -> tuple[nn.Module, dict[str, Any], dict[str, np.ndarray], dict[str, float]]:
    """Return the model, the input spec, the float64 references and their kink sensitivity.

    Networks with millions of ReLU inputs always hold some within float32 rounding of zero;
    any float32 run (PyTorch's, camcore's) flips a few of them and the deep gradients jump.
    The sensitivity of a stored array is its largest move, relative to its maximum, over
    ``PROBES``: PyTorch float32 autograd at the input and at inputs perturbed by 1e-6, and
    float64 autograd at perturbed inputs. Smooth arrays move by ~1e-6; the test widens its
    tolerance to a multiple of the sensitivity where kinks make an array move more.
    """
    s = arch.image_size
    input_spec = _spec(f"input/{name}", (BATCH, 3, s, s), 1.0)
    x = recipe_from_spec(input_spec)
    torch.manual_seed(0)
    model = arch.build().eval()
    apply_recipes(model, torch.from_numpy(x))
    with torch.no_grad():
        shape = model(torch.from_numpy(x)).shape
    onehot = np.zeros(shape, dtype=np.float32)
    onehot[:, ONEHOT_CLASS] = 1.0
    seeds = {"onehot": onehot, "random": recipe_values(shape, _seed(f"seed/{name}"), 1.0)}
    paths = {"last": arch.target_module, "mid": arch.mid_module, "input": ""}
    full_ref = reference(model, x, paths, seeds)
    ref = stored_arrays(full_ref)
    sensitivity = dict.fromkeys(ref, 0.0)
    for probe, dtype in enumerate(PROBES):
        bump = recipe_values(x.shape, _seed(f"bump/{name}/{probe}"), 1e-6) if probe else 0.0
        other = stored_arrays(reference(model, x + bump, paths, seeds, dtype))
        for key, value in other.items():
            sensitivity[key] = max(sensitivity[key], _rel_err(value, ref[key]))
    return model, input_spec, full_ref, sensitivity


def make(name: str, arch: Arch, out: Path) -> dict[str, Any]:
    """Build, export, strip and verify one architecture; write its three golden files."""
    model, input_spec, full_ref, sensitivity = references(name, arch)
    x = recipe_from_spec(input_spec)
    specs = apply_recipes(model, torch.from_numpy(x))
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
        "sensitivity": sensitivity,
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
    np.savez_compressed(out / f"{name}.npz", **{k: v.astype(np.float32) for k, v in ref.items()})
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
        "sensitivity": max(sensitivity.values()),
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
          f"onnx {onnx.__version__}, onnxruntime {ort.__version__}, batch {BATCH}")  # fmt: skip
    for name in args.arch:
        t0 = time.perf_counter()
        info = make(name, ARCHS[name], args.out)
        print(", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
              + f", {time.perf_counter() - t0:.1f}s", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
