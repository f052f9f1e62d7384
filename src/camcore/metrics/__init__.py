"""CAM quality metrics, each registered by name in :data:`METRICS` (as the methods are).

The perturbation metrics take pytorch-grad-cam's call signature,
``metric(input_tensor, cams, targets, model) -> (N,)``, where ``model`` is a camcore CAM
object (its sessions are reused), an ONNX path or a ``ModelProto``, and ``targets`` one
:class:`camcore.targets.Target` per image (None: the top-1 class of the clean image).

Example:
    >>> from camcore.metrics import ROADCombined, DeletionAUC, PointingGame
    >>> ROADCombined()(x, maps, targets, cam)                       # doctest: +SKIP
    >>> DeletionAUC(steps=32)(x, maps, targets, cam)                # doctest: +SKIP
    >>> PointingGame()(maps, boxes=[(10, 10, 60, 60)])              # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import pkgutil

from camcore.metrics.registry import METRICS, MetricInfo, metric_by_name, register_metric

for _module in pkgutil.iter_modules(__path__):  # every module of the package registers its metrics
    if _module.name != "registry":
        importlib.import_module(f"{__name__}.{_module.name}")

globals().update({m.name: m.cls for m in METRICS.values()})

__all__ = ["METRICS", "MetricInfo", "metric_by_name", "register_metric", *sorted(METRICS)]
