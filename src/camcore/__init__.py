"""camcore: Grad-CAM and friends for any ONNX model, by in-graph autodiff.

Every CAM class (``GradCAM``, ``HiResCAM``, ``FullGrad``, ...) is generated from the
method registry :data:`camcore.methods.METHODS`, and so is ``__all__``.

Example:
    >>> import camcore
    >>> cam = camcore.GradCAM("model.onnx")            # default target layer
    >>> maps = cam(x)                                  # (N, H, W) float32 in [0, 1]
    >>> picture = camcore.overlay(image, maps[0])      # uint8 HxWx3
"""

from __future__ import annotations

from camcore import cam as _cam
from camcore.attribution import DeepFeatureFactorization, GuidedBackpropReLUModel
from camcore.cam import BaseCAM, scale_cam_image, tokens_to_grid
from camcore.errors import CamcoreError
from camcore.graph import augment
from camcore.methods import METHODS
from camcore.postprocess import COLORMAPS, colorize, contour_mask, draw_contour, overlay, resize_cam, threshold_mask
from camcore.targets import TARGETS, Target

__version__ = "0.1.0"

#: the public CAM classes, one per registered method (the registry is the source)
_CAM_CLASSES = _cam.cam_classes()
assert set(_CAM_CLASSES) == {m.name for m in METHODS.values()}, "a registered method has no class"
globals().update(_CAM_CLASSES)
globals().update(TARGETS)

__all__ = [
    *sorted(_CAM_CLASSES),
    *sorted(TARGETS),
    "BaseCAM",
    "CamcoreError",
    "DeepFeatureFactorization",
    "GuidedBackpropReLUModel",
    "Target",
    "__version__",
    "COLORMAPS",
    "augment",
    "colorize",
    "contour_mask",
    "draw_contour",
    "overlay",
    "resize_cam",
    "threshold_mask",
    "scale_cam_image",
    "tokens_to_grid",
]

