"""The in-graph weights of the exportable CAM methods: one small registered function per method.

Each function is the ONNX twin of the numpy method of the same key in
:data:`camcore.methods.METHODS` (same formula, same epsilons): it receives the layer's
activations ``A`` and gradients ``G`` as 4-D float32 tensors of the graph with one channel axis
and two spatial axes (:class:`LayerTensors`: (N, C, h, w), or (N, h, w, C) for NHWC layers and
token grids, which the export does not transpose) and emits, with the typed builder, what the
numpy method returns: the per-channel contributions for ``output="channels"`` methods (the
export sums them over the channel axis) or the layer map (N, h, w) for ``output="map"`` ones.

:data:`EXPORTABLE` is keyed by the method registry's keys, so the CLI choices, the README list
and the tests read the exportable methods from it. Every other method is refused by
:func:`exportable_method` with the reason it cannot be one graph (:data:`REFUSALS`).

Example:
    >>> sorted(EXPORTABLE)[:3]
    ['fem', 'gradcam', 'gradcam++']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import onnx

from camcore.errors import CamcoreError
from camcore.graph.builder import GraphBuilder

__all__ = ["EXPORTABLE", "REFUSALS", "Exportable", "LayerTensors", "exportable_method", "register_exportable"]

FLOAT = onnx.TensorProto.FLOAT


@dataclass(frozen=True)
class LayerTensors:
    """Graph tensors of one target layer: 4-D float32, channels on ``channel_axis`` and the
    grid on ``spatial_axes`` ((1, (2, 3)) for NCHW, (3, (1, 2)) for NHWC and token grids)."""

    activations: str
    gradients: str | None = None
    #: H·A, the Hessian-vector product with v = A (ShapleyCAM)
    hvp: str | None = None
    channel_axis: int = 1
    spatial_axes: tuple[int, int] = (2, 3)
    #: the spatial mean of G, kept 1 x 1 on the spatial axes, where the gradient graph has it
    #: before broadcasting it to the grid (a global-average-pooled layer): read it instead of
    #: ``ReduceMean(gradients)``, which would only average equal values again
    pooled_gradients: str | None = None


InGraphFn = Callable[[GraphBuilder, LayerTensors], str]


@dataclass(frozen=True)
class Exportable:
    """A method the export can build in the graph: its key, function and what the run must give."""

    key: str
    fn: InGraphFn
    needs_gradients: bool
    hvp: bool = False


EXPORTABLE: dict[str, Exportable] = {}

_PER_CHANNEL = "needs one forward pass per channel (masked or ablated inputs), not one run"
#: why a registered method has no in-graph form (the generic reason by kind is used otherwise)
REFUSALS: dict[str, str] = {
    "eigencam": "needs an SVD (the first principal component of the activations), which no standard ONNX op computes",
    "eigengradcam": "needs an SVD (the first principal component of G·A), which no standard ONNX op computes",
    "seg-eigencam": "needs an SVD (the first principal component of |G|·A), which no standard ONNX op computes",
    "kpca-cam": "needs a kernel PCA (an eigendecomposition), which no standard ONNX op computes",
    "randomcam": "draws random weights on every call: it is a baseline, not a function of the model",
    "smoothgradcam++": "averages gradients over noisy copies of the input: one gradient run per sample",
    "scorecam": _PER_CHANNEL,
    "sscam": _PER_CHANNEL,
    "iscam": _PER_CHANNEL,
    "ablationcam": _PER_CHANNEL,
    "fullgrad": "sums the gradient maps of every bias term and of the input, not one layer's",
    "guided-gradcam": "multiplies by guided backprop's input gradients, a second differently-differentiated run",
    "refinecam": "combines maps over several input scales and runs (a pipeline)",
    "finercam": "compares against other classes' runs (a pipeline)",
    "sess": "runs the model on many patches and scales (a pipeline)",
    "cam": "reads the classifier's weight matrix found in the graph; export it as gradcam, which equals CAM "
    "for a global-average-pooling classifier",
}


def register_exportable(key: str, *, hvp: bool = False) -> Callable[[InGraphFn], InGraphFn]:
    """Register ``fn(b, layer) -> tensor`` as the in-graph form of method ``key`` (a key of
    :data:`camcore.methods.METHODS`; the gradients are needed where the method needs them)."""
    from camcore.methods import METHODS

    def wrap(fn: InGraphFn) -> InGraphFn:
        if key not in METHODS or key in EXPORTABLE:
            raise RuntimeError(f"in-graph method {key!r}: not a registered method, or registered twice")
        EXPORTABLE[key] = Exportable(key, fn, METHODS[key].needs_gradients or hvp, hvp)
        return fn

    return wrap


def exportable_method(key: str) -> Exportable:
    """The in-graph method for a method's key or class name; a one-line error saying why not.

    Example:
        >>> exportable_method("scorecam")  # doctest: +SKIP
        CamcoreError: ScoreCAM cannot be exported: needs one forward pass per channel ...
    """
    from camcore.methods import method_by_key

    m = method_by_key(key)
    if m.key in EXPORTABLE:
        return EXPORTABLE[m.key]
    reason = REFUSALS.get(m.key, "runs the model more than once (a pipeline)" if m.kind == "pipeline" else "")
    raise CamcoreError(
        f"{m.name} cannot be exported: {reason or 'it has no in-graph form yet'}; "
        f"exportable methods: {', '.join(EXPORTABLE)}"
    )


def _weighted(b: GraphBuilder, weights: str, a: str) -> str:
    """:math:`w_c A_c` for per-channel weights kept on the spatial axes: a weight method's contributions."""
    return b.Mul(weights, a)


