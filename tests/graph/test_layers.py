"""camcore.graph.layers: resolving layer names, listing the candidate layers, the default layer."""

from __future__ import annotations

import onnx
import onnx.parser
import pytest

from camcore.errors import UnknownLayerError
from camcore.graph import Layer, candidate_layers, default_layer, resolve_layers
from camcore.graph.shapes import infer_tensor_info

#: x -> conv -> feat -> pooled -> shifted -> g (1 x 1) -> flat -> logits, with a side output
#: ``aux`` from ``feat``, an int64 shape tensor, and a rank-4 tensor built from constants only.
BRANCHY = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N,3,8,8] x) => (float[N,5] logits, float[N,4,8,8] aux) {
  w = Constant<value = float[4,3,1,1] {1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1}>()
  conv = Conv<pads = [0, 0, 0, 0]>(x, w)
  feat = Relu(conv)
  shp = Shape(feat)
  aux = Sigmoid(feat)
  pooled = MaxPool<kernel_shape = [2, 2], strides = [2, 2]>(feat)
  c = Constant<value = float[1,4,1,1] {0.1, 0.2, 0.3, 0.4}>()
  cc = Mul(c, c)
  shifted = Add(pooled, cc)
  g = GlobalAveragePool(shifted)
  flat = Flatten(g)
  fc = Constant<value = float[4,5] {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}>()
  logits = MatMul(flat, fc)
}"""


@pytest.fixture(scope="module")
def branchy() -> tuple[onnx.ModelProto, dict]:
    model = onnx.parser.parse_model(BRANCHY)
    for i, node in enumerate(model.graph.node):
        node.name = f"node_{i}_{node.op_type.lower()}"
    return model, infer_tensor_info(model)


def test_resolve_tensor_node_and_input_names(branchy) -> None:
    model, _ = branchy
    relu = next(n.name for n in model.graph.node if n.op_type == "Relu")
    assert relu == "node_2_relu"
    assert resolve_layers(model, ["feat", relu, "x", "pooled"]) == ["feat", "feat", "x", "pooled"]
    assert resolve_layers(model, []) == []


def test_weights_are_not_layers() -> None:
    text = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N,3] x) => (float[N,2] y) <float[3,2] w = {1, 2, 3, 4, 5, 6}> { y = MatMul(x, w) }"""
    model = onnx.parser.parse_model(text)
    model.graph.node[0].name = "fc"
    with pytest.raises(UnknownLayerError, match=r"layer 'w' is a weight \(an initializer of node 'fc'\)"):
        resolve_layers(model, ["w"])
    assert resolve_layers(model, ["x", "fc"]) == ["x", "y"]


def test_node_name_maps_to_the_first_output() -> None:
    text = """<ir_version: 8, opset_import: ["" : 13]>
g (float[2,6] x) => (float[2,3] a, float[2,3] b) { a, b = Split<axis = 1>(x) }"""
    model = onnx.parser.parse_model(text)
    model.graph.node[0].name = "split"
    assert resolve_layers(model, ["split", "b"]) == ["a", "b"]


def test_unknown_layer_suggests_close_names(branchy) -> None:
    model, _ = branchy
    with pytest.raises(
        UnknownLayerError, match=r"unknown layer 'faet': no tensor or node has that name; closest: .*feat"
    ):
        resolve_layers(model, ["feat", "faet"])
    with pytest.raises(UnknownLayerError, match=r"closest: .*node_2_relu"):
        resolve_layers(model, ["node_2_rleu"])
    with pytest.raises(UnknownLayerError, match="run `camcore layers MODEL` to list them"):
        resolve_layers(model, ["qqqqqqqqqqqqqqqqqqqqqq"])


def test_candidates_are_float_rank3_tensors_between_inputs_and_output(branchy) -> None:
    model, info = branchy
    layers = candidate_layers(model, info, "logits")
    # graph order; not the int64 shape, the rank-2 flat, the side output, nor the constants' cc
    assert [c.tensor for c in layers] == ["conv", "feat", "pooled", "shifted", "g"]
    by_name = {c.tensor: c for c in layers}
    assert by_name["feat"] == Layer("feat", "node_2_relu", "Relu", ("N", 4, 8, 8), "channels_first")
    assert by_name["pooled"].shape == ("N", 4, 4, 4) and by_name["pooled"].op_type == "MaxPool"
    assert by_name["g"].shape == ("N", 4, 1, 1)
    # another output has its own candidates: what leads to it
    assert [c.tensor for c in candidate_layers(model, info, "aux")] == ["conv", "feat", "aux"]


def test_default_layer_is_the_last_with_spatial_extent(branchy) -> None:
    model, info = branchy
    layer = default_layer(candidate_layers(model, info, "logits"), (8, 8), "logits")
    assert layer is not None and layer.tensor == "shifted"  # g is 1 x 1: no spatial extent
    # aux = Sigmoid(Relu(conv)): no learned op after any of them, as a segmenter's per-class map
    assert default_layer(candidate_layers(model, info, "aux"), (8, 8), "aux") is None
    assert default_layer([]) is None
    assert default_layer([Layer("g", "n", "GlobalAveragePool", ("N", 4, 1, 1), "channels_first")]) is None
    assert default_layer([Layer("f", "n", "Relu", ("N", 4, 7, 7))]) is None  # no layout shown: not a grid


@pytest.mark.parametrize(
    ("shape", "spatial"),
    [
        (("N", 4, 7, 7), True),
        (("N", 4, 2, 1), True),
        (("N", 4, 1, 1), False),
        (("N", 4, 1, "W"), True),  # symbolic dims count
        (("N", 4, "H", "W"), True),
        (("N", 4, None, 1), True),
        (("N", 4, 7), True),  # (N, C, L): a row of the image
        (("N", 4, 7, 7, 7), False),
        (None, False),
    ],
)
def test_channels_first_grids_without_an_input_size(shape, spatial: bool) -> None:
    assert Layer("t", "n", "Relu", shape, "channels_first").is_image_grid() is spatial


def test_a_detectors_default_layers_are_the_features_its_heads_read() -> None:
    """tiny_detector: one 1x1 head per scale, on feat (8 x 8) and feat2 (4 x 4); the DFL decoder
    after them (a fixed convolution over Softmax bins) is no learned op."""
    from camcore.graph import prepare_model
    from camcore.graph.layers import default_layers, feeds_weights
    from tests.detector_models import tiny_detector

    model, info = prepare_model(tiny_detector())
    assert [layer.tensor for layer in default_layers(model, info, "boxes")] == ["feat", "feat2"]
    after = feeds_weights(model, "boxes")
    assert "feat2" in after and "/model.22/l1/head" not in after and "/model.22/dfl/sm" not in after
