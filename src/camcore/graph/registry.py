"""The gradient-rule registry and the vocabulary every rule speaks.

A rule is a function ``rule(ctx) -> list[str | None]`` registered by op type. It
reads the node's inputs ``ctx.inputs``, outputs ``ctx.outputs`` and the gradients
flowing into its outputs ``ctx.grad_outputs`` (None where nothing flows), and it
returns one gradient per input: a tensor name, or None where the input needs no
gradient (``ctx.needs_grad(i)`` is False) or has none. Rules emit standard ONNX ops
through ``ctx.b``, a :class:`~camcore.graph.builder.GraphBuilder` at the model's opset.
A rule never sees the rest of the graph.

Example:
    >>> @register("Neg")
    ... def neg(ctx: GradContext) -> list[str | None]:
    ...     return [ctx.b.Neg(ctx.grad_output())]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import onnx
from onnx import helper

from camcore.errors import ShapeError
from camcore.graph.builder import GraphBuilder
from camcore.graph.shapes import Dim, TensorInfo

GradRule = Callable[["GradContext"], Sequence["str | None"]]

#: op type -> gradient rule; filled by the ``@register`` decorator in ``rules/``
RULES: dict[str, GradRule] = {}


def register(*op_types: str) -> Callable[[GradRule], GradRule]:
    """Register a gradient rule for one or more op types of the default domain."""

    def wrap(fn: GradRule) -> GradRule:
        for op_type in op_types:
            if op_type in RULES:
                raise RuntimeError(f"two gradient rules for {op_type}")
            RULES[op_type] = fn
        return fn

    return wrap


@dataclass
class GradContext:
    """What a rule may know: its node, tensor facts, the gradients in, and a builder."""

    node: onnx.NodeProto
    grad_outputs: list[str | None]
    input_needs_grad: list[bool]
    b: GraphBuilder
    info: dict[str, TensorInfo]
    #: the "guided" Relu variant etc. may be switched on by augment options
    options: dict[str, Any]

    # -------------------------------------------------------------- vocabulary
    @property
    def inputs(self) -> list[str]:
        return list(self.node.input)

    @property
    def outputs(self) -> list[str]:
        return list(self.node.output)

    @property
    def opset(self) -> int:
        return self.b.opset

    def needs_grad(self, i: int) -> bool:
        return i < len(self.input_needs_grad) and self.input_needs_grad[i]

    def grad_output(self, i: int = 0) -> str:
        """The gradient of output ``i``; zeros if nothing flows into it."""
        g = self.grad_outputs[i] if i < len(self.grad_outputs) else None
        if g is None:
            out = self.node.output[i]
            return self.b.ZerosLike(out, self.elem_type(out))
        return g

    def attr(self, name: str, default: Any = None) -> Any:
        for a in self.node.attribute:
            if a.name == name:
                return helper.get_attribute_value(a)
        return default

    def elem_type(self, tensor: str) -> int:
        if tensor in self.info:
            return self.info[tensor].elem_type
        if tensor in self.b.elem_types:
            return self.b.elem_types[tensor]
        return onnx.TensorProto.FLOAT

    def scalar(self, value: float, like: str) -> str:
        """A 0-D constant with the element type of tensor ``like``."""
        return self.b.scalar(value, self.elem_type(like))

    def shape(self, tensor: str) -> tuple[Dim, ...]:
        """The (possibly symbolic) shape; raises when even the rank is unknown."""
        ti = self.info.get(tensor)
        if ti is None or ti.shape is None:
            raise ShapeError(
                f"the gradient of {self.node.op_type} node {self.node.name!r} needs the rank "
                f"of {tensor!r}, which shape inference could not find; fix the input shapes "
                "(augment(..., input_shapes=...) or --size HxW)"
            )
        return ti.shape

    def rank(self, tensor: str) -> int:
        return len(self.shape(tensor))

    def static_shape(self, tensor: str, axes: Sequence[int] | None = None) -> list[int]:
        """Known integer dims (only ``axes`` if given); raises a clear error otherwise."""
        shape = self.shape(tensor)
        picked = range(len(shape)) if axes is None else [a % len(shape) for a in axes]
        dims = [shape[a] for a in picked]
        if not all(isinstance(d, int) for d in dims):
            raise ShapeError(
                f"the gradient of {self.node.op_type} node {self.node.name!r} needs static "
                f"dims {list(picked)} of {tensor!r} (got {list(shape)}); fix the input shapes "
                "(augment(..., input_shapes=...) or --size HxW)"
            )
        return [int(d) for d in dims]  # type: ignore[arg-type]

    def const_value(self, tensor: str) -> Any:
        """The value of a constant input (initializer or Constant node), else None."""
        return self.options["constants"].get(tensor)

    def is_constant(self, tensor: str) -> bool:
        """Whether ``tensor`` is an initializer or a Constant node's output, of any size
        (:meth:`const_value` holds only the small ones' values)."""
        return tensor in self.options.get("constant_names", ()) or tensor in self.options["constants"]