def _eps(b: GraphBuilder, value: float) -> str:
    return b.scalar(value, FLOAT)


def _grads(layer: LayerTensors) -> str:
    assert layer.gradients is not None, "the export runs the gradient graph for gradient methods"
    return layer.gradients


@register_exportable("gradcam")
def gradcam(b: GraphBuilder, layer: LayerTensors) -> str:
    """Grad-CAM: :math:`w_c = \\frac{1}{Z}\\sum_{ij} G^c_{ij}`, contributions :math:`w_c A^c`."""
    pooled = layer.pooled_gradients
    weights = pooled if pooled is not None else b.ReduceMean(_grads(layer), layer.spatial_axes)
    return _weighted(b, weights, layer.activations)


@register_exportable("hirescam")
def hirescam(b: GraphBuilder, layer: LayerTensors) -> str:
    """HiResCAM: :math:`G^c \\odot A^c`."""
    return b.Mul(_grads(layer), layer.activations)


@register_exportable("gradcam-elementwise")
def gradcam_elementwise(b: GraphBuilder, layer: LayerTensors) -> str:
    """Element-wise Grad-CAM: :math:`\\max(G^c \\odot A^c, 0)`."""
    return b.op("Relu", b.Mul(_grads(layer), layer.activations))


@register_exportable("gradcam++")
def gradcam_plusplus(b: GraphBuilder, layer: LayerTensors) -> str:
    """Grad-CAM++ (eq. 19): :math:`\\alpha = G^2 / (2G^2 + \\sum A \\cdot G^3 + 10^{-6})`, 0 where
    G = 0; :math:`w_c = \\sum_{ij} \\alpha \\max(G, 0)`."""
    g, a, spatial = _grads(layer), layer.activations, layer.spatial_axes
    g2 = b.Mul(g, g)
    g3 = b.Mul(g2, g)
    sum_a = b.ReduceSum(a, spatial)
    denominator = b.Add(b.Add(b.Mul(_eps(b, 2.0), g2), b.Mul(sum_a, g3)), _eps(b, 1e-6))
    alpha = b.Div(g2, denominator)
    alpha = b.Where(b.op("Equal", g, _eps(b, 0.0)), _eps(b, 0.0), alpha)
    return _weighted(b, b.ReduceSum(b.Mul(b.op("Relu", g), alpha), spatial), a)


@register_exportable("xgradcam")
def xgradcam(b: GraphBuilder, layer: LayerTensors) -> str:
    """XGrad-CAM: :math:`w_c = \\sum_{ij} G^c A^c / (\\sum_{ab} A^c + 10^{-7})`."""
    g, a, spatial = _grads(layer), layer.activations, layer.spatial_axes
    sum_a = b.ReduceSum(a, spatial)
    weights = b.ReduceSum(b.Div(b.Mul(g, a), b.Add(sum_a, _eps(b, 1e-7))), spatial)
    return _weighted(b, weights, a)


@register_exportable("layercam")
def layercam(b: GraphBuilder, layer: LayerTensors) -> str:
    """LayerCAM: :math:`\\max(G^c, 0) \\odot A^c`."""
    return b.Mul(b.op("Relu", _grads(layer)), layer.activations)


@register_exportable("shapleycam", hvp=True)
def shapleycam(b: GraphBuilder, layer: LayerTensors) -> str:
    """ShapleyCAM: :math:`w_c = \\frac{1}{Z}\\sum_{ij} (G - \\tfrac12 H A)^c_{ij}`, with H·A from
    the gradient graph differentiated once more (``augment(hvp=True)``)."""
    assert layer.hvp is not None, "the export asks augment for H·A"
    g = b.Sub(_grads(layer), b.Mul(_eps(b, 0.5), layer.hvp))
    return _weighted(b, b.ReduceMean(g, layer.spatial_axes), layer.activations)


@register_exportable("fem")
def fem(b: GraphBuilder, layer: LayerTensors) -> str:
    """FEM with its default k = 2: :math:`w_c = \\frac{1}{Z}\\sum_{ij}[A > \\mu_c + 2\\sigma_c]`,
    the map :math:`\\sum_c w_c A^c` (σ the population standard deviation)."""
    a, spatial = layer.activations, layer.spatial_axes
    mean = b.ReduceMean(a, spatial)
    centred = b.Sub(a, mean)
    std = b.op("Sqrt", b.ReduceMean(b.Mul(centred, centred), spatial))
    threshold = b.Add(mean, b.Mul(_eps(b, 2.0), std))
    weights = b.ReduceMean(b.Cast(b.op("Greater", a, threshold), FLOAT), spatial)
    return b.ReduceSum(b.Mul(weights, a), [layer.channel_axis], keepdims=False)
