"""Export the reach test set: small random-weight models from other frameworks' own exporters,
each with a Grad-CAM reference computed by that framework's autodiff (or pytorch-grad-cam).

Each framework runs in its own throwaway virtual environment; none is a camcore dependency::

    python -m venv /tmp/tv && /tmp/tv/bin/pip install torch==2.13.0 torchvision grad-cam onnx onnxscript
    /tmp/tv/bin/python tools/make_reach_models.py torch
    /tmp/tv/bin/pip install timm transformers && /tmp/tv/bin/python tools/make_reach_models.py timm
    python -m venv /tmp/tf && /tmp/tf/bin/pip install tensorflow-cpu tf2onnx
    /tmp/tf/bin/python tools/make_reach_models.py keras
    python -m venv /tmp/jx && /tmp/jx/bin/pip install jax jaxlib flax jax2onnx
    /tmp/jx/bin/python tools/make_reach_models.py jax
    python -m venv /tmp/pd && /tmp/pd/bin/pip install paddlepaddle paddle2onnx
    /tmp/pd/bin/python tools/make_reach_models.py paddle
    /tmp/tv/bin/pip install onnxconverter-common && /tmp/tv/bin/python tools/make_reach_models.py fp16

For every model it writes ``tests/reach/NAME.onnx`` (weights inline) and ``NAME.npz``: the input
``x`` in the model's own layout, the explained ``target`` class, and ``cam``, the reference map
at ``layer`` (pytorch-grad-cam's GradCAM for torch; for Keras and JAX, ReLU(sum_c mean(dy/dA_c)
A_c) from tf.GradientTape or jax.grad, min-max scaled and resized by camcore's own assembly in
the test). ``tests/reach/manifest.json`` records, per model, the framework and exporter with
versions, the input layout, the layer camcore should pick by default and its layout.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "tests" / "reach"
TARGET = 3


def _record(name: str, entry: dict[str, Any], **arrays: Any) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    manifest_path = OUT / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest[name] = entry
    manifest_path.write_text(json.dumps(dict(sorted(manifest.items())), indent=1) + "\n")
    np.savez_compressed(OUT / f"{name}.npz", target=TARGET, **arrays)
    print(f"wrote {name}: {entry['default_layer']} ({entry['layout']})")


def _inline(path: Path) -> None:
    """Re-save with the weights inside the file (the dynamo exporter writes them beside it)."""
    import onnx

    model = onnx.load(str(path))
    for data in path.parent.glob(path.name + ".data"):
        data.unlink()
    onnx.save(model, str(path))


# ---------------------------------------------------------------------- torch
def torch_models() -> None:
    from importlib.metadata import version

    import torch
    import torchvision
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    def vit() -> Any:
        return torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                    hidden_dim=24, mlp_dim=48, num_classes=5)  # fmt: skip

    def swin() -> Any:
        return torchvision.models.SwinTransformer(patch_size=[4, 4], embed_dim=12, depths=[2, 2], num_heads=[2, 2],
                                                  window_size=[2, 2], num_classes=5)  # fmt: skip

    def vit_tokens(t: Any) -> Any:
        return t[:, 1:, :].reshape(t.shape[0], 4, 4, t.shape[2]).permute(0, 3, 1, 2)

    cases = {
        # name: (builder, module to explain, reshape_transform, default layer per exporter)
        "vit": (vit, lambda m: m.encoder.layers[-1].ln_1, vit_tokens),
        "swin": (swin, lambda m: m.norm, lambda t: t.permute(0, 3, 1, 2)),
    }
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    for arch, (build, module, transform) in cases.items():

        def make(build: Any = build) -> Any:
            torch.manual_seed(0)
            model = build().eval()
            with torch.no_grad():  # torchvision zero-initialises the head: give it weights
                for p in model.parameters():
                    if p.ndim > 1 and p.abs().sum() == 0:
                        p.normal_(0, 0.2)
            return model

        model = make()
        cam = GradCAM(model, [module(model)], reshape_transform=transform)
        reference = cam(torch.from_numpy(x), targets=[ClassifierOutputTarget(TARGET)] * len(x))
        exports = [("dynamo", "fp32"), ("torchscript", "fp32")]
        if arch == "vit":  # a half-precision export too: every tensor in float16, input and output included
            # (not by TorchScript: onnxruntime 1.31's plain inference of that export crashes)
            exports += [("dynamo", "fp16")]
        for exporter, precision in exports:
            name = f"torch_{arch}_{exporter}" + ("_fp16" if precision == "fp16" else "")
            path = OUT / f"{name}.onnx"
            OUT.mkdir(parents=True, exist_ok=True)
            dynamo = exporter == "dynamo"
            batch = {"dynamic_shapes": ({0: torch.export.Dim("N")},)} if dynamo else {
                "dynamic_axes": {"x": {0: "N"}, "logits": {0: "N"}}}  # fmt: skip
            half = precision == "fp16"
            example = torch.from_numpy(x.astype(np.float16) if half else x)
            opset = 18 if dynamo else 17
            torch.onnx.export(make().half() if half else model, (example,), str(path), input_names=["x"],
                              output_names=["logits"], dynamo=dynamo, opset_version=opset, **batch)  # fmt: skip
            _inline(path)
            entry = {
                "framework": f"torch {torch.__version__}, torchvision {torchvision.__version__}",
                "exporter": f"torch.onnx.export(dynamo={dynamo})",
                "reference": f"pytorch-grad-cam {version('grad-cam')} GradCAM at "
                + ("encoder.layers[-1].ln_1" if arch == "vit" else "norm"),
                "input_layout": "NCHW",
                "precision": precision,
                "default_layer": None,  # filled below from the graph: names differ per exporter
                "layout": "tokens" if arch == "vit" else "channels_first",
                "map": "final",
            }
            entry["default_layer"] = _torch_default(path, arch)
            _record(name, entry, x=x.astype(np.float16) if half else x, cam=reference.astype(np.float32))


def _torch_default(path: Path, arch: str) -> str:
    """The tensor that plays the reference module's part: the last block's ln_1 output (ViT),
    the permuted final grid (Swin)."""
    import onnx

    nodes = list(onnx.load(str(path), load_external_data=False).graph.node)
    if arch == "vit":
        norms = [n.output[0] for n in nodes if n.op_type == "LayerNormalization"]
        return norms[-3]  # ln_1 and ln_2 of the last block, then the encoder's ln
    return next(n.output[0] for n in reversed(nodes) if n.op_type == "Transpose")


def _layout_of(path: Path, layer: str, channels: int) -> str:
    """NCHW or NHWC, as tf2onnx left the layer: where its ``channels`` are in its inferred shape."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    info = next(v for v in inferred.graph.value_info if v.name == layer)
    dims = [d.dim_value for d in info.type.tensor_type.shape.dim]
    return "channels_last" if dims[-1] == channels else "channels_first"


