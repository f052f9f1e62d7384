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
           ints: dict[str, list[int]] | None = None, int32: tuple[str, ...] = ()) -> onnx.ModelProto:  # fmt: skip
    inits = [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in weights.items()]
    inits += [numpy_helper.from_array(np.asarray(v, np.int64), k) for k, v in (ints or {}).items()]
    graph = helper.make_graph(
        nodes,
        "task_model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info(k, TensorProto.INT32 if k in int32 else TensorProto.FLOAT, v)
         for k, v in outputs.items()],
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
    """feat -> 1x1 Conv to 3 anchors x (5 + C) -> (N, 3, 5 + C, 64) -> Transpose -> (N, 192, 5 + C)
    -> Sigmoid: "output0", 3 anchors per cell of the 8 x 8 grid as YOLOv5 has."""
    rng = np.random.default_rng(seed)
    nodes, w = _trunk(rng)
    no = 5 + classes
    w["head"] = rng.standard_normal((3 * no, 6, 1, 1))
    n = helper.make_node
    nodes += [n("Conv", ["feat", "head"], ["h"]), n("Reshape", ["h", "flat"], ["r"]),
              n("Transpose", ["r"], ["t"], perm=[0, 1, 3, 2]), n("Reshape", ["t", "rows"], ["t2"]),
              n("Sigmoid", ["t2"], ["output0"])]  # fmt: skip
    return _model(nodes, {"output0": ["N", 192, no]}, w, {"flat": [0, 3, no, -1], "rows": [0, -1, no]})


def yolox_like(classes: int = 3, seed: int = 0) -> onnx.ModelProto:
    """feat -> 1x1 Conv to 5 + C -> (N, 5 + C, 64) -> Transpose -> Sigmoid: "output0" (N, 64, 5 + C),
    one candidate per cell with objectness (YOLOX), and its class names in the metadata."""
    rng = np.random.default_rng(seed)
    nodes, w = _trunk(rng)
    no = 5 + classes
    w["head"] = rng.standard_normal((no, 6, 1, 1))
    n = helper.make_node
    nodes += [n("Conv", ["feat", "head"], ["h"]), n("Reshape", ["h", "flat"], ["r"]),
              n("Transpose", ["r"], ["t"], perm=[0, 2, 1]), n("Sigmoid", ["t"], ["output0"])]  # fmt: skip
    model = _model(nodes, {"output0": ["N", 64, no]}, w, {"flat": [0, no, -1]})
    model.metadata_props.add(key="names", value=str({i: f"class{i}" for i in range(classes)}))
    return model


def separate_channels_first(classes: int = 3, seed: int = 0, trt_boxes: bool = False) -> onnx.ModelProto:
    """"boxes" (N, 64, 4) xyxy (or TensorRT's (N, 64, 1, 4) with ``trt_boxes``) and "scores"
    (N, C, 64), the scores channels first."""
    rng = np.random.default_rng(seed)
    nodes, w = _trunk(rng)
    w["head"] = rng.standard_normal((4 + classes, 6, 1, 1))
    w["scale"] = np.array([4.0])
    n = helper.make_node
    nodes += [n("Conv", ["feat", "head"], ["h"]), n("Reshape", ["h", "flat"], ["r"]),
              n("Split", ["r", "split"], ["b", "s"], axis=1), n("Transpose", ["b"], ["bt"], perm=[0, 2, 1]),
              n("Mul", ["bt", "scale"], ["b2"]), n("Abs", ["b2"], ["b3"]),
              n("Reshape", ["b3", "bshape"], ["boxes"]), n("Sigmoid", ["s"], ["scores"])]  # fmt: skip
    box_shape = [0, 64, 1, 4] if trt_boxes else [0, 64, 4]
    outs: dict[str, list[int | str]] = {"boxes": ["N", *box_shape[1:]], "scores": ["N", classes, 64]}
    return _model(nodes, outs, w, {"flat": [0, 4 + classes, -1], "split": [4, classes], "bshape": box_shape})


