"""The README's generated sections match the registries, and it opens with the two commands."""

from __future__ import annotations

from pathlib import Path

from tests.tooling import load_tool

ROOT = Path(__file__).resolve().parent.parent


def test_registry_sections_are_current() -> None:
    text = (ROOT / "README.md").read_text()
    assert load_tool("update_readme").render(text) == text, "README.md is stale: run python tools/update_readme.py"


def test_readme_opens_with_the_two_commands() -> None:
    head = "\n".join((ROOT / "README.md").read_text().splitlines()[:30])
    assert "camcore demo" in head and "pytest" in head
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = next(line for line in ci.splitlines() if "pytest" in line).strip()
    assert test_command in head, f"the README's test command must be .ci/run's: {test_command}"
