"""Gradient rules, one per op type, grouped by family. Importing this package
imports every family module, whose ``@register`` decorators fill
:data:`camcore.graph.registry.RULES`; adding a family is adding a file."""

from __future__ import annotations

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "common":
        importlib.import_module(f"{__name__}.{_module.name}")
