"""int8 QDQ models from onnxruntime's ``quantize_static``: explained with a straight-through
gradient through QuantizeLinear/DequantizeLinear, against the same graph with every Q/DQ pair
replaced by Identity (or by ``X + (DQ(Q(X)) - X)`` frozen, which keeps every value)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import camcore
from camcore.errors import CamcoreError, UnsupportedOpError
from camcore.graph import augment
from camcore.graph.layers import candidate_layers
from camcore.graph.shapes import infer_tensor_info

quantization = pytest.importorskip("onnxruntime.quantization")

_CPU = ["CPUExecutionProvider"]


def conv_net(seed: int = 0, opset: int = 13) -> onnx.ModelProto:
    """x (1,3,32,32) -> Conv -> Relu ("relu1") -> Conv/2 -> Relu ("relu2") -> GAP -> Flatten -> Gemm -> logits."""
    rng = np.random.default_rng(seed)
    w = {
        "c1_w": rng.standard_normal((8, 3, 3, 3)) * 0.3,
        "c1_b": rng.standard_normal(8) * 0.1,
        "c2_w": rng.standard_normal((8, 8, 3, 3)) * 0.2,
        "c2_b": rng.standard_normal(8) * 0.1,
        "fc_w": rng.standard_normal((5, 8)),
        "fc_b": rng.standard_normal(5) * 0.1,
    }
    nodes = [
        helper.make_node("Conv", ["x", "c1_w", "c1_b"], ["conv1"], name="conv1", pads=[1] * 4),
        helper.make_node("Relu", ["conv1"], ["relu1"], name="relu1"),
        helper.make_node("Conv", ["relu1", "c2_w", "c2_b"], ["conv2"], name="conv2", pads=[1] * 4, strides=[2, 2]),
        helper.make_node("Relu", ["conv2"], ["relu2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["relu2"], ["pooled"], name="gap"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "convnet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in w.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7 if opset < 15 else 10
    onnx.checker.check_model(model, full_check=True)
    return model


class _Calibration(quantization.CalibrationDataReader):  # type: ignore[misc]
    def __init__(self) -> None:
        rng = np.random.default_rng(1)
        self._feeds = iter([{"x": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(4)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def quantized(
    tmp: Path, fmt: str = "QDQ", per_channel: bool = False, keep: bool = False, opset: int = 13, act: str = "QUInt8"
) -> onnx.ModelProto:
    """The conv net through ``quantize_static``; ``keep`` keeps the Relus (by default the
    quantizer folds them into the Q/DQ pair after the Conv, whose output takes the Relu's name)."""
    src, dst = tmp / f"float{opset}.onnx", tmp / f"q_{fmt}_{per_channel}_{keep}_{opset}_{act}.onnx"
    onnx.save(conv_net(opset=opset), src)
    quantization.quantize_static(
        str(src),
        str(dst),
        _Calibration(),
        quant_format=getattr(quantization.QuantFormat, fmt),
        per_channel=per_channel,
        activation_type=getattr(quantization.QuantType, act),
        weight_type=quantization.QuantType.QInt8,
        extra_options={"QDQKeepRemovableActivations": keep},
    )
    return onnx.load(dst)


VARIANTS = [(False, False, 13, "QUInt8"), (True, False, 13, "QUInt8"), (False, True, 13, "QUInt8"),
            (True, True, 13, "QUInt8"), (True, False, 21, "QInt8")]  # fmt: skip
IDS = ["per-tensor", "per-channel", "per-tensor-relu-kept", "per-channel-relu-kept", "per-channel-int8-op21"]


@pytest.fixture(scope="module", params=VARIANTS, ids=IDS)
def qdq(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> onnx.ModelProto:
    per_channel, keep, opset, act = request.param
    return quantized(tmp_path_factory.mktemp("qdq"), per_channel=per_channel, keep=keep, opset=opset, act=act)


def _image(seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 3, 32, 32)).astype(np.float32)


def _pairs(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, onnx.NodeProto]]:
    """Every activation QuantizeLinear with the DequantizeLinear reading it."""
    qs = {n.output[0]: n for n in model.graph.node if n.op_type == "QuantizeLinear"}
    return [(qs[n.input[0]], n) for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in qs]


