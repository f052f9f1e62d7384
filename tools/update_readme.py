"""Regenerate the README sections that come from the registries.

The method table and the list of ops with gradient rules sit between
``<!-- registry:NAME -->`` and ``<!-- /registry:NAME -->`` markers; this script
rewrites them from ``camcore.methods.METHODS``, ``camcore.graph.RULES``,
``camcore.metrics.METRICS`` and ``camcore.graph.export_methods.EXPORTABLE``.
``--check`` exits 1 when the README is stale (a test runs it).

    python tools/update_readme.py [--check]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def sections() -> dict[str, str]:
    from camcore.graph import RULES
    from camcore.methods import METHODS

    rows = ["| class | `--method` | what it computes |", "|---|---|---|"]
    rows += [f"| `{m.name}` | `{m.key}` | {m.summary.replace('|', chr(92) + '|')} |" for m in METHODS.values()]
    ops = ", ".join(f"`{op}`" for op in sorted(RULES))
    from camcore.metrics import METRICS

    metric_rows = ["| `camcore.metrics` class | kind | better | what it measures |", "|---|---|---|---|"]
    metric_rows += [f"| `{m.name}` | {m.kind} | {m.better} | {m.summary.replace('|', chr(92) + '|')} |"
                    for m in METRICS.values()]  # fmt: skip
    from camcore.graph.export_methods import EXPORTABLE

    exportable = ", ".join(f"`{key}`" for key in EXPORTABLE)
    return {"methods": "\n".join(rows), "ops": f"{len(RULES)} op types: {ops}.", "metrics": "\n".join(metric_rows),
            "exportable": f"Exportable methods: {exportable}."}  # fmt: skip


def render(text: str) -> str:
    for name, body in sections().items():
        pattern = re.compile(rf"(<!-- registry:{name} -->\n).*?(<!-- /registry:{name} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md lacks the <!-- registry:{name} --> markers")
        text = pattern.sub(lambda m, body=body: m.group(1) + body + "\n" + m.group(2), text)
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if README.md is stale")
    args = ap.parse_args()
    old = README.read_text()
    new = render(old)
    if args.check:
        if new != old:
            print("README.md is stale: run python tools/update_readme.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