# ---------------------------------------------------------------------- timm and HuggingFace
def timm_hf_models() -> None:
    """Transformers as timm and HuggingFace build them: DeiT with class and distillation tokens,
    a ViT with 4 register tokens, a ViT that averages its patch tokens (no class token), and
    transformers' ViTForImageClassification; each exported by torch's two exporters and
    explained by pytorch-grad-cam at the last block's first norm (the average-pooling one: at
    its last block's output, which the head averages)."""
    from importlib.metadata import version

    import torch
    import transformers
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from timm.models.deit import VisionTransformerDistilled
    from timm.models.vision_transformer import VisionTransformer

    class Logits(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: Any) -> Any:
            return self.model(pixel_values=x).logits

    tiny = {"img_size": 32, "patch_size": 8, "embed_dim": 24, "depth": 2, "num_heads": 2, "num_classes": 5}
    hf = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=48, num_labels=5)  # fmt: skip
    cases = {
        # name: (builder, module, leading tokens, framework)
        "timm_deit_distilled": (lambda: VisionTransformerDistilled(**tiny), lambda m: m.blocks[-1].norm1, 2, "timm"),
        "timm_vit_registers": (
            lambda: VisionTransformer(**tiny, reg_tokens=4),
            lambda m: m.blocks[-1].norm1,
            5,
            "timm",
        ),
        "timm_vit_avgpool": (
            lambda: VisionTransformer(**tiny, global_pool="avg", class_token=False),
            lambda m: m.blocks[-1],
            0,
            "timm",
        ),
        "hf_vit": (
            lambda: Logits(transformers.ViTForImageClassification(hf)),
            lambda m: m.model.vit.layers[-1].layernorm_before,
            1,
            "transformers",
        ),
    }
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    for arch, (build, module, prefix, framework) in cases.items():
        torch.manual_seed(0)
        model = build().eval()
        with torch.no_grad():
            for p in model.parameters():
                if p.ndim > 1 and p.abs().sum() == 0:
                    p.normal_(0, 0.2)

        def grid(t: Any, prefix: int = prefix) -> Any:
            return t[:, prefix:, :].reshape(t.shape[0], 4, 4, t.shape[2]).permute(0, 3, 1, 2)

        cam = GradCAM(model, [module(model)], reshape_transform=grid)
        reference = cam(torch.from_numpy(x), targets=[ClassifierOutputTarget(TARGET)] * len(x))
        for exporter in ("dynamo", "torchscript"):
            name = f"{arch}_{exporter}"
            path = OUT / f"{name}.onnx"
            dynamo = exporter == "dynamo"
            batch = {"dynamic_shapes": ({0: torch.export.Dim("N")},)} if dynamo else {
                "dynamic_axes": {"x": {0: "N"}, "logits": {0: "N"}}}  # fmt: skip
            torch.onnx.export(model, (torch.from_numpy(x),), str(path), input_names=["x"], output_names=["logits"],
                              dynamo=dynamo, opset_version=18 if dynamo else 17, **batch)  # fmt: skip
            _inline(path)
            import onnx

            inferred = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
            ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in inferred.graph.value_info}
            nodes = list(inferred.graph.node)
            norms = [n.output[0] for n in nodes if n.op_type == "LayerNormalization"]
            adds = [n.output[0] for n in nodes if n.op_type == "Add" and ranks.get(n.output[0]) == 3]
            entry = {
                "framework": f"{framework} {version(framework)}, torch {torch.__version__}",
                "exporter": f"torch.onnx.export(dynamo={dynamo})",
                "reference": f"pytorch-grad-cam {version('grad-cam')} GradCAM, {prefix} leading tokens dropped",
                "input_layout": "NCHW",
                "precision": "fp32",
                # the last block's first norm (then come its second norm and the final one); the averaging
                # model's last block output, its last residual sum over the tokens
                "default_layer": adds[-1] if arch == "timm_vit_avgpool" else norms[-3],
                "layout": "tokens",
                "map": "final",
            }
            _record(name, entry, x=x, cam=reference.astype(np.float32))