def without_pairs(model: onnx.ModelProto, frozen: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """``model`` with every Q -> DQ pair replaced by ``Identity(X)``, or with ``frozen`` (DQ output
    -> DQ(Q(X)) - X) by ``Add(X, offset)``: the same values, a gradient of one. Weights keep their
    DequantizeLinear (the same dequantized weights); tensor names are kept."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    for q, dq in _pairs(model):
        y, x = dq.output[0], q.input[0]
        index = [n.output[0] for n in g.node].index(y)
        if frozen is None:
            new = helper.make_node("Identity", [x], [y], name=f"{y}_identity")
        else:
            offset = f"{y}_offset"
            g.initializer.append(numpy_helper.from_array(frozen[y], offset))
            new = helper.make_node("Add", [x, offset], [y], name=f"{y}_frozen")
        g.node.remove(g.node[index])
        g.node.insert(index, new)
    for q, _ in _pairs(model):
        g.node.remove(next(n for n in g.node if n.output[0] == q.output[0]))
    onnx.checker.check_model(out, full_check=True)
    return out


def _session(model: onnx.ModelProto, optimize: bool = True) -> ort.InferenceSession:
    """``optimize=False`` for the frozen-offset oracle: onnxruntime would fuse its Add into the
    Conv before it, rounding ``X + (0 - X)`` away from 0."""
    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=_CPU)


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], names: list[str], optimize: bool = True
         ) -> list[np.ndarray]:  # fmt: skip
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names if n not in known)
    return _session(probe, optimize).run(names, feeds)


def _gradients(model: onnx.ModelProto, layers: list[str], x: np.ndarray, cls: int, optimize: bool = True
               ) -> dict[str, np.ndarray]:  # fmt: skip
    aug = augment(model, layers)
    sess = _session(aug.model, optimize)
    names = [aug.gradient_outputs[t] for t in layers]
    got = sess.run(names, {"x": x, aug.seed_input: np.array([cls], np.int64)})
    return dict(zip(layers, got))


def test_gradcam_default_layer_explains_the_qdq_model(qdq: onnx.ModelProto) -> None:
    """Finite, non-constant maps, close to the float model's (the quantized model is explained,
    not the float one: they differ by the rounding of activations and weights)."""
    cam, reference = camcore.GradCAM(qdq), camcore.GradCAM(conv_net())
    for seed in range(3):
        maps = cam(_image(seed))
        assert maps.shape == (1, 32, 32)
        assert np.isfinite(maps).all() and maps.std() > 0.01
        assert np.corrcoef(maps.ravel(), reference(_image(seed)).ravel())[0, 1] > 0.99
    (layer,) = cam.target_layers
    assert cam.activations[layer].dtype == np.float32 and np.abs(cam.gradients[layer]).max() > 0


def test_default_layer_corresponds_to_the_float_models(qdq: onnx.ModelProto) -> None:
    """The float model's default is relu2; the QDQ model's is relu2 itself where the Relu is kept,
    and where it was folded (relu2 names the Conv output) the DequantizeLinear after it, which
    holds the activation: relu(conv2) up to a rounding step."""
    info = infer_tensor_info(qdq)
    (chosen,) = augment(qdq).target_layers
    assert augment(conv_net()).target_layers == ["relu2"]
    kept = any(n.op_type == "Relu" for n in qdq.graph.node)
    x = _image()
    (want,) = _run(conv_net(), {"x": x}, ["relu2"])
    (got,) = _run(qdq, {"x": x}, [chosen])
    if kept:
        assert chosen == "relu2"
    else:
        producer = next(n for n in qdq.graph.node if chosen in n.output)
        assert producer.op_type == "DequantizeLinear" and producer.input[0] == "relu2_QuantizeLinear_Output"
    assert got.min() >= 0 and np.abs(got - want).max() < 0.1 * want.max()
    # no layer is a quantized integer, and each Q/DQ pair is listed once
    layers = candidate_layers(qdq, info, "logits")
    assert all(info[c.tensor].elem_type == TensorProto.FLOAT for c in layers)
    assert not {c.op_type for c in layers} & {"QuantizeLinear"}
    q_outputs = {n.output[0] for n in qdq.graph.node if n.op_type == "QuantizeLinear"}
    assert not q_outputs & {c.tensor for c in layers}
    float_layers = [c.tensor for c in candidate_layers(conv_net(), infer_tensor_info(conv_net()), "logits")]
    folded = ["relu1_DequantizeLinear_Output", "relu2_DequantizeLinear_Output", "pooled"]
    assert [c.tensor for c in layers] == (float_layers if kept else folded)


def test_gradient_equals_the_model_with_pairs_replaced_by_identity(qdq: onnx.ModelProto) -> None:
    """Straight through: at the default layer everything after is linear, so the gradient is the
    Identity model's to float rounding."""
    x = _image()
    (layer,) = augment(qdq).target_layers
    for cls in (0, 3):
        got = _gradients(qdq, [layer], x, cls)[layer]
        want = _gradients(without_pairs(qdq), [layer], x, cls)[layer]
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
        assert np.abs(got).max() > 0


