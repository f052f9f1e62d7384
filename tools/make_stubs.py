"""Regenerate ``src/camcore/__init__.pyi``, the type stub of the ``camcore`` namespace.

``camcore/__init__.py`` puts the CAM classes and the targets into the namespace at
import time, which type checkers and IDEs cannot see; the stub declares every name of
``camcore.__all__``:

* one class per registered method (``camcore.methods.METHODS``), with ``BaseCAM.__init__``'s
  parameters and the method's options as keyword-only parameters. An option's type is its
  annotation in the method's function, else the annotation of that name in another
  registered method's function, else its default's type (``_OPTION_TYPES`` widens the
  options ``BaseCAM`` converts);
* every other name as a re-export from the module that defines it (``from camcore.cam
  import BaseCAM as BaseCAM``), or that ``camcore/__init__.py``'s table of lazily loaded names
  (``_FIXED``) gives, so the stub cannot drift from the code; ``__version__: str``.

``--check`` exits 1 when the stub is stale (a test runs it).

    python tools/make_stubs.py [--check]
"""

from __future__ import annotations

import argparse
import ast
import builtins
import importlib
import inspect
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STUB = ROOT / "src" / "camcore" / "__init__.pyi"

#: the module an annotation's name comes from (None: ``import name``); other names are an error
_ANNOTATION_IMPORTS: dict[str, str | None] = {
    "Any": "typing",
    "Callable": "collections.abc",
    "Literal": "typing",
    "Mapping": "collections.abc",
    "Sequence": "collections.abc",
    "Path": "pathlib",
    "np": None,
    "onnx": None,
    "ReshapeTransform": "camcore.maps",
    "Feeds": "camcore.engine",
}
_IMPORT_AS = {"np": "numpy"}
#: options BaseCAM accepts more widely than the method's function does (``cam._method_key``)
_OPTION_TYPES = {"base_method": "str | type[BaseCAM]"}
_SIMPLE_DEFAULTS = (bool, int, float, str, type(None))


def _annotation(fn: Callable[..., Any], name: str) -> str | None:
    param = inspect.signature(fn).parameters.get(name)
    if param is None or param.annotation is param.empty:
        return None
    ann = param.annotation
    return ann if isinstance(ann, str) else inspect.formatannotation(ann)


def option_type(method: Any, name: str, default: Any) -> str:
    """The stub type of option ``name`` of ``method`` (see the module docstring)."""
    from camcore.methods import METHODS

    if name in _OPTION_TYPES:
        return _OPTION_TYPES[name]
    own = _annotation(method.fn, name)
    if own:
        return own
    others = {a for m in METHODS.values() if (a := _annotation(m.fn, name))}
    if len(others) == 1:
        return others.pop()
    if others:
        raise SystemExit(
            f"{method.name}'s option {name!r} has different types in other methods ({sorted(others)}): "
            f"annotate it in {method.fn.__module__}.{method.fn.__name__}"
        )
    if default is None:
        raise SystemExit(f"{method.name}'s option {name!r} defaults to None and no method function annotates it")
    if isinstance(default, tuple):
        kinds = {type(v).__name__ for v in default}
        return f"Sequence[{kinds.pop() if len(kinds) == 1 else 'Any'}]"
    return type(default).__name__


def _default(value: Any) -> str:
    """A default as the stub writes it: simple values as they are (strings double-quoted), else ``...``."""
    if isinstance(value, str) and value.isprintable() and '"' not in value and "\\" not in value:
        return f'"{value}"'
    if isinstance(value, tuple) and all(isinstance(v, _SIMPLE_DEFAULTS) and not isinstance(v, str) for v in value):
        return repr(value)
    return repr(value) if isinstance(value, _SIMPLE_DEFAULTS) and not isinstance(value, str) else "..."


def _base_params() -> list[tuple[str, str, str | None, bool]]:
    """``BaseCAM.__init__``'s parameters as (name, annotation, default, keyword-only), without **options."""
    from camcore.cam import BaseCAM

    params = []
    for p in list(inspect.signature(BaseCAM.__init__).parameters.values())[1:]:
        if p.kind is p.VAR_KEYWORD:
            continue
        if p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            raise SystemExit(f"BaseCAM.__init__'s parameter {p.name} is {p.kind}: teach tools/make_stubs.py")
        ann = p.annotation if isinstance(p.annotation, str) else inspect.formatannotation(p.annotation)
        default = None if p.default is p.empty else _default(p.default)
        params.append((p.name, ann, default, p.kind is p.KEYWORD_ONLY))
    return params


def _docstring(text: str) -> list[str]:
    if '"""' in text or "\\" in text:
        return [f"    {text!r}"]
    lines = textwrap.wrap(f'"""{text}"""', width=116)
    return ["    " + line for line in lines]


