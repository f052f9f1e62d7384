"""Tiny ONNX classifiers built with onnx.helper, for API and CLI tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def tiny_classifier(
    opset: int = 17,
    classes: int = 5,
    channels: int = 4,
    size: int = 8,
    seed: int = 0,
    dynamic_spatial: bool = False,
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """x (N,3,S,S) -> Conv3x3 -> Relu ("feat") -> GlobalAveragePool -> Flatten -> Gemm -> logits."""
    rng = np.random.default_rng(seed)
    w = {
        "conv_w": rng.standard_normal((channels, 3, 3, 3)).astype(np.float32) * 0.5,
        "conv_b": rng.standard_normal(channels).astype(np.float32) * 0.1,
        "fc_w": rng.standard_normal((classes, channels)).astype(np.float32),
        "fc_b": rng.standard_normal(classes).astype(np.float32) * 0.1,
    }
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["feat"], name="relu"),
        helper.make_node("GlobalAveragePool", ["feat"], ["pooled"], name="gap"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
    ]
    spatial: list[int | str] = ["H", "W"] if dynamic_spatial else [size, size]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, *spatial])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        [numpy_helper.from_array(v, k) for k, v in w.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7 if opset < 15 else 8
    onnx.checker.check_model(model, full_check=True)
    return model, w


def reference_gradcam(features: np.ndarray, fc_w: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Grad-CAM of the tiny classifier by hand: dlogit_k/dfeat_c = fc_w[k, c] / (H·W)."""
    h, w = features.shape[2:]
    weights = fc_w[classes] / (h * w)  # (N, C): spatial mean of a constant gradient
    raw = np.einsum("nc,nchw->nhw", weights, features)
    raw = np.maximum(raw, 0)
    out = []
    for m in raw:
        m = m - m.min()
        out.append(m / (1e-7 + m.max()))
    return np.asarray(out, np.float32)


def tiny_nhwc_classifier(classes: int = 5, channels: int = 4, height: int = 10, width: int = 8, seed: int = 0
                         ) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:  # fmt: skip
    """The tiny classifier with an NHWC image input, as tf2onnx exports Keras models:
    x (N,H,W,3) -> Transpose(0,3,1,2) -> Conv3x3 -> Relu ("feat", NCHW) -> GAP -> Flatten -> Gemm."""
    model, w = tiny_classifier(classes=classes, channels=channels, seed=seed)
    graph = model.graph
    graph.node.insert(0, helper.make_node("Transpose", ["x_nhwc"], ["x"], name="to_nchw", perm=[0, 3, 1, 2]))
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info("x_nhwc", TensorProto.FLOAT, ["N", height, width, 3]))
    onnx.checker.check_model(model, full_check=True)
    return model, w
