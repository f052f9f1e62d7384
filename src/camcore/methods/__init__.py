"""CAM methods: each is one small function over (activations, gradients), registered
in :data:`METHODS`. Importing this package imports every family module."""

from __future__ import annotations

import importlib
import pkgutil

from camcore.methods.registry import METHODS, CamMethod, method_by_key, register_method

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "registry":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "CamMethod", "method_by_key", "register_method"]
