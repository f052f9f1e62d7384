"""A tiny YOLOv8-like detector built with onnx.helper, for the dimension tests.

Its head is shaped the way the torch exporter writes ultralytics' ``Detect``: every
Reshape target is computed at run time from ``Shape`` -> ``Gather`` -> ``Unsqueeze`` ->
``Concat`` with a ``-1`` for the anchors, so with a dynamic batch ONNX shape inference
cannot size the anchors and the DFL Conv has no static spatial dims.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: regression bins per box side (ultralytics' ``reg_max``)
BINS = 16


def tiny_detector(
    batch: int | str | None = "N",
    size: tuple[int | str, int | str] = (16, 16),
    classes: int = 3,
    channels: int = 4,
    seed: int = 0,
) -> onnx.ModelProto:
    """x (batch, 3, H, W) -> Conv s2 -> Relu ("feat", the layer) -> Conv s2 -> Relu ("feat2");
    per level a 1x1 head of 4·BINS + classes channels, viewed as (N, no, -1) and concatenated
    on the anchors; Split into box and class; DFL: view (N, 4, BINS, A) -> Transpose ->
    Softmax -> Conv with the fixed weight 0..BINS-1 -> view (N, 4, A); Concat with
    Sigmoid(class) -> "boxes" (N, 4 + classes, A).

    ``batch``: a name, a number (-1 and 0 as some exporters write an unknown dim) or None
    (a dim with neither value nor name).
    """
    rng = np.random.default_rng(seed)
    no = 4 * BINS + classes
    weights = {
        "w1": rng.standard_normal((channels, 3, 3, 3)) * 0.5,
        "b1": rng.standard_normal(channels) * 0.1,
        "w2": rng.standard_normal((channels, channels, 3, 3)) * 0.5,
        "b2": rng.standard_normal(channels) * 0.1,
        "h1": rng.standard_normal((no, channels, 1, 1)) * 0.5,
        "h2": rng.standard_normal((no, channels, 1, 1)) * 0.5,
        "dfl": np.arange(BINS).reshape(1, BINS, 1, 1),
    }
    inits = [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in weights.items()]
    ints = {"i0": 0, "i2": 2, "ax0": [0], "no": [no], "four": [4], "bins": [BINS], "m1": [-1]}
    ints["split"] = [4 * BINS, classes]
    inits += [numpy_helper.from_array(np.asarray(v, np.int64), k) for k, v in ints.items()]
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w1", "b1"], ["c1"], name="/model.0/conv/Conv", strides=[2, 2], pads=[1, 1, 1, 1]),
        n("Relu", ["c1"], ["feat"], name="/model.0/act/Relu"),
        n("Conv", ["feat", "w2", "b2"], ["c2"], name="/model.1/conv/Conv", strides=[2, 2], pads=[1, 1, 1, 1]),
        n("Relu", ["c2"], ["feat2"], name="/model.1/act/Relu"),
    ]
    levels = []
    for i, (src, w) in enumerate((("feat", "h1"), ("feat2", "h2"))):
        p = f"/model.22/l{i}"
        nodes += [
            n("Conv", [src, w], [f"{p}/head"], name=f"{p}/Conv"),
            n("Shape", [f"{p}/head"], [f"{p}/shape"], name=f"{p}/Shape"),
            n("Gather", [f"{p}/shape", "i0"], [f"{p}/b"], name=f"{p}/Gather", axis=0),
            n("Unsqueeze", [f"{p}/b", "ax0"], [f"{p}/b1"], name=f"{p}/Unsqueeze"),
            n("Concat", [f"{p}/b1", "no", "m1"], [f"{p}/target"], name=f"{p}/Concat", axis=0),
            n("Reshape", [f"{p}/head", f"{p}/target"], [f"{p}/flat"], name=f"{p}/Reshape"),
        ]
        levels.append(f"{p}/flat")
    d = "/model.22/dfl"
    nodes += [
        n("Concat", levels, ["/model.22/cat"], name="/model.22/Concat", axis=2),
        n("Split", ["/model.22/cat", "split"], ["/model.22/box", "/model.22/cls"], name="/model.22/Split", axis=1),
        n("Shape", ["/model.22/box"], [f"{d}/shape"], name=f"{d}/Shape"),
        n("Gather", [f"{d}/shape", "i0"], [f"{d}/b"], name=f"{d}/Gather", axis=0),
        n("Gather", [f"{d}/shape", "i2"], [f"{d}/a"], name=f"{d}/Gather_1", axis=0),
        n("Unsqueeze", [f"{d}/b", "ax0"], [f"{d}/b1"], name=f"{d}/Unsqueeze"),
        n("Unsqueeze", [f"{d}/a", "ax0"], [f"{d}/a1"], name=f"{d}/Unsqueeze_1"),
        n("Concat", [f"{d}/b1", "four", "bins", f"{d}/a1"], [f"{d}/t1"], name=f"{d}/Concat", axis=0),
        n("Reshape", ["/model.22/box", f"{d}/t1"], [f"{d}/view"], name=f"{d}/Reshape"),
        n("Transpose", [f"{d}/view"], [f"{d}/tr"], name=f"{d}/Transpose", perm=[0, 2, 1, 3]),
        n("Softmax", [f"{d}/tr"], [f"{d}/sm"], name=f"{d}/Softmax", axis=1),
        n("Conv", [f"{d}/sm", "dfl"], [f"{d}/conv"], name=f"{d}/conv/Conv"),
        n("Concat", [f"{d}/b1", "four", f"{d}/a1"], [f"{d}/t2"], name=f"{d}/Concat_1", axis=0),
        n("Reshape", [f"{d}/conv", f"{d}/t2"], [f"{d}/dist"], name=f"{d}/Reshape_1"),
        n("Sigmoid", ["/model.22/cls"], ["/model.22/scores"], name="/model.22/Sigmoid"),
        n("Concat", [f"{d}/dist", "/model.22/scores"], ["boxes"], name="/model.22/Concat_out", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_detector",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, *size])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [batch, 4 + classes, None])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model
