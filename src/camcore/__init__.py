"""camcore: Grad-CAM and friends for any ONNX model, by in-graph autodiff.

Every CAM class (``GradCAM``, ``HiResCAM``, ``FullGrad``, ...) is generated from the method
registry :data:`camcore.methods.METHODS`, every target class comes from the target registry
:data:`camcore.targets.TARGETS`, and so does ``__all__``.

The names load when first used, so ``import camcore.postprocess`` (the C++ overlay) stays
light: it imports neither onnx nor the graph surgery.

Example:
    >>> import camcore
    >>> cam = camcore.GradCAM("model.onnx")            # default target layer
    >>> maps = cam(x)                                  # (N, H, W) float32 in [0, 1]
    >>> picture = camcore.overlay(image, maps[0])      # uint8 HxWx3
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

__version__ = "0.1.0"

#: the public names that are not generated, and the module each lives in
_FIXED = {
    "BaseCAM": "camcore.cam",
    "Engine": "camcore.engine",
    "CamcoreError": "camcore.errors",
    "DeepFeatureFactorization": "camcore.attribution",
    "GuidedBackpropReLUModel": "camcore.attribution",
    "METHODS": "camcore.methods",
    "TARGETS": "camcore.targets",
    "Target": "camcore.targets",
    "augment": "camcore.graph",
    "export_cam_model": "camcore.graph.export",
    "scale_cam_image": "camcore.maps",
    "tokens_to_grid": "camcore.maps",
    "COLORMAPS": "camcore.postprocess",
    "colorize": "camcore.postprocess",
    "contour_mask": "camcore.postprocess",
    "draw_contour": "camcore.postprocess",
    "overlay": "camcore.postprocess",
    "resize_cam": "camcore.postprocess",
    "threshold_mask": "camcore.postprocess",
}


def _generated() -> dict[str, Any]:
    """The CAM classes (one per registered method) and the target classes, by name."""
    from camcore.cam import cam_classes
    from camcore.methods import METHODS
    from camcore.targets import TARGETS

    classes = cam_classes()
    assert set(classes) == {m.name for m in METHODS.values()}, "a registered method has no class"
    return {**classes, **TARGETS}


def __getattr__(name: str) -> Any:
    if (name.startswith("_") and name != "__all__") or importlib.util.find_spec(f"{__name__}.{name}") is not None:
        # private names and submodules (``from camcore import _core``) are the import system's
        raise AttributeError(f"module 'camcore' has no attribute {name!r}")
    if name == "__all__":
        value: Any = [*sorted(_generated()), *_FIXED, "__version__"]
    elif name in _FIXED:
        value = getattr(importlib.import_module(_FIXED[name]), name)
    else:
        generated = _generated()
        if name not in generated:
            raise AttributeError(f"module 'camcore' has no attribute {name!r}")
        value = generated[name]
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__getattr__("__all__")})
