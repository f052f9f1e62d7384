"""Image and frame preprocessing shared by ``camcore explain`` and ``camcore video``.

A frame (uint8, H x W x 3, BGR from OpenCV or RGB) is resized to the model's input size with
OpenCV's bilinear ``INTER_LINEAR``, scaled to [0, 1], normalised with ``mean``/``std`` (given in
R, G, B order; ImageNet's by default), put in the model's channel order (RGB unless ``bgr``) and
layout (NCHW unless ``nhwc``).
"""

from __future__ import annotations

import argparse
import ast
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from camcore.errors import CamcoreError

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: Channel order of the frames handed to the pipeline.
Channels = Literal["bgr", "rgb"]


@dataclass(frozen=True)
class Preprocess:
    """Turn one uint8 frame into one float32 model input (no batch axis).

    Args:
        size: the model's input (height, width); ``None`` keeps the frame's size.
        mean, std: per-channel statistics in R, G, B order, applied after scaling to [0, 1].
        bgr: the model expects BGR channel order.
        nhwc: the model expects NHWC layout.

    Example:
        >>> pre = Preprocess((224, 224))
        >>> pre(np.zeros((720, 1280, 3), np.uint8), channels="bgr").shape
        (3, 224, 224)
    """

    size: tuple[int, int] | None = None
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD
    bgr: bool = False
    nhwc: bool = False
    _mul: np.ndarray = field(init=False, repr=False, compare=False)
    _add: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, np.float32).reshape(-1)
        std = np.asarray(self.std, np.float32).reshape(-1)
        if mean.shape != (3,) or std.shape != (3,):
            raise CamcoreError(f"mean and std need 3 values each, got {mean.tolist()} and {std.tolist()}")
        if np.any(std == 0) or not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
            raise CamcoreError(f"std must be finite and non-zero and mean finite, got mean {mean.tolist()}, "
                               f"std {std.tolist()}")  # fmt: skip
        if self.bgr:
            mean, std = mean[::-1], std[::-1]
        # (x / 255 - mean) / std  ==  x * mul + add
        object.__setattr__(self, "_mul", (1.0 / (255.0 * std)).astype(np.float32))
        object.__setattr__(self, "_add", (-mean / std).astype(np.float32))

    @property
    def input_hw(self) -> tuple[int, int] | None:
        """The model input's (height, width), when fixed."""
        return self.size

    def __call__(self, frame: np.ndarray, channels: Channels = "bgr") -> np.ndarray:
        """The model input for ``frame`` (uint8 H x W x 3 in ``channels`` order)."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] == 0 or frame.shape[1] == 0:
            raise CamcoreError(f"an image must be H x W x 3 with H, W > 0, got shape {tuple(frame.shape)}")
        if self.size is not None and frame.shape[:2] != self.size:
            frame = cv2.resize(frame, (self.size[1], self.size[0]), interpolation=cv2.INTER_LINEAR)
        want_bgr = self.bgr
        if (channels == "bgr") != want_bgr:
            frame = frame[..., ::-1]
        x = frame.astype(np.float32)
        x *= self._mul
        x += self._add
        return x if self.nhwc else np.ascontiguousarray(x.transpose(2, 0, 1))


def model_input_size(engine: Any, nhwc: bool | None = None) -> tuple[int, int] | None:
    """The (height, width) of an engine's image input (a CAM's engine), or ``None`` when it is
    dynamic; ``nhwc`` None reads the layout from the graph (``engine.input_layout``).

    Raises:
        CamcoreError: the input is not 4-D.
    """
    engine = getattr(engine, "engine", engine)
    name = engine.input_names[0]
    shape = engine.info[name].shape
    if shape is None or len(shape) != 4:
        raise CamcoreError(f"images need a 4-D model input; {name!r} is {None if shape is None else list(shape)}")
    if nhwc is None:
        nhwc = engine.input_layout == "NHWC"
    hw = (shape[1], shape[2]) if nhwc else (shape[2], shape[3])
    if all(isinstance(d, int) and d > 0 for d in hw):
        return (int(hw[0]), int(hw[1]))
    return None


@dataclass(frozen=True)
class ModelMetadata:
    """What a model says about its own preprocessing and classes, and where it said it.

    Read from the ONNX ``metadata_props`` (``mean``, ``std``, ``scale``, ``color``, ``layout``,
    ``class_names`` or Ultralytics' ``names``; Ultralytics models take [0, 1] pixels: mean 0,
    std 1) and from a JSON file beside the model with the same stem (``model.json``) holding the
    same keys. ``mean``/``std`` are given for pixels scaled to [0, 1] (a ``scale`` other than
    1/255 is folded in). Anything absent is None.
    """

    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    bgr: bool | None = None
    nhwc: bool | None = None
    class_names: list[str] | None = None
    source: str = ""


def _values(raw: Any) -> list[float] | None:
    if isinstance(raw, str):
        text = raw.strip()
        try:
            raw = json.loads(text)
        except ValueError:
            raw = [v for v in text.strip("[]()").replace(",", " ").split()]
    try:
        out = [float(v) for v in (raw if isinstance(raw, (list, tuple)) else [raw])]
    except (TypeError, ValueError):
        return None
    if len(out) == 1:
        out *= 3
    return out if len(out) == 3 else None


def _names(raw: Any) -> list[str] | None:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            try:
                raw = ast.literal_eval(raw)  # Ultralytics writes a Python dict: {0: 'person', ...}
            except (ValueError, SyntaxError):
                return None
    if isinstance(raw, Mapping):
        try:
            return [str(raw[k]) for k in sorted(raw, key=int)]
        except (TypeError, ValueError):
            return None
    if isinstance(raw, (list, tuple)):
        return [str(v) for v in raw]
    return None


def read_model_metadata(model: Any, path: str | Path | None = None) -> ModelMetadata:
    """The :class:`ModelMetadata` of a ``ModelProto`` (and of the JSON beside its ``path``)."""
    found: dict[str, Any] = {}
    sources = []
    props = {p.key: p.value for p in getattr(model, "metadata_props", [])}
    if props:
        found.update(props)
        if "Ultralytics" in props.get("author", "") and "mean" not in props:
            found.update(mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])
        sources.append("the model's metadata")
    if path is not None:
        sidecar = Path(path).with_suffix(".json")
        if sidecar.is_file():
            try:
                data = json.loads(sidecar.read_text())
            except (OSError, ValueError):
                data = None
            if isinstance(data, dict):
                found.update(data)
                sources.append(sidecar.name)
    mean, std = _values(found.get("mean")), _values(found.get("std"))
    scale = found.get("scale")
    if mean is not None and std is not None and isinstance(scale, (int, float)) and scale > 0:
        k = 255.0 * float(scale)  # (u·scale − m)/s  ==  (u/255 − m/k)/(s/k)
        mean, std = [m / k for m in mean], [v / k for v in std]
    color, layout = str(found.get("color", "")).upper(), str(found.get("layout", "")).upper()
    return ModelMetadata(
        mean=None if mean is None or std is None else (mean[0], mean[1], mean[2]),
        std=None if mean is None or std is None else (std[0], std[1], std[2]),
        bgr={"BGR": True, "RGB": False}.get(color),
        nhwc={"NHWC": True, "NCHW": False}.get(layout),
        class_names=_names(found.get("class_names", found.get("names"))),
        source=" and ".join(sources),
    )


def parse_size(text: str) -> tuple[int, int]:
    """``"224x224"`` (height x width) as a tuple: the ``--size`` argument of the CLI commands."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 224x224 (HxW), not {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, not {text!r}")
    return h, w
