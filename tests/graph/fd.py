"""Finite differences in float64 (ONNX reference evaluator) against the augmented
model's gradients computed by onnxruntime in float32."""

from __future__ import annotations

import math
import zlib

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun
from onnx.reference.ops.op_max_pool import MaxPool as _RefMaxPool

from camcore.graph import augment

_F, _D = onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE
_erf64 = np.vectorize(math.erf, otypes=[np.float64])


class Erf(OpRun):
    """The reference Erf computes in float32 (np.vectorize otypes='f'): too coarse for FD."""

    def _run(self, x: np.ndarray) -> tuple[np.ndarray]:
        return (_erf64(x).astype(x.dtype),)


class Gelu(OpRun):
    """The reference expands Gelu through its float32 Erf: recompute it in float64."""

    def _run(self, x: np.ndarray, approximate: str = "none") -> tuple[np.ndarray]:
        if approximate == "tanh":
            k = math.sqrt(2 / math.pi)
            return ((0.5 * x * (1 + np.tanh(k * (x + 0.044715 * x**3)))).astype(x.dtype),)
        return ((0.5 * x * (1 + _erf64(x / math.sqrt(2)))).astype(x.dtype),)


def _softmax_axes(op: OpRun, x: np.ndarray, axis: int | None) -> tuple[int, ...]:
    """Before opset 13 Softmax coerces its input to 2-D at ``axis`` (ORT follows the spec;
    the reference evaluator applies the opset-13 semantics to every opset). The default axis
    is 1 before opset 13 and -1 from 13 on; the evaluator passes the latest schema's default
    (-1) when the node has no ``axis``, so the node itself is asked."""
    explicit = any(a.name == "axis" for a in op.onnx_node.attribute)
    if op.run_params["opsets"].get("", 13) >= 13:
        return ((axis if explicit and axis is not None else -1) % x.ndim,)
    return tuple(range((axis if explicit and axis is not None else 1) % x.ndim, x.ndim))


class Softmax(OpRun):
    def _run(self, x: np.ndarray, axis: int | None = None) -> tuple[np.ndarray]:
        axes = _softmax_axes(self, x, axis)
        e = np.exp(x - x.max(axis=axes, keepdims=True))
        return (e / e.sum(axis=axes, keepdims=True),)


class LogSoftmax(OpRun):
    def _run(self, x: np.ndarray, axis: int | None = None) -> tuple[np.ndarray]:
        axes = _softmax_axes(self, x, axis)
        z = x - x.max(axis=axes, keepdims=True)
        return (z - np.log(np.exp(z).sum(axis=axes, keepdims=True)),)


class Pad(OpRun):
    """The reference Pad rejects negative pads (crops), which ORT and the spec allow."""

    def _run(self, data, pads, constant_value=None, axes=None, mode=None):
        mode = mode or "constant"
        axes = list(range(data.ndim)) if axes is None else [int(a) % data.ndim for a in axes]
        n = len(axes)
        crop = [slice(None)] * data.ndim
        width = [(0, 0)] * data.ndim
        for k, a in enumerate(axes):
            lo, hi = int(pads[k]), int(pads[n + k])
            crop[a] = slice(max(-lo, 0), data.shape[a] - max(-hi, 0))
            width[a] = (max(lo, 0), max(hi, 0))
        data = data[tuple(crop)]
        if mode == "constant":
            value = 0 if constant_value is None else constant_value.item()
            return (np.pad(data, width, mode="constant", constant_values=value),)
        return (np.pad(data, width, mode=mode),)


class BatchNormalization(OpRun):
    """The reference BatchNormalization of opsets 9-13 mixes in batch statistics whenever
    ``momentum`` is set (always, by its default); ORT and the spec use the running
    statistics when the node has only the output Y. Inference mode only."""

    def _run(self, x, scale, bias, mean, var, epsilon=None, momentum=None, training_mode=None):
        assert len(self.onnx_node.output) == 1 and not training_mode, "inference mode only"
        shape = (-1,) + (1,) * (x.ndim - 2)
        eps = 1e-5 if epsilon is None else epsilon
        y = scale.reshape(shape) * (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
        return ((y + bias.reshape(shape)).astype(x.dtype),)


class ConvTranspose(OpRun):
    """The reference ignores ``output_shape`` when auto_pad is NOTSET and mis-slices grouped
    weights; this follows the spec, as onnxruntime does: scatter X·W at i·s + kk·d, then
    crop the begin pad (explicit, or split from ``output_shape`` / SAME auto_pad)."""

    def _run(
        self,
        x,
        w,
        bias=None,
        auto_pad="NOTSET",
        dilations=None,
        group=1,
        kernel_shape=None,
        output_padding=None,
        output_shape=None,
        pads=None,
        strides=None,
    ):
        nd, k, size = x.ndim - 2, w.shape[2:], x.shape[2:]
        s, d, op = strides or [1] * nd, dilations or [1] * nd, output_padding or [0] * nd
        full = [s[i] * (size[i] - 1) + op[i] + (k[i] - 1) * d[i] + 1 for i in range(nd)]
        if output_shape is None and auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
            p = pads or [0] * 2 * nd
            begin, out = p[:nd], [full[i] - p[i] - p[i + nd] for i in range(nd)]
        else:
            out = list(output_shape or [size[i] * s[i] for i in range(nd)])
            total = [full[i] - out[i] for i in range(nd)]
            begin = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total]
        lo, cg, mg = max(full), x.shape[1] // group, w.shape[1]  # lo: room for negative pads
        y = np.zeros((x.shape[0], mg * group, *[f + 2 * lo for f in full]), dtype=x.dtype)
        for j in range(group):
            xj, wj = x[:, j * cg : (j + 1) * cg], w[j * cg : (j + 1) * cg]
            for kk in np.ndindex(*k):
                part = np.einsum("nc...,cm->nm...", xj, wj[(slice(None), slice(None), *kk)])
                at = [slice(lo + kk[i] * d[i], lo + kk[i] * d[i] + s[i] * (size[i] - 1) + 1, s[i]) for i in range(nd)]
                y[(slice(None), slice(j * mg, (j + 1) * mg), *at)] += part
        y = y[(slice(None), slice(None), *[slice(lo + begin[i], lo + begin[i] + out[i]) for i in range(nd)])]
        if bias is not None:
            y = y + bias.reshape(1, -1, *[1] * nd)
        return (y.astype(x.dtype),)