def efficient_nms(kept: int = 10, seed: int = 0) -> onnx.ModelProto:
    """TensorRT EfficientNMS's outputs: "num_dets" (N, 1) int32, "det_boxes" (N, D, 4),
    "det_scores" (N, D) (sigmoid) and "det_classes" (N, D) int32 (0, 1, 2, 0, ...); a linear map
    of the features stands in for the NMS."""
    rng = np.random.default_rng(seed)
    nodes, w = _trunk(rng)
    w["head"] = rng.standard_normal((5, 6, 1, 1))
    w["pick"] = rng.standard_normal((64, kept)) * 0.3
    w["scale"] = np.array([4.0])
    n = helper.make_node
    nodes += [n("Conv", ["feat", "head"], ["h"]), n("Reshape", ["h", "flat"], ["r"]),
              n("MatMul", ["r", "pick"], ["m"]), n("Transpose", ["m"], ["t"], perm=[0, 2, 1]),
              n("Split", ["t", "split"], ["b", "s"], axis=2), n("Mul", ["b", "scale"], ["b2"]),
              n("Abs", ["b2"], ["det_boxes"]), n("Sigmoid", ["s"], ["s1"]),
              n("Squeeze", ["s1", "last"], ["det_scores"]),
              n("Shape", ["det_scores"], ["shape"]), n("Constant", [], ["classes"], value=helper.make_tensor(
                  "c", TensorProto.INT32, [kept], [i % 3 for i in range(kept)])),
              n("Expand", ["classes", "shape"], ["det_classes"]),
              n("Constant", [], ["count"], value=helper.make_tensor("k", TensorProto.INT32, [1, 1], [kept])),
              n("Slice", ["shape", "zero", "one"], ["n"]), n("Concat", ["n", "one"], ["nshape"], axis=0),
              n("Expand", ["count", "nshape"], ["num_dets"])]  # fmt: skip
    ints = {"flat": [0, 5, -1], "split": [4, 1], "last": [2], "zero": [0], "one": [1]}
    outs: dict[str, list[int | str]] = {"num_dets": ["N", 1], "det_boxes": ["N", kept, 4],
                                        "det_scores": ["N", kept], "det_classes": ["N", kept]}  # fmt: skip
    return _model(nodes, outs, w, ints, ("num_dets", "det_classes"))


def transposed(model: onnx.ModelProto, names: list[str] | None = None) -> onnx.ModelProto:
    """``model``'s one output (N, K, A) transposed to (N, A, K), as some exporters write a YOLOv8
    head; ``names``: ultralytics-style ``names`` metadata ({0: 'a', 1: 'b'})."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    (o,) = out.graph.output
    old = o.name
    for node in out.graph.node:
        node.output[:] = [f"{old}_cf" if t == old else t for t in node.output]
    out.graph.node.append(helper.make_node("Transpose", [f"{old}_cf"], [old], perm=[0, 2, 1]))
    dims = o.type.tensor_type.shape.dim
    shape = [d.dim_param or d.dim_value or None for d in dims]
    o.CopyFrom(helper.make_tensor_value_info(old, TensorProto.FLOAT, [shape[0], shape[2], shape[1]]))
    if names is not None:
        out.metadata_props.add(key="names", value=str(dict(enumerate(names))))
    onnx.checker.check_model(out, full_check=True)
    return out


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


def segmenter_nhwc(classes: int = 3, softmax: bool = True, seed: int = 0) -> onnx.ModelProto:
    """A Keras segmenter as tf2onnx writes it: "x" (N, H, W, 3) -> Transpose to NCHW -> Conv 3x3 s2
    -> Relu -> Conv 3x3 s2 -> Relu -> 1x1 Conv -> Transpose back: (N, H/4, W/4, C) -> Softmax over
    the classes (with ``softmax``): "probs"."""
    rng = np.random.default_rng(seed)
    w = {"w1": rng.standard_normal((6, 3, 3, 3)) * 0.5, "b1": rng.standard_normal(6) * 0.1,
         "w2": rng.standard_normal((6, 6, 3, 3)) * 0.5, "head": rng.standard_normal((classes, 6, 1, 1))}  # fmt: skip
    n = helper.make_node
    last = "t" if softmax else "probs"
    nodes = [n("Transpose", ["x"], ["xc"], perm=[0, 3, 1, 2]),
             n("Conv", ["xc", "w1", "b1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]), n("Relu", ["c1"], ["feat"]),
             n("Conv", ["feat", "w2"], ["c2"], strides=[2, 2], pads=[1, 1, 1, 1]), n("Relu", ["c2"], ["feat2"]),
             n("Conv", ["feat2", "head"], ["logits"]),
             n("Transpose", ["logits"], [last], perm=[0, 2, 3, 1])]  # fmt: skip
    if softmax:
        nodes.append(n("Softmax", ["t"], ["probs"], axis=-1))
    side = SIZE // 4
    graph = helper.make_graph(
        nodes, "segmenter_nhwc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", side, side, classes])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in w.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


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
