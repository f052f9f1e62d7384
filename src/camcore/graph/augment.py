"""Rewrite an ONNX model so one inference run returns outputs, activations and gradients.

The augmented model takes the original inputs plus a seed, and returns the original
outputs (bit for bit: the forward nodes are untouched), the activation of every
target layer and the gradient of ``<seed, output>`` with respect to each.

Seeds come in two modes:
    * ``seed="class"`` adds an int64 input ``camcore_class`` of shape (N,); the seed is
      the one-hot of that class per row, or of the top-1 class where the index is -1.
      This is plain Grad-CAM of a classifier in a single run.
    * ``seed="tensor"`` adds a float input ``camcore_seed`` shaped like the output: any
      linear target (a mask, a weighting of boxes, ...) is a seed.

Example:
    >>> aug = augment("resnet50.onnx", ["/layer4/layer4.2/relu_2/Relu_output_0"])
    >>> sess = onnxruntime.InferenceSession(aug.model.SerializeToString())
    >>> logits, act, grad = sess.run(None, {"input": x, aug.seed_input: np.array([-1])})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import onnx
from onnx import helper

from camcore.errors import CamcoreError, ModelError
from camcore.graph import rules as _rules  # noqa: F401 - fills the registry
from camcore.graph.autodiff import build_gradients, path_nodes
from camcore.graph.builder import GraphBuilder
from camcore.graph.folding import fold_constant_ifs
from camcore.graph.layers import explained_output, resolve_target_layers
from camcore.graph.shapes import TensorInfo, fix_input_shapes, free_unset_dims, infer_tensor_info, probe_shapes

SEED_CLASS_INPUT = "camcore_class"
SEED_TENSOR_INPUT = "camcore_seed"
MIN_OPSET, MAX_TESTED_OPSET = 11, 21

SeedMode = Literal["class", "tensor"]


@dataclass
class Augmented:
    """An augmented model and the names of what it adds."""

    model: onnx.ModelProto
    output: str
    seed_input: str
    seed_mode: SeedMode
    target_layers: list[str]
    activation_outputs: dict[str, str] = field(default_factory=dict)
    gradient_outputs: dict[str, str] = field(default_factory=dict)
    original_outputs: list[str] = field(default_factory=list)
    #: layer -> output holding H·A (the Hessian-vector product with v = A), with ``hvp=True``
    hvp_outputs: dict[str, str] = field(default_factory=dict)


def load_model(model: str | Path | onnx.ModelProto, base_dir: str | Path | None = None) -> onnx.ModelProto:
    """Load a model from a path (external data next to it is loaded too) or copy a proto.

    An in-memory model whose weights are external data needs ``base_dir``, the folder its
    ``location`` entries are relative to: it is never read relative to the working directory.
    """
    if isinstance(model, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        _load_external(copy, base_dir)
        return copy
    path = Path(model)
    if path.is_dir():
        raise ModelError(f"model {str(path)!r} is a folder, not an ONNX file; pass the .onnx file inside it")
    if not path.is_file():
        raise ModelError(f"model file {str(path)!r} does not exist")
    try:
        return onnx.load(str(path), load_external_data=True)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"cannot read {str(path)!r} as an ONNX model ({reason})") from None


def _load_external(model: onnx.ModelProto, base_dir: str | Path | None) -> None:
    """Read the external data of an in-memory model from ``base_dir`` (required when there is any)."""
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    external = [t for t in model.graph.initializer if uses_external_data(t)]
    if not external:
        return
    location = next((e.value for e in external[0].external_data if e.key == "location"), "?")
    if base_dir is None:
        raise ModelError(
            f"the in-memory model keeps {len(external)} weight(s) in external data (e.g. {location!r}); pass "
            "base_dir= (the folder that holds them) or load the model from its path"
        )
    folder = Path(base_dir)
    if not folder.is_dir():
        raise ModelError(f"base_dir {str(folder)!r} is not a folder")
    try:
        load_external_data_for_model(model, str(folder))
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"cannot read the model's external data from {str(folder)!r} ({reason})") from None


def model_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    raise ModelError("the model imports no version of the default ONNX domain")


def prepare_model(
    model: str | Path | onnx.ModelProto,
    input_shapes: Mapping[str, Sequence[int | str | None]] | None = None,
    base_dir: str | Path | None = None,
) -> tuple[onnx.ModelProto, dict[str, TensorInfo]]:
    """Load, inline local functions, bring the opset to >= 11, clear the -1 and 0 dims
    exporters write for dynamic ones, fix shapes, infer types, and inline each ``If`` that the
    constants and static dims decide (:func:`~camcore.graph.folding.fold_constant_ifs`).

    ``base_dir``: the folder of an in-memory model's external data (see :func:`load_model`).
    """
    proto = load_model(model, base_dir)
    if len(proto.graph.node) == 0:
        raise ModelError("the model has no nodes")
    if proto.functions:
        from onnx import inliner

        proto = inliner.inline_local_functions(proto)
    if model_opset(proto) < MIN_OPSET:
        from onnx import version_converter

        try:
            proto = version_converter.convert_version(proto, MIN_OPSET)
        except Exception as exc:
            raise ModelError(
                f"the model's opset {model_opset(proto)} is older than {MIN_OPSET} and could "
                f"not be upgraded ({str(exc).splitlines()[0] if str(exc) else exc!r}); "
                "re-export it at opset >= 11"
            ) from None
    free_unset_dims(proto)
    if input_shapes:
        fix_input_shapes(proto, input_shapes)
    info = infer_tensor_info(proto)
    if any(n.op_type == "If" for n in proto.graph.node) and fold_constant_ifs(proto, info, model_opset(proto)):
        info = infer_tensor_info(proto)
    return proto, info


def _value_info(name: str, ti: TensorInfo | None) -> onnx.ValueInfoProto:
    if ti is None:
        return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
    return helper.make_tensor_value_info(name, ti.elem_type, None if ti.shape is None else list(ti.shape))


def _seed_value_info(name: str, ti: TensorInfo) -> onnx.ValueInfoProto:
    """The seed input: the output's rank and batch dim, other dims left free.

    Declaring inferred sizes would let an inference slip (ONNX shape inference and
    onnxruntime disagree on some ceil_mode pools) reject a correctly sized seed.
    """
    if ti.shape is None:
        return helper.make_tensor_value_info(name, ti.elem_type, None)
    dims: list[int | str | None] = [None] * len(ti.shape)
    if dims:
        dims[0] = ti.shape[0]
    return helper.make_tensor_value_info(name, ti.elem_type, dims)


def _class_seed(b: GraphBuilder, output: str, ti: TensorInfo) -> tuple[str, onnx.ValueInfoProto]:
    """One-hot of ``camcore_class`` per row, top-1 where the class is negative."""
    if ti.shape is None or len(ti.shape) != 2:
        raise CamcoreError(
            f"seed='class' needs an (N, classes) output, but {output!r} has shape "
            f"{None if ti.shape is None else list(ti.shape)}; use seed='tensor'"
        )
    batch = ti.shape[0]
    cls_input = helper.make_tensor_value_info(SEED_CLASS_INPUT, onnx.TensorProto.INT64, [batch])
    top1 = b.op("ArgMax", output, axis=1, keepdims=0)
    chosen = b.Where(b.op("Less", SEED_CLASS_INPUT, b.ints([0])), top1, SEED_CLASS_INPUT)
    depth = b.op("Gather", b.Shape(output), b.const(1, "int64"), axis=0)
    classes = b.Range(b.const(0, "int64"), depth, b.const(1, "int64"))
    hot = b.op("Equal", b.Unsqueeze(chosen, [1]), classes)
    return b.Cast(hot, ti.elem_type), cls_input


def _fill_unknown_shapes(
    proto: onnx.ModelProto, info: dict[str, TensorInfo], targets: Sequence[str], output: str
) -> None:
    """Probe the shapes of gradient-path tensors that inference could not type."""
    on_path, _ = path_nodes(list(proto.graph.node), targets, [output], info)
    unknown = {t for n in on_path for t in (*n.input, *n.output) if t and t in info and info[t].shape is None}
    if unknown:
        info.update(probe_shapes(proto, info, sorted(unknown)))


def augment(
    model: str | Path | onnx.ModelProto,
    target_layers: Sequence[str] | None = None,
    *,
    output: str | None = None,
    seed: SeedMode = "class",
    input_shapes: Mapping[str, Sequence[int | str | None]] | None = None,
    guided_relu: bool = False,
    hvp: bool = False,
    check: bool = True,
) -> Augmented:
    """Append in-graph reverse-mode autodiff to ``model``.

    Args:
        model: a path or a ModelProto (left untouched).
        target_layers: tensor or node names; None picks the last spatial activation.
            Graph inputs are allowed (input gradients).
        output: the output to differentiate (default: the first).
        seed: ``"class"`` (int64 class per row, -1 = top-1) or ``"tensor"``.
        input_shapes: fix input dims, e.g. ``{"input": [None, 3, 224, 224]}``.
        guided_relu: use the guided-backprop rule for Relu.
        hvp: also return, per target layer A, the Hessian-vector product
            ``H·A = d/dA <dy/dA, v>`` at ``v = A`` (ShapleyCAM): camcore's own gradient
            graph is differentiated once more, with v held constant.
        check: run ``onnx.checker`` on the result.
    """
    proto, info = prepare_model(model, input_shapes)
    graph = proto.graph
    ours = [
        n
        for n in (*(i.name for i in graph.input), *(o.name for o in graph.output))
        if n in (SEED_CLASS_INPUT, SEED_TENSOR_INPUT) or n.startswith(("camcore_activation_", "camcore_gradient_"))
    ]
    if ours:
        raise ModelError(f"the model is already augmented by camcore (it has {ours[0]!r}); pass the original model")
    original_outputs = [o.name for o in graph.output]
    output = explained_output(proto, output)
    targets = resolve_target_layers(proto, info, output, target_layers)
    if len(set(targets)) != len(targets):
        raise CamcoreError(f"target layers repeat a tensor: {targets}")

    taken = {t for n in graph.node for t in (*n.input, *n.output, n.name)}
    taken |= {i.name for i in graph.input} | {i.name for i in graph.initializer}
    b = GraphBuilder(model_opset(proto), taken)
    b.elem_types.update({k: v.elem_type for k, v in info.items()})
    out_info = info.get(output, TensorInfo(onnx.TensorProto.FLOAT, None))
    if seed == "class":
        seed_tensor, seed_vi = _class_seed(b, output, out_info)
        seed_name = SEED_CLASS_INPUT
    elif seed == "tensor":
        seed_name = seed_tensor = SEED_TENSOR_INPUT
        seed_vi = _seed_value_info(seed_name, out_info)
    else:
        raise CamcoreError(f"seed must be 'class' or 'tensor', not {seed!r}")

    _fill_unknown_shapes(proto, info, targets, output)
    grads = build_gradients(graph, info, b, targets, {output: seed_tensor}, {"guided_relu": guided_relu})
    aug = Augmented(proto, output, seed_name, seed, targets, original_outputs=original_outputs)
    new_outputs: list[onnx.ValueInfoProto] = []
    for i, target in enumerate(targets):
        grad = grads[target]
        if grad is None:
            raise CamcoreError(f"layer {target!r} does not influence output {output!r}")
        act_name, grad_name = f"camcore_activation_{i}", f"camcore_gradient_{i}"
        b.nodes.append(helper.make_node("Identity", [target], [act_name], name=b.fresh("act")))
        b.nodes.append(helper.make_node("Identity", [grad], [grad_name], name=b.fresh("grad")))
        aug.activation_outputs[target] = act_name
        aug.gradient_outputs[target] = grad_name
        new_outputs += [_value_info(act_name, info.get(target)), _value_info(grad_name, info.get(target))]
    b.add_to(graph)
    graph.input.append(seed_vi)
    graph.output.extend(new_outputs)
    if hvp:
        _append_hvp(proto, aug, {t: grads[t] for t in targets}, guided_relu)  # type: ignore[misc]
    if check and proto.ByteSize() < 1_800_000_000:
        onnx.checker.check_model(proto)
    return aug


def _append_hvp(proto: onnx.ModelProto, aug: Augmented, grads: dict[str, str], guided_relu: bool) -> None:
    """Differentiate the gradient graph: for each layer A with gradient G(A), emit
    ``d/dA <G(A), v>`` with ``v`` = the activation output, held constant (a stop set)."""
    graph = proto.graph
    info = infer_tensor_info(proto)
    for i, target in enumerate(aug.target_layers):
        v = aug.activation_outputs[target]
        on_path, _ = path_nodes(list(graph.node), [target], [grads[target]], info, frozenset({v}))
        unknown = {t for n in on_path for t in (*n.input, *n.output) if t and t in info and info[t].shape is None}
        if unknown:
            info.update(probe_shapes(proto, info, sorted(unknown)))
        taken = {t for n in graph.node for t in (*n.input, *n.output, n.name)}
        taken |= {x.name for x in graph.input} | {x.name for x in graph.initializer}
        b = GraphBuilder(model_opset(proto), taken, prefix=f"camcore_hvp{i}")
        b.elem_types.update({k: t.elem_type for k, t in info.items()})
        second = build_gradients(
            graph, info, b, [target], {grads[target]: v}, {"guided_relu": guided_relu}, stop=frozenset({v})
        )
        name = f"camcore_hvp_{i}"
        hv = second[target]
        if hv is None:  # the gradient does not depend on A: H·A = 0
            hv = b.Mul(v, b.scalar(0.0, info[target].elem_type if target in info else onnx.TensorProto.FLOAT))
        b.nodes.append(helper.make_node("Identity", [hv], [name], name=b.fresh("hvp")))
        b.add_to(graph)
        graph.output.append(_value_info(name, info.get(target)))
        aug.hvp_outputs[target] = name