class MaxPool(_RefMaxPool):
    """With every stride and dilation 1 the reference takes a path that reads ``pads`` in
    the wrong order ([b0, e0, b1, e1]); explicit pads go to its general path instead."""

    def _run(
        self,
        x,
        auto_pad=None,
        ceil_mode=None,
        dilations=None,
        kernel_shape=None,
        pads=None,
        storage_order=None,
        strides=None,
    ):
        if pads is not None and auto_pad in (None, "NOTSET"):
            return self._max_pool(x, auto_pad, ceil_mode, dilations, kernel_shape, pads, storage_order, strides)
        return super()._run(x, auto_pad, ceil_mode, dilations, kernel_shape, pads, storage_order, strides)


PRECISE_OPS = [Erf, Gelu, Softmax, LogSoftmax, Pad, BatchNormalization, ConvTranspose, MaxPool]


#: float types made float64 by :func:`to_double` (float16 models are checked in float64 too)
_LOW = (_F, onnx.TensorProto.FLOAT16)


def to_double(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same model computing in float64 (types, initializers, constants, casts), from
    float32 or float16."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for vi in [*g.input, *g.output, *g.value_info]:
        if vi.type.tensor_type.elem_type in _LOW:
            vi.type.tensor_type.elem_type = _D
    for i, init in enumerate(g.initializer):
        if init.data_type in _LOW:
            g.initializer[i].CopyFrom(
                numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float64), init.name)
            )
    for node in g.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type in _LOW:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float64)))
            if node.op_type in ("Cast", "CastLike") and a.name == "to" and a.i in _LOW:
                a.i = _D
    return m


def feed_for(
    model: onnx.ModelProto, rng: np.random.Generator, shapes: dict[str, tuple[int, ...]]
) -> dict[str, np.ndarray]:
    feeds: dict[str, np.ndarray] = {}
    inits = {i.name for i in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        shape = shapes.get(vi.name) or tuple(d.dim_value for d in tt.shape.dim)
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
        feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def case_seed(case_id: str) -> int:
    """A seed from the case id that is the same in every process (``hash`` of a str is not:
    PYTHONHASHSEED randomises it)."""
    return zlib.crc32(case_id.encode())


def check_case(case) -> None:
    model = onnx.parser.parse_model(case.text)
    onnx.checker.check_model(model, full_check=True)
    rng = np.random.default_rng(case_seed(case.id))
    feeds = feed_for(model, rng, case.feed_shapes)
    if case.make_inputs is not None:
        feeds.update(case.make_inputs(rng))
    aug = augment(model, list(case.wrt), seed="tensor", input_shapes=case.input_shapes)
    onnx.checker.check_model(aug.model, full_check=True)
    assert {n.domain for n in aug.model.graph.node} <= {""}, "non-standard domain emitted"

    out_name = model.graph.output[0].name
    oracle = model if case.oracle is None else onnx.parser.parse_model(case.oracle)
    ref64 = ReferenceEvaluator(to_double(oracle), new_ops=PRECISE_OPS)
    feeds64 = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in feeds.items()}
    y0 = ref64.run([out_name], feeds64)[0]
    seed = rng.standard_normal(y0.shape)

    sess = ort.InferenceSession(aug.model.SerializeToString(), providers=["CPUExecutionProvider"])
    res = sess.run(None, {**feeds, aug.seed_input: seed.astype(np.float32)})
    named = dict(zip([o.name for o in aug.model.graph.output], res))
    # the original outputs are unchanged bit for bit
    plain = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for name, value in zip([o.name for o in model.graph.output], plain.run(None, feeds)):
        np.testing.assert_array_equal(named[name], value)

    def f(values: dict[str, np.ndarray]) -> float:
        return float(np.sum(ref64.run([out_name], values)[0] * seed))

    for wrt in case.wrt:
        grad = named[aug.gradient_outputs[wrt]].astype(np.float64)
        base = feeds64[wrt]
        assert grad.shape == base.shape, f"gradient shape {grad.shape} != {base.shape}"
        eps = 1e-6
        if base.size <= 256:
            directions = [np.eye(base.size)[i].reshape(base.shape) for i in range(base.size)]
        else:
            directions = [rng.standard_normal(base.shape) for _ in range(8)]
        fd, an = [], []
        for v in directions:
            plus = {**feeds64, wrt: base + eps * v}
            minus = {**feeds64, wrt: base - eps * v}
            fd.append((f(plus) - f(minus)) / (2 * eps))
            an.append(float(np.sum(grad * v)))
        fd_arr, an_arr = np.asarray(fd), np.asarray(an)
        scale = max(1.0, float(np.max(np.abs(fd_arr))))
        np.testing.assert_allclose(
            an_arr,
            fd_arr,
            rtol=case.rtol,
            atol=case.atol * scale,
            err_msg=f"{case.id}: gradient wrt {wrt} disagrees with finite differences",
        )
