"""Tiny models of each task's output layout, built with onnx.helper (random weights): a
YOLOv5-style head (N, A, 5 + C), separate boxes and scores, an NMS-included (N, D, 6), a
segmenter (N, C, H/4, W/4) (optionally resized back to H x W) and a head of any shape
(a regressor (N, 1), a classifier (N, K), an odd (N, 3, 5))."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SIZE = 16


def _model(nodes: list[onnx.NodeProto], outputs: dict[str, list[int | str]], weights: dict[str, np.ndarray],
           ints: dict[str, list[int]] | None = None) -> onnx.ModelProto:  # fmt: skip
    inits = [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in weights.items()]
    inits += [numpy_helper.from_array(np.asarray(v, np.int64), k) for k, v in (ints or {}).items()]
    graph = helper.make_graph(
        nodes,
        "task_model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in outputs.items()],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _trunk(rng: np.random.Generator, channels: int = 6) -> tuple[list[onnx.NodeProto], dict[str, np.ndarray]]:
    """x -> Conv 3x3 s2 -> Relu ("feat", (N, channels, 8, 8))."""
    w = {"w1": rng.standard_normal((channels, 3, 3, 3)) * 0.5, "b1": rng.standard_normal(channels) * 0.1}
    n = helper.make_node
    return [n("Conv", ["x", "w1", "b1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]), n("Relu", ["c1"], ["feat"])], w


def yolov5_like(classes: int = 3, seed: int = 0) -> onnx.ModelProto:
    """feat -> 1x1 Conv to 5 + C -> (N, 5 + C, 64) -> Transpose -> Sigmoid: "output0" (N, 64, 5 + C)."""
    rng = np.random.default_rng(seed)
    nodes, w = _trunk(rng)
    no = 5 + classes
    w["head"] = rng.standard_normal((no, 6, 1, 1))
    n = helper.make_node
    nodes += [n("Conv", ["feat", "head"], ["h"]), n("Reshape", ["h", "flat"], ["r"]),
              n("Transpose", ["r"], ["t"], perm=[0, 2, 1]), n("Sigmoid", ["t"], ["output0"])]  # fmt: skip
    return _model(nodes, {"output0": ["N", 64, no]}, w, {"flat": [0, no, -1]})


def separate_boxes_scores(classes: int = 3, seed: int = 0) -> onnx.ModelProto:
    """Two outputs, "boxes" (N, 64, 4) xyxy first, then "scores" (N, 64, C) (sigmoid)."""
    rng = np.random.default_rng(seed)
    nodes, w = _trunk(rng)
    w["head"] = rng.standard_normal((4 + classes, 6, 1, 1))
    w["scale"] = np.array([4.0])
    n = helper.make_node
    nodes += [n("Conv", ["feat", "head"], ["h"]), n("Reshape", ["h", "flat"], ["r"]),
              n("Transpose", ["r"], ["t"], perm=[0, 2, 1]),
              n("Split", ["t", "split"], ["b", "s"], axis=2),
              n("Mul", ["b", "scale"], ["b2"]), n("Abs", ["b2"], ["boxes"]),
              n("Sigmoid", ["s"], ["scores"])]  # fmt: skip
    outs: dict[str, list[int | str]] = {"boxes": ["N", 64, 4], "scores": ["N", 64, classes]}
    return _model(nodes, outs, w, {"flat": [0, 4 + classes, -1], "split": [4, classes]})


def nms_included(kept: int = 10, seed: int = 0) -> onnx.ModelProto:
    """The output "dets" (N, D, 6): x0, y0, x1, y1, score (sigmoid), class (0, 1, 2, 0, ...), as an export
    with NMS in the graph writes (a linear map of the features stands in for the NMS)."""
    rng = np.random.default_rng(seed)
    nodes, w = _trunk(rng)
    w["head"] = rng.standard_normal((5, 6, 1, 1))
    w["pick"] = rng.standard_normal((64, kept)) * 0.3
    w["zero"] = np.zeros(1)
    w["classes"] = (np.arange(kept) % 3).reshape(kept, 1)
    n = helper.make_node
    nodes += [n("Conv", ["feat", "head"], ["h"]), n("Reshape", ["h", "flat"], ["r"]),
              n("MatMul", ["r", "pick"], ["m"]), n("Transpose", ["m"], ["t"], perm=[0, 2, 1]),
              n("Split", ["t", "split"], ["b", "s"], axis=2), n("Sigmoid", ["s"], ["score"]),
              n("Mul", ["s", "zero"], ["s0"]), n("Add", ["s0", "classes"], ["cls"]),
              n("Concat", ["b", "score", "cls"], ["dets"], axis=2)]  # fmt: skip
    return _model(nodes, {"dets": ["N", kept, 6]}, w, {"flat": [0, 5, -1], "split": [4, 1]})


def segmenter(classes: int = 3, resize: bool = False, seed: int = 0) -> onnx.ModelProto:
    """feat -> Conv 3x3 s2 -> Relu -> 1x1 Conv: "logits" (N, C, H/4, W/4), Resize x4 to H x W with ``resize``."""
    rng = np.random.default_rng(seed)
    nodes, w = _trunk(rng)
    w["w2"] = rng.standard_normal((6, 6, 3, 3)) * 0.5
    w["head"] = rng.standard_normal((classes, 6, 1, 1))
    w["scales"] = np.array([1.0, 1.0, 4.0, 4.0])
    n = helper.make_node
    last = "logits" if not resize else "small"
    nodes += [n("Conv", ["feat", "w2"], ["c2"], strides=[2, 2], pads=[1, 1, 1, 1]), n("Relu", ["c2"], ["feat2"]),
              n("Conv", ["feat2", "head"], [last])]  # fmt: skip
    side = SIZE // 4
    if resize:
        nodes.append(n("Resize", ["small", "", "scales"], ["logits"], mode="linear"))
        side = SIZE
    return _model(nodes, {"logits": ["N", classes, side, side]}, w)


def head(shape: tuple[int, ...], seed: int = 0) -> onnx.ModelProto:
    """feat -> GlobalAveragePool -> Flatten -> Gemm -> Reshape: "y" (N, *shape) (a regressor for (1,))."""
    rng = np.random.default_rng(seed)
    nodes, w = _trunk(rng)
    size = int(np.prod(shape))
    w["fc"] = rng.standard_normal((size, 6))
    w["fb"] = rng.standard_normal(size) * 0.1
    n = helper.make_node
    nodes += [n("GlobalAveragePool", ["feat"], ["g"]), n("Flatten", ["g"], ["f"]),
              n("Gemm", ["f", "fc", "fb"], ["gm"], transB=1), n("Reshape", ["gm", "shape"], ["y"])]  # fmt: skip
    return _model(nodes, {"y": ["N", *shape]}, w, {"shape": [0, *shape]})