def _class(method: Any, base: list[tuple[str, str, str | None, bool]]) -> list[str]:
    clash = set(method.options) & {name for name, *_ in base}
    if clash:
        raise SystemExit(f"{method.name}'s options {sorted(clash)} shadow BaseCAM parameters")
    lines = ["    def __init__(", "        self,"]
    star = False
    for name, ann, default, kw_only in base:
        if kw_only and not star:
            lines.append("        *,")
            star = True
        lines.append(f"        {name}: {ann}" + (f" = {default}," if default is not None else ","))
    for name, value in method.options.items():
        lines.append(f"        {name}: {option_type(method, name, value)} = {_default(value)},")
    lines.append("    ) -> None: ...")
    bare = method.name.strip("_")
    noqa = "  # noqa: N801" if "_" in bare or not bare[:1].isupper() else ""
    return [f"class {method.name}(BaseCAM):{noqa}", *_docstring(method.summary.rstrip(".") + "."), "", *lines]


def _init_imports() -> dict[str, str]:
    """The module ``camcore/__init__.py`` loads each fixed name from (its ``_FIXED`` table)."""
    import camcore

    return dict(camcore._FIXED)


def _source(name: str, obj: Any, imported: dict[str, str]) -> str:
    """The module a re-exported name comes from: where it is defined, else where __init__ imports it from."""
    for module in (getattr(obj, "__module__", None), imported.get(name)):
        if (
            isinstance(module, str)
            and module.startswith("camcore")
            and getattr(importlib.import_module(module), name, None) is obj
        ):
            return module
    raise SystemExit(f"camcore.__all__ names {name!r}, which neither its module nor camcore/__init__.py imports place")


def _names(annotation: str) -> set[str]:
    tree = ast.parse(annotation, mode="eval")
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            while isinstance(node, ast.Attribute):
                node = node.value
        if isinstance(node, ast.Name):
            roots.add(node.id)
    return roots


def _import_block(used: set[str], reexports: dict[str, str]) -> list[str]:
    """Import lines in ruff's isort order: stdlib, third party, camcore; ``import`` before ``from``."""
    stdlib: dict[str, set[str]] = {}
    third: set[str] = set()
    first: dict[str, set[str]] = {}
    for name in sorted(used):
        module = _ANNOTATION_IMPORTS[name]
        if module is None:
            third.add(f"import {_IMPORT_AS[name]} as {name}" if name in _IMPORT_AS else f"import {name}")
        else:
            (first if module.startswith("camcore") else stdlib).setdefault(module, set()).add(name)
    lines: list[str] = []
    for module in sorted(stdlib):
        lines.append(f"from {module} import {', '.join(sorted(stdlib[module], key=_member_key))}")
    if lines:
        lines.append("")
    if third:
        lines += [*sorted(third), ""]
    members: dict[str, list[str]] = {}
    for name, module in reexports.items():
        members.setdefault(module, []).append(f"{name} as {name}")
    for module, names in first.items():
        members.setdefault(module, []).extend(names)
    for module in sorted(members):
        for member in sorted(members[module], key=_member_key):
            lines.append(f"from {module} import {member}")
    return lines


def _member_key(member: str) -> tuple[int, str]:
    """isort's order-by-type: CONSTANTS, Classes, functions (case-insensitively within each)."""
    name = member.split(" as ")[0]
    kind = 0 if name.isupper() and len(name) > 1 else 1 if name[:1].isupper() else 2
    return kind, name.lower()


def _all_key(name: str) -> tuple[int, str]:
    """ruff's RUF022 order of ``__all__``: SCREAMING_CASE, CamelCase, the rest."""
    kind = 0 if name.isupper() and len(name) > 1 else 1 if name[:1].isupper() else 2
    return kind, name


def render() -> str:
    import camcore
    from camcore.methods import METHODS

    classes = {m.name: m for m in METHODS.values()}
    missing = set(classes) - set(camcore.__all__)
    if missing:
        raise SystemExit(f"registered methods missing from camcore.__all__: {sorted(missing)}")
    imported = _init_imports()
    reexports = {
        name: _source(name, getattr(camcore, name), imported)
        for name in camcore.__all__
        if name not in classes and name != "__version__"
    }
    if "BaseCAM" not in reexports:
        raise SystemExit("camcore.__all__ lacks BaseCAM, the base of every CAM class")
    base = _base_params()
    bodies = [_class(classes[name], base) for name in sorted(classes, key=str.lower)]
    used = {n for _, ann, *_ in base for n in _names(ann)}
    used |= {n for m in classes.values() for k, v in m.options.items() for n in _names(option_type(m, k, v))}
    known = set(_ANNOTATION_IMPORTS) | set(reexports) | set(dir(builtins))
    if used - known:
        raise SystemExit(f"annotations use {sorted(used - known)}: add them to make_stubs.py's _ANNOTATION_IMPORTS")
    used &= set(_ANNOTATION_IMPORTS)
    out = [
        '"""Type stub for the ``camcore`` namespace: generated by tools/make_stubs.py from the method',
        'registry and ``camcore.__all__``; do not edit (a test fails when it is stale)."""',
        "",
        *_import_block(used, reexports),
        "",
        "__version__: str",
        "",
        "__all__ = [",
        *(f'    "{name}",' for name in sorted(camcore.__all__, key=_all_key)),
        "]",
    ]
    for body in bodies:
        out += ["", *body]
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the stub is stale")
    args = ap.parse_args()
    new = render()
    if args.check:
        if not STUB.exists() or STUB.read_text() != new:
            print("src/camcore/__init__.pyi is stale: run python tools/make_stubs.py", file=sys.stderr)
            return 1
        return 0
    STUB.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
