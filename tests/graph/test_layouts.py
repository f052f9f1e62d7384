"""camcore.graph.layouts: the channel axis of every layer, read off the graph.

The oracle for the maps: one function written in two layouts. A convolutional classifier
in NCHW, the same weights written as tf2onnx and jax2onnx write NHWC models (transposes
around each convolution), as a transformer's tokens (N, T, C) with and without a class
token, and as Swin's (N, h, w, C) grid, must give the same Grad-CAM map at the same layer.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from camcore import GradCAM
from camcore.graph import candidate_layers, default_layer, prepare_model
from camcore.graph.layers import Layer, input_size
from camcore.graph.layouts import layer_layouts

H = W = 32
C_IN, C, CLASSES = 3, 6, 4
_rng = np.random.default_rng(7)
CONV = _rng.standard_normal((C, C_IN, 8, 8)).astype(np.float32) * 0.2  # an 8 x 8 patch embedding
FC = _rng.standard_normal((C, CLASSES)).astype(np.float32)
CLS = _rng.standard_normal((1, 1, C)).astype(np.float32)


def _model(nodes: list[onnx.NodeProto], x_shape: list, extra: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    weights = {"w": CONV, "fc": FC, **(extra or {})}
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _const(name: str, values: list[int]) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(values, np.int64)))


def nchw() -> onnx.ModelProto:
    """x -> Conv (stride 8) -> feat (N, C, 4, 4) -> GlobalAveragePool -> Flatten -> MatMul."""
    return _model(
        [
            helper.make_node("Conv", ["x", "w"], ["conv"], strides=[8, 8]),
            helper.make_node("Relu", ["conv"], ["feat"]),
            helper.make_node("GlobalAveragePool", ["feat"], ["g"]),
            helper.make_node("Flatten", ["g"], ["flat"]),
            helper.make_node("MatMul", ["flat", "fc"], ["logits"]),
        ],
        ["N", C_IN, H, W],
    )


def nhwc() -> onnx.ModelProto:
    """The same in NHWC, as tf2onnx writes it: Transpose -> Conv -> Transpose; Keras'
    GlobalAveragePooling2D as ReduceMean over axes 1 and 2."""
    return _model(
        [
            helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 1, 2]),
            helper.make_node("Conv", ["xt", "w"], ["conv_nchw"], strides=[8, 8]),
            helper.make_node("Transpose", ["conv_nchw"], ["conv"], perm=[0, 2, 3, 1]),
            helper.make_node("Relu", ["conv"], ["feat"]),  # (N, 4, 4, C)
            helper.make_node("ReduceMean", ["feat"], ["flat"], axes=[1, 2], keepdims=0),
            helper.make_node("MatMul", ["flat", "fc"], ["logits"]),
        ],
        ["N", H, W, C_IN],
    )


def tokens(class_token: bool) -> onnx.ModelProto:
    """The same as a transformer sees it: the patch embedding flattened to (N, 16, C) tokens
    (after a class token, which the pooling leaves out), a LayerNorm-free Relu 'block', the
    mean over the patch tokens."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["conv"], strides=[8, 8]),
        _const("flat_shape", [0, C, -1]),
        helper.make_node("Reshape", ["conv", "flat_shape"], ["seq"]),  # (N, C, 16)
        helper.make_node("Transpose", ["seq"], ["patches"], perm=[0, 2, 1]),  # (N, 16, C)
    ]
    extra = {}
    if class_token:
        extra["cls"] = CLS
        nodes += [
            helper.make_node("Shape", ["patches"], ["pshape"]),
            helper.make_node("Slice", ["pshape", "zero", "one"], ["batch"]),
            helper.make_node("Concat", ["batch", "one", "c_dim"], ["cls_shape"], axis=0),
            helper.make_node("Expand", ["cls", "cls_shape"], ["cls_n"]),
            helper.make_node("Concat", ["cls_n", "patches"], ["all"], axis=1),  # (N, 17, C)
            helper.make_node("Relu", ["all"], ["feat"]),
            helper.make_node("Slice", ["feat", "one", "big", "one"], ["body"]),
            helper.make_node("ReduceMean", ["body"], ["flat"], axes=[1], keepdims=0),
        ]
        extra |= {"zero": np.array([0], np.int64), "one": np.array([1], np.int64),
                  "big": np.array([1 << 30], np.int64), "c_dim": np.array([C], np.int64)}  # fmt: skip
    else:
        nodes += [
            helper.make_node("Relu", ["patches"], ["feat"]),
            helper.make_node("ReduceMean", ["feat"], ["flat"], axes=[1], keepdims=0),
        ]
    nodes.append(helper.make_node("MatMul", ["flat", "fc"], ["logits"]))
    return _model(nodes, ["N", C_IN, H, W], extra)


