"""Explainers beside the CAM pipeline: guided backpropagation and deep feature factorization.

Both run on an :class:`~camcore.engine.Engine` (its sessions, input checks and layouts).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from camcore.engine import Engine, Feeds
from camcore.errors import CamcoreError
from camcore.maps import ReshapeTransform, arrange, scale_cam_image
from camcore.targets import ClassifierOutputTarget


class GuidedBackpropReLUModel:
    """Guided backpropagation (Springenberg et al. 2015): the gradient of the score with respect
    to the input, through ReLUs that pass only positive gradients at positive inputs
    (``augment(..., guided_relu=True)`` with the graph input as target).

    ``GuidedBackpropReLUModel(model)(input_img, target_category=None)`` returns (H, W, C) for a
    single image, as pytorch-grad-cam, and (N, H, W, C) for a batch (pytorch-grad-cam only
    does the first image). ``target_category``: an int, one per image, or None (top-1).

    Example:
        >>> gb = GuidedBackpropReLUModel("resnet18.onnx")(x)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: str | Path | onnx.ModelProto,
        device: str | None = None,
        *,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        output: str | None = None,
    ) -> None:
        if device is not None and providers is None and device.startswith("cuda"):
            providers = ["CUDAExecutionProvider"]
        self.engine = Engine(model, providers=providers, threads=threads, output=output)

    def __call__(self, input_img: np.ndarray, target_category: int | Sequence[int] | None = None) -> np.ndarray:
        engine = self.engine
        feeds = engine.feeds(input_img)
        n = engine.batch_of(feeds)
        targets = None
        if target_category is not None:
            cats = [target_category] * n if np.ndim(target_category) == 0 else list(target_category)  # type: ignore[arg-type]
            targets = [ClassifierOutputTarget(k) for k in cats]  # type: ignore[arg-type]
        name = engine.input_names[0]
        grad = engine.run(feeds, targets, layers=[], gradients=False, extra=[name], guided_relu=True).extra[name]
        out = grad.transpose(0, 2, 3, 1) if grad.ndim == 4 and engine.input_layout == "NCHW" else grad
        return out[0] if n == 1 else out


class DeepFeatureFactorization:
    """Deep Feature Factorization (Collins et al. 2018, https://arxiv.org/abs/1806.10206), as in
    pytorch-grad-cam: non-negative matrix factorisation of the (C, N·h·w) activations of one
    layer into ``n_components`` concepts.

    ``DeepFeatureFactorization(model, target_layer)(input_tensor, n_components=16)`` returns
    ``(concepts (C, k), explanations (N, k, H, W) in [0, 1])``, plus the concept outputs when
    ``computation_on_concepts`` (a callable on (k, C) arrays) is given; pass
    ``computation_on_concepts="classifier"`` to use the linear classifier found in the graph
    (as for :class:`CAM`). Needs scikit-learn (its NMF, ``init='random', random_state=0``).

    Example:
        >>> concepts, maps = DeepFeatureFactorization("resnet18.onnx", "layer4_out")(x, 4)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: str | Path | onnx.ModelProto,
        target_layer: str | None = None,
        reshape_transform: ReshapeTransform | None = None,
        computation_on_concepts: Callable[[np.ndarray], np.ndarray] | str | None = None,
        **kwargs: Any,
    ) -> None:
        unknown = sorted(set(kwargs) - {"providers", "threads", "output", "base_dir"})
        if unknown:
            raise CamcoreError(f"DeepFeatureFactorization has no option {unknown[0]!r}")
        self.engine = Engine(model, **kwargs)
        self.layer = self.engine.resolve_layers(None if target_layer is None else [target_layer])[0]
        self.reshape_transform = reshape_transform
        self.computation_on_concepts = computation_on_concepts

    def __call__(self, input_tensor: np.ndarray | Feeds, n_components: int = 16) -> tuple[np.ndarray, ...]:
        from camcore.methods.factorization import dff

        engine, layer = self.engine, self.layer
        feeds = engine.feeds(input_tensor)
        hw = engine.input_size(feeds)
        tensor = engine.forward(feeds, [layer]).activations[layer]
        act = arrange(tensor, engine.layer_layout(layer), hw, self.reshape_transform)
        concepts, explanations = dff(act, n_components)
        size = hw or act.shape[2:]
        maps = np.stack([scale_cam_image(e, size) for e in explanations])
        fn = self.computation_on_concepts
        if fn is None:
            return concepts, maps
        if fn == "classifier":
            w = engine.classifier_weights(layer)
            return concepts, maps, concepts.T.astype(np.float32) @ w.T
        return concepts, maps, np.asarray(fn(concepts.T.astype(np.float32)))  # type: ignore[operator]
