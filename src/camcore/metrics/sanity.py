"""The model-randomisation sanity check (Adebayo et al. 2018, https://arxiv.org/abs/1810.03292):
a map that explains the model must change when the model's weights do.

Graph surgery on the initializers: every float initializer (rank >= 1) read by a node
downstream of the target layer (reachable from it) is replaced by Gaussian values of the
same shape, mean 0 and the original's standard deviation (its max |value| where that is 0);
BatchNormalization running statistics are kept so the variance stays positive. The same
method, options and targets then explain the randomised model, and the two maps are
compared per image by Spearman rank correlation and SSIM.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import onnx
from onnx import numpy_helper

from camcore.metrics.registry import register_metric


def downstream_initializers(model: onnx.ModelProto, layer: str) -> list[str]:
    """Float initializers (rank >= 1) of the nodes reachable from ``layer``, in graph order;
    BatchNormalization means and variances excluded."""
    inits = {i.name: i for i in model.graph.initializer}
    reached = {layer}
    names: list[str] = []
    for node in model.graph.node:
        if not any(i in reached for i in node.input):
            continue
        reached.update(node.output)
        inputs = node.input[:3] if node.op_type == "BatchNormalization" else node.input
        for i in inputs:
            t = inits.get(i)
            if t is not None and i not in names and t.data_type in (1, 10, 11, 16) and len(t.dims) >= 1:
                names.append(i)
    return names


def randomise_initializers(model: onnx.ModelProto, names: Sequence[str], seed: int = 0) -> onnx.ModelProto:
    """A copy of ``model`` whose initializers ``names`` hold N(0, σ²) values, σ the original's std."""
    rng = np.random.default_rng(seed)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    wanted = set(names)
    for k, init in enumerate(out.graph.initializer):
        if init.name in wanted:
            w = numpy_helper.to_array(init)
            scale = float(w.std()) or float(np.abs(w).max()) or 1e-2
            new = rng.normal(0.0, scale, w.shape).astype(w.dtype)
            out.graph.initializer[k].CopyFrom(numpy_helper.from_array(new, init.name))
    return out


def rankdata(a: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), 0-based.

    Example:
        >>> rankdata(np.array([3.0, 1.0, 1.0])).tolist()
        [2.0, 0.5, 0.5]
    """
    flat = a.reshape(-1)
    order = np.argsort(flat, kind="stable")
    sorted_a = flat[order]
    starts = np.r_[0, np.nonzero(np.diff(sorted_a))[0] + 1]
    ends = np.r_[starts[1:], len(flat)]
    avg = np.repeat((starts + ends - 1) / 2.0, ends - starts)
    ranks = np.empty(len(flat))
    ranks[order] = avg
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image Spearman rank correlation of (N, H, W) maps (0 where a map is constant)."""
    out = []
    for x, y in zip(a, b):
        rx, ry = rankdata(x) - (x.size - 1) / 2, rankdata(y) - (y.size - 1) / 2
        den = np.sqrt((rx**2).sum() * (ry**2).sum())
        out.append(float((rx * ry).sum() / den) if den > 0 else 0.0)
    return np.asarray(out)


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean SSIM (Wang et al. 2004; Gaussian window 11×11, σ = 1.5, data range 1) per image."""
    c1, c2 = 0.01**2, 0.03**2
    out = []
    for x, y in zip(np.asarray(a, np.float64), np.asarray(b, np.float64)):

        def blur(z: np.ndarray) -> np.ndarray:
            return cv2.GaussianBlur(z, (11, 11), 1.5)

        mx, my = blur(x), blur(y)
        vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        out.append(float(s.mean()))
    return np.asarray(out)


@dataclass
class SanityResult:
    """The maps before and after randomisation, their similarity, and the verdict."""

    maps: np.ndarray
    random_maps: np.ndarray
    spearman: np.ndarray
    ssim: np.ndarray
    randomised: list[str]
    #: True when the mean Spearman correlation exceeds the threshold: the map did not change
    flagged: bool


@register_metric("Sanity check: rank correlation of the map before and after randomising the weights "
                 "downstream of the layer (flagged if it barely changes)", kind="sanity", better="lower",
                 reference="https://arxiv.org/abs/1810.03292")  # fmt: skip
class SanityCheck:
    """Model-randomisation test. ``SanityCheck(threshold=0.5, seed=0)(cam, x, targets)``
    explains x with ``cam`` and with the same method on the model whose weights downstream of
    ``cam``'s first target layer are random; ``flagged`` when mean Spearman ρ > ``threshold``.

    Example:
        >>> r = SanityCheck()(camcore.GradCAM(model, "layer4_out"), x)  # doctest: +SKIP
        >>> r.spearman, r.flagged                                       # doctest: +SKIP
    """

    def __init__(self, threshold: float = 0.5, seed: int = 0) -> None:
        self.threshold, self.seed = threshold, seed

    def __call__(self, cam: Any, input_tensor: np.ndarray | Mapping[str, np.ndarray],
                 targets: Sequence[Any] | None = None) -> SanityResult:  # fmt: skip
        names = downstream_initializers(cam.model, cam.target_layers[0])
        other = cam.on_model(randomise_initializers(cam.model, names, self.seed))
        if targets is None:  # the same classes for both models: the original's top-1
            targets = cam.engine.targets_for(cam.engine.feeds(input_tensor), None)
        maps = cam(input_tensor, targets)
        random_maps = other(input_tensor, targets)
        rho = spearman(maps, random_maps)
        return SanityResult(maps, random_maps, rho, ssim(maps, random_maps), names, bool(rho.mean() > self.threshold))