def swin_grid() -> onnx.ModelProto:
    """Tokens put back on a (N, 4, 4, C) grid, as Swin's stages end: Reshape of (N, 16, C)."""
    return _model(
        [
            helper.make_node("Conv", ["x", "w"], ["conv"], strides=[8, 8]),
            _const("flat_shape", [0, C, -1]),
            helper.make_node("Reshape", ["conv", "flat_shape"], ["seq"]),
            helper.make_node("Transpose", ["seq"], ["patches"], perm=[0, 2, 1]),
            helper.make_node("LayerNormalization", ["patches", "gamma", "beta"], ["normed"], axis=-1),
            _const("grid_shape", [0, 4, 4, C]),
            helper.make_node("Reshape", ["normed", "grid_shape"], ["grid"]),
            helper.make_node("Relu", ["grid"], ["feat"]),  # (N, 4, 4, C)
            helper.make_node("ReduceMean", ["feat"], ["flat"], axes=[1, 2], keepdims=0),
            helper.make_node("MatMul", ["flat", "fc"], ["logits"]),
        ],
        ["N", C_IN, H, W],
        {"gamma": np.ones(C, np.float32), "beta": np.zeros(C, np.float32)},
    )


def _kinds(model: onnx.ModelProto) -> dict[str, str]:
    proto, info = prepare_model(model)
    return dict(layer_layouts(proto, info))


@pytest.mark.parametrize(
    ("build", "want"),
    [
        (nchw, {"conv": "channels_first", "feat": "channels_first", "g": "channels_first"}),
        (nhwc, {"x": "channels_last", "xt": "channels_first", "conv": "channels_last", "feat": "channels_last"}),
        (lambda: tokens(False), {"seq": "channels_first", "patches": "tokens", "feat": "tokens"}),
        (lambda: tokens(True), {"patches": "tokens", "all": "tokens", "feat": "tokens", "body": "tokens"}),
        (swin_grid, {"patches": "tokens", "normed": "tokens", "grid": "channels_last", "feat": "channels_last"}),
    ],
)
def test_the_channel_axis_is_read_off_the_graph(build, want: dict[str, str]) -> None:
    kinds = _kinds(build())
    assert {k: kinds.get(k) for k in want} == want