# ---------------------------------------------------------------------- keras
def keras_models() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf
    import tf2onnx

    keras.utils.set_random_seed(0)
    size = 48

    def plain() -> Any:
        i = keras.Input((size, size, 3), name="image")
        x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="c1")(i)
        x = keras.layers.BatchNormalization(name="bn1")(x)
        x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="last")(x)
        x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
        return keras.Model(i, keras.layers.Dense(5, name="logits")(x))

    def squeeze_excite() -> Any:
        """MobileNetV3's blocks (hard-swish, squeeze-excite): tf2onnx leaves them in NHWC."""
        i = keras.Input((size, size, 3), name="image")
        x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="c1")(i)
        x = keras.layers.Activation("hard_swish", name="hs1")(x)
        x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
        s = keras.layers.GlobalAveragePooling2D(keepdims=True, name="se_pool")(x)
        s = keras.layers.Conv2D(4, 1, activation="relu", name="se_reduce")(s)
        s = keras.layers.Conv2D(8, 1, activation="hard_sigmoid", name="se_expand")(s)
        x = keras.layers.Multiply(name="se")([x, s])
        x = keras.layers.Conv2D(16, 1, name="c2")(x)
        x = keras.layers.Activation("hard_swish", name="last")(x)
        x = keras.layers.GlobalAveragePooling2D(keepdims=True, name="gap")(x)
        x = keras.layers.Conv2D(5, 1, name="logits_conv")(x)  # the classifier as a 1x1 conv: (N, 1, 1, 5)
        return keras.Model(i, keras.layers.Flatten(name="logits")(x))

    x = np.random.default_rng(0).standard_normal((2, size, size, 3)).astype(np.float32)
    for arch, build in {"plain": plain, "se": squeeze_excite}.items():
        model = build()
        sub = keras.Model(model.inputs, [model.get_layer("last").output, model.outputs[0]])
        with tf.GradientTape() as tape:
            act, y = sub(x)
            score = tf.reduce_sum(y[:, TARGET])
        grad = tape.gradient(score, act).numpy()
        layer_map = np.einsum("nhwc,nc->nhw", act.numpy(), grad.mean(axis=(1, 2)))
        for opset in (13, 18):
            name = f"keras_{arch}_op{opset}"
            spec = (tf.TensorSpec((None, size, size, 3), tf.float32, name="image"),)
            OUT.mkdir(parents=True, exist_ok=True)
            onnx_model, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
            import onnx

            onnx.save(onnx_model, str(OUT / f"{name}.onnx"))
            # the layer's last tensor: its activation, or the transpose of it back to NHWC
            layer = next(n.output[0] for n in reversed(onnx_model.graph.node) if "/last_" in n.output[0])
            entry = {
                "framework": f"keras {keras.__version__}, tensorflow {tf.__version__}",
                "exporter": f"tf2onnx {tf2onnx.__version__} from_keras(opset={opset})",
                "reference": "tf.GradientTape at layer 'last'",
                "input_layout": "NHWC",
                "precision": "fp32",
                "default_layer": layer,
                "layout": _layout_of(OUT / f"{name}.onnx", layer, channels=16),
                "map": "layer",
            }
            _record(name, entry, x=x, cam=layer_map.astype(np.float32))


