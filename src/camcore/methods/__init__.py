"""CAM methods: each is one small function over (activations, gradients), registered
in :data:`METHODS`. Importing this package imports every family module."""

from __future__ import annotations

import importlib
import pkgutil

from camcore.methods.registry import METHODS, CamMethod, method_by_key, register_method

#: the families shown first, in this order (CLI choices, docs); every other module of the package loads after them
_FIRST = ("gradient", "projection", "perturbation", "ablation", "pipeline")
for _name in (*_FIRST, *(m.name for m in pkgutil.iter_modules(__path__))):
    if _name != "registry":
        importlib.import_module(f"{__name__}.{_name}")

__all__ = ["METHODS", "CamMethod", "method_by_key", "register_method"]