def test_attention_heads_and_sequence_first_tensors_have_no_layout() -> None:
    """(N, L, heads, d) and (N, heads, L, d) split the channels; (L, N, C) puts the batch second."""
    model = _model(
        [
            helper.make_node("Conv", ["x", "w"], ["conv"], strides=[8, 8]),
            _const("flat_shape", [0, C, -1]),
            helper.make_node("Reshape", ["conv", "flat_shape"], ["seq"]),
            helper.make_node("Transpose", ["seq"], ["patches"], perm=[0, 2, 1]),  # (1, 16, C)
            _const("heads_shape", [0, 16, 2, C // 2]),
            helper.make_node("Reshape", ["patches", "heads_shape"], ["split"]),  # (1, 16, 2, 3)
            helper.make_node("Transpose", ["split"], ["heads"], perm=[0, 2, 1, 3]),  # (1, 2, 16, 3)
            _const("merge_shape", [0, 16, C]),
            helper.make_node("Transpose", ["heads"], ["back"], perm=[0, 2, 1, 3]),
            helper.make_node("Reshape", ["back", "merge_shape"], ["merged"]),
            helper.make_node("Transpose", ["merged"], ["seq_first"], perm=[1, 0, 2]),  # (16, 1, C)
            helper.make_node("Relu", ["seq_first"], ["act"]),
            helper.make_node("ReduceMean", ["act"], ["m"], axes=[0], keepdims=0),  # (1, C)
            helper.make_node("MatMul", ["m", "fc"], ["logits"]),
        ],
        [1, C_IN, H, W],
    )
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 1
    kinds = _kinds(model)
    assert kinds["patches"] == "tokens"
    assert "split" not in kinds and "heads" not in kinds and "back" not in kinds
    assert kinds.get("merged") is None  # the merge is not traced back through the split
    assert "seq_first" not in kinds and "act" not in kinds


@pytest.mark.parametrize(
    ("layer", "hw", "grid", "image"),
    [
        (Layer("f", "n", "Relu", ("N", 64, 7, 7), "channels_first"), (224, 224), (7, 7), True),
        (Layer("f", "n", "Relu", ("N", 7, 7, 768), "channels_last"), (224, 224), (7, 7), True),  # Swin
        (Layer("f", "n", "Add", ("N", 197, 768), "tokens"), (224, 224), (14, 14), True),  # ViT
        (Layer("f", "n", "Relu", ("N", 1, 1, 1000), "channels_last"), (224, 224), (1, 1), False),  # Keras logits
        (Layer("f", "n", "Conv", (1, 1, 4, 8400), "channels_first"), (640, 640), (4, 8400), False),  # YOLOv8 DFL
        (Layer("f", "n", "Conv", (1, 1, 160, 160), "channels_first"), (640, 640), (160, 160), False),  # 1 channel
        (Layer("f", "n", "Relu", ("N", 256, 1, 80), "channels_first"), (48, 320), (1, 80), True),  # text line
        (Layer("f", "n", "Relu", ("N", 256, 80), "channels_first"), (48, 320), (1, 80), True),  # (N, C, L)
        (Layer("f", "n", "Relu", ("N", 64, 2, 80), "channels_first"), (64, 64), (2, 80), False),  # wider than x
        (Layer("f", "n", "Relu", ("N", 64, 16, 2), "channels_first"), (64, 64), (16, 2), False),  # strides 4 vs 32
        (Layer("f", "n", "Relu", ("N", 64, "h", "w"), "channels_first"), (64, 64), ("h", "w"), True),
        (Layer("f", "n", "Relu", ("N", 16, 12, 64), None), (224, 224), None, False),  # heads: no layout
    ],
)
def test_image_grids(layer: Layer, hw, grid, image: bool) -> None:
    assert layer.grid(hw) == grid
    assert layer.is_image_grid(hw) is image


@pytest.mark.parametrize(
    ("build", "layer"),
    [
        (nchw, "feat"),
        (nhwc, "feat"),
        (lambda: tokens(False), "feat"),
        (lambda: tokens(True), "body"),
        (swin_grid, "feat"),
    ],
)
def test_default_layer_is_the_last_grid(build, layer: str) -> None:
    proto, info = prepare_model(build())
    found = default_layer(candidate_layers(proto, info, "logits"), input_size(proto, info), "logits")
    assert found is not None and found.tensor == layer


def _image(nhwc_input: bool) -> np.ndarray:
    x = np.random.default_rng(3).standard_normal((2, C_IN, H, W)).astype(np.float32)
    return x.transpose(0, 2, 3, 1).copy() if nhwc_input else x


@pytest.mark.parametrize(
    ("build", "nhwc_input"),
    [(nhwc, True), (lambda: tokens(False), False), (lambda: tokens(True), False)],
)
def test_one_function_in_another_layout_gives_the_same_map(build, nhwc_input: bool) -> None:
    reference = GradCAM(nchw(), ["feat"])(_image(False), None)
    cam = GradCAM(build(), None)
    got = cam(_image(nhwc_input), None)
    assert got.shape == (2, H, W)
    np.testing.assert_allclose(got, reference, atol=2e-5)
    assert np.ptp(reference) > 0.5  # a real map, not a constant one


def test_a_swin_grid_gives_the_map_of_its_nchw_twin() -> None:
    """The Swin-style model normalises each cell over its channels (LayerNormalization), so its
    twin in NCHW does the same with ReduceMean over axis 1."""
    twin = _model(
        [
            helper.make_node("Conv", ["x", "w"], ["conv"], strides=[8, 8]),
            helper.make_node("ReduceMean", ["conv"], ["mu"], axes=[1], keepdims=1),
            helper.make_node("Sub", ["conv", "mu"], ["d"]),
            helper.make_node("Mul", ["d", "d"], ["d2"]),
            helper.make_node("ReduceMean", ["d2"], ["var"], axes=[1], keepdims=1),
            helper.make_node("Add", ["var", "eps"], ["ve"]),
            helper.make_node("Sqrt", ["ve"], ["sd"]),
            helper.make_node("Div", ["d", "sd"], ["normed"]),
            helper.make_node("Relu", ["normed"], ["feat"]),
            helper.make_node("GlobalAveragePool", ["feat"], ["g"]),
            helper.make_node("Flatten", ["g"], ["flat"]),
            helper.make_node("MatMul", ["flat", "fc"], ["logits"]),
        ],
        ["N", C_IN, H, W],
        {"eps": np.array(1e-5, np.float32)},
    )
    x = _image(False)
    np.testing.assert_allclose(GradCAM(swin_grid(), None)(x, None), GradCAM(twin, ["feat"])(x, None), atol=2e-5)


def vit_head() -> onnx.ModelProto:
    """A class token, one attention (q = tW, softmax(q tᵀ) t), a residual, LayerNorm, and a head
    that reads the class token only (``Gather`` axis 1, index 0), as torchvision's ViT does."""
    return _model(
        [
            helper.make_node("Conv", ["x", "w"], ["conv"], strides=[8, 8]),
            _const("flat_shape", [0, C, -1]),
            helper.make_node("Reshape", ["conv", "flat_shape"], ["seq"]),
            helper.make_node("Transpose", ["seq"], ["patches"], perm=[0, 2, 1]),
            helper.make_node("Concat", ["cls", "patches"], ["t"], axis=1),  # (1, 17, C)
            helper.make_node("MatMul", ["t", "wq"], ["q"]),
            helper.make_node("Transpose", ["t"], ["t_t"], perm=[0, 2, 1]),  # (1, C, 17): not a text line
            helper.make_node("MatMul", ["q", "t_t"], ["scores"]),
            helper.make_node("Softmax", ["scores"], ["attn"], axis=-1),
            helper.make_node("MatMul", ["attn", "t"], ["mixed"]),
            helper.make_node("Add", ["t", "mixed"], ["res"]),
            helper.make_node("LayerNormalization", ["res", "gamma", "beta"], ["normed"], axis=-1),
            helper.make_node("Gather", ["normed", "zero"], ["cls_out"], axis=1),  # (1, C)
            helper.make_node("MatMul", ["cls_out", "fc"], ["logits"]),
        ],
        [1, C_IN, H, W],
        {
            "cls": CLS,
            "wq": np.eye(C, dtype=np.float32),
            "zero": np.array(0, np.int64),
            "gamma": np.ones(C, np.float32),
            "beta": np.zeros(C, np.float32),
        },
    )


def test_a_class_token_head_moves_the_default_before_the_last_mixing() -> None:
    """After the last mixing, only the class token reaches the head: its patch tokens get no
    gradient. The default is the last tensor before it (torchvision ViT: the last block's ln_1)."""
    from camcore.graph.layouts import class_token_readers

    model = vit_head()
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 1
    proto, info = prepare_model(model)
    layers = {c.tensor: c for c in candidate_layers(proto, info, "logits")}
    assert class_token_readers(proto, info) == {"normed", "res", "mixed", "attn", "scores", "q"}
    assert layers["normed"].class_token_only and not layers["t"].class_token_only
    assert not layers["t_t"].is_image_grid((H, W))  # 17 tokens transposed are no row of a 32-wide image
    found = default_layer(list(layers.values()), input_size(proto, info), "logits")
    assert found is not None and found.tensor == "t"  # the keys and values: where the tokens mix
    cam = GradCAM(model, None)
    got = cam(_image(False)[:1], None)
    assert got.shape == (1, H, W) and np.ptp(got) > 0.5


def test_a_segmenter_defaults_to_the_features_before_its_per_class_convolution() -> None:
    """x -> Conv -> feat -> Conv (per-class logits, 4 x 4) -> Resize -> (N, classes, 32, 32): the
    logits reach the output through no learned op, so the default is the decoder's features."""
    classes = np.random.default_rng(2).standard_normal((CLASSES, C, 1, 1)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["conv"], strides=[8, 8]),
            helper.make_node("Relu", ["conv"], ["feat"]),
            helper.make_node("Conv", ["feat", "cls_w"], ["logits_small"]),
            helper.make_node("Resize", ["logits_small", "", "scales"], ["out"], mode="linear"),
        ],
        "seg",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", C_IN, H, W])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", CLASSES, H, W])],
        [
            numpy_helper.from_array(CONV, "w"),
            numpy_helper.from_array(classes, "cls_w"),
            numpy_helper.from_array(np.array([1, 1, 8, 8], np.float32), "scales"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    proto, info = prepare_model(model)
    layers = {c.tensor: c for c in candidate_layers(proto, info, "out")}
    assert not layers["logits_small"].feeds_weights and layers["feat"].feeds_weights
    found = default_layer(list(layers.values()), input_size(proto, info), "out")
    assert found is not None and found.tensor == "feat"


def test_deep_feature_factorization_reads_the_layers_layout() -> None:
    """DFF arranges its layer as the CAMs do: the NHWC twin factorises to the same concepts."""
    from camcore import DeepFeatureFactorization

    want = DeepFeatureFactorization(nchw(), "feat")(_image(False), n_components=2)
    got = DeepFeatureFactorization(nhwc(), "feat")(_image(True), n_components=2)
    assert got[1].shape == want[1].shape == (2, 2, H, W)
    np.testing.assert_allclose(got[1], want[1], atol=1e-4)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-5)