# ---------------------------------------------------------------------- jax
def jax_models() -> None:
    import flax
    import jax
    import jax.numpy as jnp
    import jax2onnx
    from flax import nnx
    from jax2onnx import to_onnx

    size = 32

    class CNN(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.c1 = nnx.Conv(3, 8, (3, 3), strides=(2, 2), rngs=rngs)
            self.c2 = nnx.Conv(8, 16, (3, 3), strides=(2, 2), rngs=rngs)
            self.fc = nnx.Linear(16, 5, rngs=rngs)

        def features(self, x: Any) -> Any:
            return nnx.relu(self.c2(nnx.relu(self.c1(x))))

        def __call__(self, x: Any) -> Any:
            return self.fc(self.features(x).mean(axis=(1, 2)))

    model = CNN(nnx.Rngs(0))
    x = np.random.default_rng(0).standard_normal((2, size, size, 3)).astype(np.float32)
    name = "jax_cnn_op23"
    OUT.mkdir(parents=True, exist_ok=True)
    to_onnx(model, [("B", size, size, 3)], output_path=str(OUT / f"{name}.onnx"), opset=23, return_mode="file")
    act = model.features(jnp.asarray(x))
    grad = jax.grad(lambda a: model.fc(a.mean(axis=(1, 2)))[:, TARGET].sum())(act)
    layer_map = np.einsum("nhwc,nc->nhw", np.asarray(act), np.asarray(grad).mean(axis=(1, 2)))
    framework = f"jax {jax.__version__}, flax {flax.__version__}"
    exporter = f"jax2onnx {getattr(jax2onnx, '__version__', '')} to_onnx(opset=23)"
    _record_at_last_relu(name, framework, exporter, "jax.grad", "NHWC", "channels_last", x, layer_map)


def _record_at_last_relu(name: str, framework: str, exporter: str, autodiff: str, input_layout: str, layout: str,
                         x: np.ndarray, layer_map: np.ndarray) -> None:  # fmt: skip
    """Record a CNN explained at its last ReLU, the reference map made by ``autodiff``."""
    import onnx

    nodes = list(onnx.load(str(OUT / f"{name}.onnx")).graph.node)
    entry = {
        "framework": framework,
        "exporter": exporter,
        "reference": f"{autodiff} at the last ReLU",
        "input_layout": input_layout,
        "precision": "fp32",
        "default_layer": [n.output[0] for n in nodes if n.op_type == "Relu"][-1],
        "layout": layout,
        "map": "layer",
    }
    _record(name, entry, x=x, cam=layer_map.astype(np.float32))


# ---------------------------------------------------------------------- paddle
def paddle_models() -> None:
    """A PaddlePaddle CNN through paddle2onnx at opset 9 (upgraded by camcore to 11) and 11."""
    from importlib.metadata import version

    import paddle

    paddle.seed(0)
    relu = paddle.nn.functional.relu

    class CNN(paddle.nn.Layer):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.c1 = paddle.nn.Conv2D(3, 8, 3, stride=2, padding=1)
            self.bn = paddle.nn.BatchNorm2D(8)
            self.c2 = paddle.nn.Conv2D(8, 16, 3, stride=2, padding=1)
            self.fc = paddle.nn.Linear(16, 5)

        def features(self, x: Any) -> Any:
            return relu(self.c2(relu(self.bn(self.c1(x)))))

        def head(self, a: Any) -> Any:
            return self.fc(paddle.flatten(paddle.nn.functional.adaptive_avg_pool2d(a, 1), 1))

        def forward(self, x: Any) -> Any:
            return self.head(self.features(x))

    model = CNN()
    model.eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    act = model.features(paddle.to_tensor(x))
    act.stop_gradient = False
    grad = paddle.grad(model.head(act)[:, TARGET].sum(), act)[0].numpy()
    layer_map = np.einsum("nchw,nc->nhw", act.numpy(), grad.mean(axis=(2, 3)))
    for opset in (9, 11):
        name = f"paddle_cnn_op{opset}"
        OUT.mkdir(parents=True, exist_ok=True)
        spec = [paddle.static.InputSpec([None, 3, 32, 32], "float32", "x")]
        paddle.onnx.export(model, str(OUT / name), input_spec=spec, opset_version=opset)
        exporter = f"paddle2onnx {version('paddle2onnx')} (opset {opset})"
        framework = f"paddlepaddle {version('paddlepaddle')}"
        _record_at_last_relu(name, framework, exporter, "paddle.grad", "NCHW", "channels_first", x, layer_map)


# ---------------------------------------------------------------------- float16 conversions
def fp16_models() -> None:
    """Float16 versions of two exports, as onnxconverter-common makes them for deployment: with
    float32 inputs and outputs (Cast at the edges) and entirely in float16."""
    from importlib.metadata import version

    import onnx
    from onnxconverter_common import float16

    manifest = json.loads((OUT / "manifest.json").read_text())
    for source in ("jax_cnn_op23", "keras_se_op13"):
        model = onnx.load(str(OUT / f"{source}.onnx"))
        data = dict(np.load(OUT / f"{source}.npz"))
        for keep_io in (True, False):
            name = f"{source}_fp16" + ("_io32" if keep_io else "")
            onnx.save(float16.convert_float_to_float16(model, keep_io_types=keep_io), str(OUT / f"{name}.onnx"))
            entry = dict(manifest[source])
            entry["exporter"] += f", onnxconverter-common {version('onnxconverter-common')} float16"
            entry["precision"] = "fp16, fp32 inputs and outputs" if keep_io else "fp16"
            x = data["x"] if keep_io else data["x"].astype(np.float16)
            _record(name, entry, x=x, cam=data["cam"])


if __name__ == "__main__":
    makers = {"torch": torch_models, "timm": timm_hf_models, "keras": keras_models, "jax": jax_models,
              "paddle": paddle_models, "fp16": fp16_models}  # fmt: skip
    makers[sys.argv[1]]()
