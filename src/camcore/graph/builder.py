"""A typed node builder that emits standard ONNX ops at a given opset.

Gradient rules never write NodeProtos by hand: they call ``b.Mul(x, y)`` and get
back the name of the new tensor. Where an op changed its signature between opsets
(axes as attribute or input, Split sizes, Pad pads), the builder picks the form
the model's opset expects, so a rule written once works for opset 11 to 21+.

Example:
    >>> b = GraphBuilder(opset=13)
    >>> y = b.Mul("x", b.scalar(2.0, onnx.TensorProto.FLOAT))
    >>> len(b.nodes), b.nodes[0].op_type
    (1, 'Mul')
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

FLOAT_TYPES = frozenset(
    {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.DOUBLE,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.BFLOAT16,
    }
)


class GraphBuilder:
    """Collects new nodes and constants; names never collide with the model's."""

    def __init__(self, opset: int, taken: Iterable[str] = (), prefix: str = "camcore") -> None:
        self.opset = opset
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._taken: set[str] = set(taken)
        self._counter = 0
        self._const_cache: dict[tuple[Any, ...], str] = {}
        #: element type of every tensor the builder knows (filled by the caller too)
        self.elem_types: dict[str, int] = {}

    # ---------------------------------------------------------------- names
    def fresh(self, hint: str = "t") -> str:
        """A tensor or node name unused anywhere in the model."""
        while True:
            self._counter += 1
            name = f"{self.prefix}/{hint}_{self._counter}"
            if name not in self._taken:
                self._taken.add(name)
                return name

    # ---------------------------------------------------------------- core
    def op(
        self,
        op_type: str,
        *inputs: str | None,
        outputs: int = 1,
        hint: str | None = None,
        **attrs: Any,
    ) -> Any:
        """Emit one node; returns the output name, or a list when ``outputs > 1``."""
        out_names = [self.fresh(hint or op_type.lower()) for _ in range(outputs)]
        ins = ["" if i is None else i for i in inputs]
        while ins and ins[-1] == "":
            ins.pop()
        attrs = {k: v for k, v in attrs.items() if v is not None}
        node = helper.make_node(op_type, ins, out_names, name=self.fresh(op_type), **attrs)
        self.nodes.append(node)
        return out_names[0] if outputs == 1 else out_names

    def const(self, value: np.ndarray | np.generic | float | Sequence[int] | Sequence[float], dtype: Any = None) -> str:
        """An initializer holding ``value``; identical constants are shared."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._const_cache:
            name = self.fresh("const")
            self.initializers.append(numpy_helper.from_array(arr, name))
            self.elem_types[name] = helper.np_dtype_to_tensor_dtype(arr.dtype)
            self._const_cache[key] = name
        return self._const_cache[key]

    def ints(self, values: Sequence[int]) -> str:
        """A 1-D int64 constant."""
        return self.const(np.asarray(list(values), dtype=np.int64))

    def scalar(self, value: float, elem_type: int) -> str:
        """A 0-D constant of the given ONNX element type."""
        return self.const(np.asarray(value, dtype=helper.tensor_dtype_to_np_dtype(elem_type)))

    # ---------------------------------------------------------------- elementwise
    def Add(self, a: str, b: str) -> str:  # noqa: N802 - ONNX op names
        return self.op("Add", a, b)

    def Sub(self, a: str, b: str) -> str:  # noqa: N802
        return self.op("Sub", a, b)

    def Mul(self, a: str, b: str) -> str:  # noqa: N802
        return self.op("Mul", a, b)

    def Div(self, a: str, b: str) -> str:  # noqa: N802
        return self.op("Div", a, b)

    def Neg(self, a: str) -> str:  # noqa: N802
        return self.op("Neg", a)

    def Where(self, cond: str, a: str, b: str) -> str:  # noqa: N802
        return self.op("Where", cond, a, b)

    def Cast(self, a: str, to: int) -> str:  # noqa: N802
        return self.op("Cast", a, to=to)

    def MatMul(self, a: str, b: str) -> str:  # noqa: N802
        return self.op("MatMul", a, b)

    def Transpose(self, a: str, perm: Sequence[int]) -> str:  # noqa: N802
        return self.op("Transpose", a, perm=list(perm))

    def Shape(self, a: str) -> str:  # noqa: N802
        return self.op("Shape", a)

    def Reshape(self, a: str, shape: str) -> str:  # noqa: N802
        return self.op("Reshape", a, shape)

    def Expand(self, a: str, shape: str) -> str:  # noqa: N802
        return self.op("Expand", a, shape)

    def Identity(self, a: str) -> str:  # noqa: N802
        return self.op("Identity", a)

    def ZerosLike(self, a: str, elem_type: int) -> str:  # noqa: N802
        """Zeros with the shape of ``a`` (standard ops: Expand of a scalar)."""
        return self.Expand(self.scalar(0.0, elem_type), self.Shape(a))

    # ---------------------------------------------------------------- opset-adapted
    def _axes_op(self, op_type: str, x: str, axes: Sequence[int] | None, since: int, **attrs: Any) -> str:
        if axes is None:
            return self.op(op_type, x, **attrs)
        if self.opset >= since:
            return self.op(op_type, x, self.ints(axes), **attrs)
        return self.op(op_type, x, axes=list(axes), **attrs)

    def ReduceSum(self, x: str, axes: Sequence[int] | None, keepdims: bool = True) -> str:  # noqa: N802
        return self._axes_op("ReduceSum", x, axes, 13, keepdims=int(keepdims))

    def ReduceSumDynamic(self, x: str, axes: str, keepdims: bool = True) -> str:  # noqa: N802
        """ReduceSum over axes computed at run time (opset >= 13); empty axes = no-op."""
        if self.opset < 13:
            raise NotImplementedError("dynamic ReduceSum axes need opset >= 13")
        return self.op("ReduceSum", x, axes, keepdims=int(keepdims), noop_with_empty_axes=1)

    def ReduceMean(self, x: str, axes: Sequence[int] | None, keepdims: bool = True) -> str:  # noqa: N802
        return self._axes_op("ReduceMean", x, axes, 18, keepdims=int(keepdims))

    def ReduceMax(self, x: str, axes: Sequence[int] | None, keepdims: bool = True) -> str:  # noqa: N802
        return self._axes_op("ReduceMax", x, axes, 18, keepdims=int(keepdims))

    def ReduceMin(self, x: str, axes: Sequence[int] | None, keepdims: bool = True) -> str:  # noqa: N802
        return self._axes_op("ReduceMin", x, axes, 18, keepdims=int(keepdims))

    def Squeeze(self, x: str, axes: Sequence[int]) -> str:  # noqa: N802
        return self._axes_op("Squeeze", x, axes, 13)

    def Unsqueeze(self, x: str, axes: Sequence[int]) -> str:  # noqa: N802
        return self._axes_op("Unsqueeze", x, axes, 13)

    def Slice(  # noqa: N802
        self,
        x: str,
        starts: Sequence[int],
        ends: Sequence[int],
        axes: Sequence[int],
        steps: Sequence[int] | None = None,
    ) -> str:
        steps_name = self.ints(steps) if steps is not None else None
        return self.op("Slice", x, self.ints(starts), self.ints(ends), self.ints(axes), steps_name)

    def Pad(self, x: str, pads: Sequence[int], value: float = 0.0, elem_type: int | None = None) -> str:  # noqa: N802
        """Constant padding; ``pads`` is ONNX order (all begins, then all ends), may be negative."""
        fill = self.scalar(value, elem_type) if elem_type is not None and value != 0.0 else None
        return self.op("Pad", x, self.ints(pads), fill, mode="constant")

    def Split(self, x: str, sizes: Sequence[int], axis: int) -> list[str]:  # noqa: N802
        if self.opset >= 13:
            return self.op("Split", x, self.ints(sizes), outputs=len(sizes), axis=axis)
        return self.op("Split", x, outputs=len(sizes), axis=axis, split=list(sizes))

    def Concat(self, inputs: Sequence[str], axis: int) -> str:  # noqa: N802
        return self.op("Concat", *inputs, axis=axis)

    def Range(self, start: str, limit: str, delta: str) -> str:  # noqa: N802
        return self.op("Range", start, limit, delta)

    # ---------------------------------------------------------------- results
    def add_to(self, graph: onnx.GraphProto) -> None:
        """Append the collected nodes and constants to ``graph``."""
        graph.initializer.extend(self.initializers)
        graph.node.extend(self.nodes)
