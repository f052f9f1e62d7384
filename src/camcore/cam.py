"""The public CAM classes: one pipeline, the methods plug in.

The pipeline follows pytorch-grad-cam 1.5: for each target layer, the method's raw
map, ReLU, per-image min-max scaling and a bilinear resize to the input size; then
the mean over target layers and a last min-max scaling.

Example:
    >>> cam = GradCAM("resnet50.onnx")                  # default target layer
    >>> maps = cam(x)                                   # (N, H, W) float32 in [0, 1]
    >>> maps = cam(x, targets=[ClassifierOutputTarget(281)])
    >>> cam.outputs[0].shape, list(cam.activations)     # the model outputs, the layers
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
import onnx

from camcore.errors import CamcoreError, InputError
from camcore.graph import Augmented, augment, prepare_model, resolve_layers
from camcore.graph.layers import candidate_layers, default_layer
from camcore.graph.shapes import TensorInfo
from camcore.methods import CamMethod, method_by_key
from camcore.runtime import Session
from camcore.targets import Target

ReshapeTransform = Callable[[np.ndarray], np.ndarray]


def scale_cam_image(cams: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """Min-max scale each map to [0, 1] (``x - min`` over ``1e-7 + max``), then resize.

    ``size`` is (height, width); the resize is OpenCV's bilinear ``INTER_LINEAR``.
    """
    out = []
    for img in cams:
        img = img - np.min(img)
        img = img / (1e-7 + np.max(img))
        if size is not None and img.shape != size:
            img = cv2.resize(img.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        out.append(img)
    return np.asarray(out, dtype=np.float32)


def tokens_to_grid(tokens: np.ndarray, input_hw: tuple[int, int] | None = None) -> np.ndarray:
    """(N, T, C) transformer tokens -> (N, C, h, w); a leading class token is dropped.

    The grid is inferred from the token count and the input's aspect ratio: T or T-1
    must factor as h·w with h/w closest to the input's H/W.
    """
    n, t, c = tokens.shape
    ratio = input_hw[0] / input_hw[1] if input_hw else 1.0
    for count, skip in ((t, 0), (t - 1, 1)):
        grid = _factor_grid(count, ratio)
        if grid is not None:
            h, w = grid
            return tokens[:, skip:, :].reshape(n, h, w, c).transpose(0, 3, 1, 2)
    raise CamcoreError(f"cannot arrange {t} tokens as a grid (with or without a class token); pass reshape_transform")


def _factor_grid(count: int, ratio: float) -> tuple[int, int] | None:
    best: tuple[int, int] | None = None
    for h in range(1, count + 1):
        if count % h:
            continue
        w = count // h
        if best is None or abs(math.log(h / w / ratio)) < abs(math.log(best[0] / best[1] / ratio)):
            best = (h, w)
    if best is None or (min(best) == 1 and count > 3):
        return None
    return best


class BaseCAM:
    """Explains an ONNX model with a registered method; see :class:`GradCAM`."""

    method_key: str = ""

    def __init__(
        self,
        model: str | Path | onnx.ModelProto,
        target_layers: Sequence[str] | None = None,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        output: str | None = None,
        reshape_transform: ReshapeTransform | None = None,
    ) -> None:
        self.method: CamMethod = method_by_key(self.method_key)
        self.model, self.info = prepare_model(model)
        graph = self.model.graph
        initializers = {i.name for i in graph.initializer}
        self.input_names = [i.name for i in graph.input if i.name not in initializers]
        outputs = [o.name for o in graph.output]
        self.output = output or outputs[0]
        if self.output not in outputs:
            raise CamcoreError(f"unknown output {self.output!r}; the model's outputs are {outputs}")
        if target_layers is None:
            layer = default_layer(candidate_layers(self.model, self.info, self.output))
            if layer is None:
                raise CamcoreError(
                    "no default target layer (no 4-D activation with spatial extent); "
                    "pass target_layers (see `camcore layers MODEL`)"
                )
            self.target_layers = [layer.tensor]
        else:
            if isinstance(target_layers, str):
                target_layers = [target_layers]
            self.target_layers = resolve_layers(self.model, target_layers)
        self.providers = providers
        self.threads = threads
        self.reshape_transform = reshape_transform
        self._compiled: dict[tuple[object, ...], tuple[Augmented, Session]] = {}
        self.outputs: list[np.ndarray] = []
        self.activations: dict[str, np.ndarray] = {}
        self.gradients: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ inputs
    def _feeds(self, input_tensor: np.ndarray | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if isinstance(input_tensor, Mapping):
            feeds = {k: np.asarray(v) for k, v in input_tensor.items()}
        else:
            if len(self.input_names) != 1:
                raise InputError(f"the model has inputs {self.input_names}: pass a dict of arrays by name")
            feeds = {self.input_names[0]: np.asarray(input_tensor)}
        for name, value in feeds.items():
            self._check_input(name, value)
        return feeds

    def _check_input(self, name: str, value: np.ndarray) -> None:
        ti: TensorInfo | None = self.info.get(name)
        if ti is None:
            raise InputError(f"{name!r} is not a model input; inputs are {self.input_names}")
        want = onnx.helper.tensor_dtype_to_np_dtype(ti.elem_type)
        if value.dtype != want:
            raise InputError(f"input {name!r} must be {want} (got {value.dtype}); convert and normalise it first")
        if ti.shape is not None:
            if value.ndim != len(ti.shape):
                raise InputError(
                    f"input {name!r} must have {len(ti.shape)} dims {list(ti.shape)}, got shape {value.shape}"
                )
            for axis, (want_dim, got) in enumerate(zip(ti.shape, value.shape)):
                if isinstance(want_dim, int) and want_dim != got:
                    raise InputError(
                        f"input {name!r} needs size {want_dim} on axis {axis} (shape "
                        f"{list(ti.shape)}), got shape {value.shape}"
                    )
        if value.size == 0:
            raise InputError(f"input {name!r} is empty (shape {value.shape})")
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            raise InputError(f"input {name!r} contains NaN or Inf")

    # ------------------------------------------------------------------ graph
    def compiled(self, feeds: Mapping[str, np.ndarray], seed_mode: str) -> tuple[Augmented, Session]:
        """The augmented model and session for this input signature (batch stays dynamic)."""
        key = (seed_mode, *((k, v.shape[1:]) for k, v in sorted(feeds.items())))
        if key not in self._compiled:
            shapes = {k: [None, *v.shape[1:]] for k, v in feeds.items()}
            aug = augment(
                self.model,
                self.target_layers,
                output=self.output,
                seed=seed_mode,  # type: ignore[arg-type]
                input_shapes=shapes,
                **self._augment_options(),
            )
            self._compiled[key] = (aug, Session(aug.model, self.providers, self.threads))
        return self._compiled[key]

    def _augment_options(self) -> dict[str, object]:
        return {}

    def _seed_feed(
        self, aug: Augmented, session: Session, feeds: dict[str, np.ndarray], targets: Sequence[Target] | None, n: int
    ) -> np.ndarray:
        if aug.seed_mode == "class":
            if targets is None:
                return np.full((n,), -1, dtype=np.int64)
            return np.asarray([t.class_index for t in targets], dtype=np.int64)
        plain = session.run(
            {**feeds, aug.seed_input: np.zeros((n, *self._output_row_shape()), np.float32)}, [self.output]
        )
        out = plain[self.output]
        if targets is None:
            raise CamcoreError("this output needs explicit targets")
        return np.stack([t.seed(out[i]) for i, t in enumerate(targets)]).astype(out.dtype)

    def _output_row_shape(self) -> tuple[int, ...]:
        ti = self.info.get(self.output)
        if ti is None or ti.shape is None or not all(isinstance(d, int) for d in ti.shape[1:]):
            raise CamcoreError(f"output {self.output!r} needs a static shape for tensor targets")
        return tuple(int(d) for d in ti.shape[1:])  # type: ignore[arg-type]

    # ------------------------------------------------------------------ call
    def forward(
        self, input_tensor: np.ndarray | Mapping[str, np.ndarray], targets: Sequence[Target] | None = None
    ) -> dict[str, np.ndarray]:
        """One augmented run: fills ``outputs``, ``activations`` and ``gradients``."""
        feeds = self._feeds(input_tensor)
        n = next(iter(feeds.values())).shape[0]
        if targets is not None:
            targets = list(targets)
            if len(targets) == 1 and n > 1:
                targets = targets * n
            if len(targets) != n:
                raise CamcoreError(f"got {len(targets)} targets for a batch of {n} images")
        class_mode = targets is None or all(t.class_index is not None for t in targets)
        aug, session = self.compiled(feeds, "class" if class_mode else "tensor")
        if class_mode and targets is not None:
            self._check_classes(aug, targets)
        seed = self._seed_feed(aug, session, feeds, targets, n)
        result = session.run({**feeds, aug.seed_input: seed})
        self.outputs = [result[name] for name in aug.original_outputs]
        self.activations = {k: result[v] for k, v in aug.activation_outputs.items()}
        self.gradients = {k: result[v] for k, v in aug.gradient_outputs.items()}
        return feeds

    def _check_classes(self, aug: Augmented, targets: Sequence[Target]) -> None:
        ti = self.info.get(self.output)
        classes = ti.shape[-1] if ti is not None and ti.shape else None
        for t in targets:
            k = t.class_index
            if k is None or k < 0 or (isinstance(classes, int) and k >= classes):
                raise CamcoreError(f"target class {k} is out of range for {classes} classes")

    def layer_maps(self, input_hw: tuple[int, int] | None) -> list[np.ndarray]:
        """The raw (pre-ReLU) map of every target layer from the last forward run."""
        maps = []
        for layer in self.target_layers:
            act, grad = self.activations[layer], self.gradients[layer]
            if self.reshape_transform is not None:
                act, grad = self.reshape_transform(act), self.reshape_transform(grad)
            elif act.ndim == 3:
                act, grad = tokens_to_grid(act, input_hw), tokens_to_grid(grad, input_hw)
            if act.ndim < 3:
                raise CamcoreError(
                    f"layer {layer!r} has shape {act.shape}: it has no spatial extent; choose an earlier layer"
                )
            maps.append(self.method.fn(act, grad))
        return maps

    def __call__(
        self,
        input_tensor: np.ndarray | Mapping[str, np.ndarray],
        targets: Sequence[Target] | None = None,
    ) -> np.ndarray:
        """Maps of shape (N, H, W), float32 in [0, 1], at the input's spatial size."""
        feeds = self.forward(input_tensor, targets)
        first = feeds[self.input_names[0]] if self.input_names[0] in feeds else next(iter(feeds.values()))
        size = tuple(first.shape[-2:]) if first.ndim >= 4 else None
        per_layer = [
            scale_cam_image(np.maximum(raw, 0), size)[:, None]
            for raw in self.layer_maps(size)  # type: ignore[arg-type]
        ]
        stacked = np.maximum(np.concatenate(per_layer, axis=1), 0)
        return scale_cam_image(stacked.mean(axis=1))


    def __enter__(self) -> BaseCAM:
        """``with GradCAM(...) as cam:`` works as in pytorch-grad-cam."""
        return self

    def __exit__(self, *exc: object) -> None:
        self._compiled.clear()


class GradCAM(BaseCAM):
    """Grad-CAM for any ONNX model: ``GradCAM(model, target_layers=None)(x, targets)``.

    Channel weights are the spatial mean of the gradients; see
    :func:`camcore.methods.gradient.gradcam` for the formula.
    """

    method_key = "gradcam"
