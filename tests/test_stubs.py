"""The type stub of the ``camcore`` namespace matches the registry and ``__all__``, and ships."""

from __future__ import annotations

import ast
from pathlib import Path

import camcore
from camcore.cam import BaseCAM
from camcore.methods import METHODS
from tests.tooling import load_tool

ROOT = Path(__file__).resolve().parent.parent
STUB = ROOT / "src" / "camcore" / "__init__.pyi"


def _stub() -> ast.Module:
    return ast.parse(STUB.read_text())


def test_stub_is_current() -> None:
    stale = "src/camcore/__init__.pyi is stale: run python tools/make_stubs.py"
    assert load_tool("make_stubs").render() == STUB.read_text(), stale


def test_stub_declares_all_of_all() -> None:
    declared: set[str] = set()
    stub_all: list[str] = []
    for node in _stub().body:
        if isinstance(node, ast.ClassDef):
            declared.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            declared.add(node.target.id)
        elif isinstance(node, ast.ImportFrom):  # only `import X as X` re-exports from a stub
            declared |= {a.name for a in node.names if a.asname == a.name}
        elif isinstance(node, ast.Assign) and [getattr(t, "id", "") for t in node.targets] == ["__all__"]:
            stub_all = ast.literal_eval(node.value)
    missing = sorted(set(camcore.__all__) - declared)
    assert not missing, f"the stub does not declare {missing}: run python tools/make_stubs.py"
    assert sorted(stub_all) == sorted(camcore.__all__)


def test_stub_classes_take_the_registered_options() -> None:
    """Each CAM class's keyword-only parameters: BaseCAM's, then the method's options with their defaults."""
    classes = {n.name: n for n in _stub().body if isinstance(n, ast.ClassDef)}
    base_kw = ["providers", "threads", "output", "batch_size", "base_dir"]
    for m in METHODS.values():
        init = next(f for f in classes[m.name].body if isinstance(f, ast.FunctionDef) and f.name == "__init__")
        assert [a.arg for a in init.args.args] == ["self", "model", "target_layers", "reshape_transform"]
        assert [a.arg for a in init.args.kwonlyargs] == [*base_kw, *m.options], m.name
        assert init.args.kwarg is None, f"{m.name} must not accept arbitrary keywords"
        for arg, default in zip(init.args.kwonlyargs[len(base_kw) :], init.args.kw_defaults[len(base_kw) :]):
            if not (isinstance(default, ast.Constant) and default.value is Ellipsis):
                assert ast.literal_eval(default) == m.options[arg.arg], (m.name, arg.arg)
        assert [ast.unparse(b) for b in classes[m.name].bases] == ["BaseCAM"]
        assert issubclass(getattr(camcore, m.name), BaseCAM)


def test_installed_package_ships_the_stub_and_py_typed() -> None:
    package = Path(camcore.__file__).resolve().parent
    assert (package / "py.typed").is_file(), "the wheel lacks the PEP 561 marker camcore/py.typed"
    assert (package / "__init__.pyi").read_text() == STUB.read_text(), "reinstall: python -m pip install ."
