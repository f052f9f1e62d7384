"""camcore: Grad-CAM and friends for any ONNX model, by in-graph autodiff.

Example:
    >>> import camcore
    >>> cam = camcore.GradCAM("model.onnx")            # default target layer
    >>> maps = cam(x)                                  # (N, H, W) float32 in [0, 1]
    >>> picture = camcore.overlay(image, maps[0])      # uint8 HxWx3
"""

from __future__ import annotations

from camcore.cam import BaseCAM, GradCAM, scale_cam_image
from camcore.errors import CamcoreError
from camcore.graph import augment
from camcore.methods import METHODS
from camcore.postprocess import overlay
from camcore.targets import ClassifierOutputTarget, Target

__version__ = "0.1.0"

#: the public CAM classes, one per registered method (the registry is the source)
_CAM_CLASSES = {"GradCAM": GradCAM}
assert set(_CAM_CLASSES) == {m.name for m in METHODS.values()}, "a registered method has no class"

__all__ = [
    *sorted(_CAM_CLASSES),
    "BaseCAM",
    "CamcoreError",
    "ClassifierOutputTarget",
    "Target",
    "__version__",
    "augment",
    "overlay",
    "scale_cam_image",
]