def test_gradient_at_every_layer_equals_the_frozen_offset_model(qdq: onnx.ModelProto) -> None:
    """Through Relus the gradient depends on the values: replacing each pair by
    ``X + (DQ(Q(X)) - X)``, the offset frozen at this input, keeps every value (zeros exactly,
    so Relu masks agree) and has a gradient of one, the straight-through estimator's definition."""
    x = _image()
    info = infer_tensor_info(qdq)
    layers = [c.tensor for c in candidate_layers(qdq, info, "logits")]
    pairs = _pairs(qdq)
    ys = _run(qdq, {"x": x}, [dq.output[0] for _, dq in pairs])
    oracle = without_pairs(qdq)
    for _ in pairs:  # offsets from the oracle's own X, pair after pair: X + (0 - X) is 0 exactly
        xs = _run(oracle, {"x": x}, [q.input[0] for q, _ in pairs], optimize=False)
        oracle = without_pairs(qdq, {dq.output[0]: y - v for (_, dq), v, y in zip(pairs, xs, ys)})
    values = _run(oracle, {"x": x}, [dq.output[0] for _, dq in pairs], optimize=False)
    for y, value in zip(ys, values):
        np.testing.assert_array_equal(value == 0, y == 0)
        np.testing.assert_allclose(value, y, rtol=1e-6, atol=1e-6)
    got = _gradients(qdq, layers, x, 1)
    want = _gradients(oracle, layers, x, 1, optimize=False)
    for layer in layers:
        np.testing.assert_allclose(got[layer], want[layer], rtol=1e-5, atol=1e-7, err_msg=layer)


def test_original_outputs_are_bit_identical(qdq: onnx.ModelProto) -> None:
    x = _image(3)
    plain = ort.InferenceSession(qdq.SerializeToString(), providers=_CPU)
    aug = augment(qdq)
    session = ort.InferenceSession(aug.model.SerializeToString(), providers=_CPU)
    want = plain.run(None, {"x": x})
    got = session.run(aug.original_outputs, {"x": x, aug.seed_input: np.full(1, -1, np.int64)})
    for w, g in zip(want, got):
        np.testing.assert_array_equal(g, w)


def test_a_quantized_integer_is_not_a_layer(qdq: onnx.ModelProto) -> None:
    q_out = next(n.output[0] for n in qdq.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "relu2")
    with pytest.raises(CamcoreError, match="holds quantized integers"):
        augment(qdq, [q_out])


def test_qoperator_models_are_refused_in_one_line(tmp_path: Path) -> None:
    """QLinearConv and the like compute on integers: no gradient goes through them."""
    model = quantized(tmp_path, fmt="QOperator")
    for layers in (None, ["x"]):
        with pytest.raises(UnsupportedOpError, match=r"op QLinearConv .*QOperator.*QuantFormat\.QDQ") as err:
            camcore.GradCAM(model, layers)(_image())
        assert "\n" not in str(err.value)
