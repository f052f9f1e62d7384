"""``camcore audit MODEL DATA --out DIR``: explain a whole dataset into samples.parquet,
summary.json and report.html (the work is :func:`camcore.audit.run`'s; this parses and prints).

Wiring into ``camcore.cli``::

    from camcore.audit.cli import add_audit_parser, cmd_audit
    add_audit_parser(sub)                  # in _parser()
    "audit": cmd_audit,                    # in main()'s handler table

Exit codes: 0 when every sample was explained, 2 when some failed (their rows carry the
error) or on bad input (one line, before any work), 130 / 143 on Ctrl-C / SIGTERM (the rows
done are kept: rerun the same command to resume).
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_audit_parser", "cmd_audit"]


def _groups(text: str) -> list[str]:
    names = [g.strip() for g in text.split(",")]
    if not names or any(not g for g in names):
        raise argparse.ArgumentTypeError(f"needs column names separated by commas, not {text!r}")
    return names


def add_audit_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``audit`` command to ``camcore``'s sub-parsers and return its parser.

    Example:
        >>> p = argparse.ArgumentParser(); sub = p.add_subparsers(dest="command")
        >>> _ = add_audit_parser(sub)
        >>> p.parse_args(["audit", "m.onnx", "data/", "--out", "o"]).engine
        'local'
    """
    from camcore.arguments import add_model_options, add_preprocess_options, positive_int
    from camcore.tasks import TASKS

    a = subparsers.add_parser(
        "audit",
        help="explain a whole labelled dataset: where the model looks, per class and subgroup, and its shortcuts",
        description="Explain every sample of DATA (a folder of class sub-folders, or a CSV/Parquet manifest with "
        "path, label, group and region columns) and write DIR/samples.parquet (one row per sample), "
        "DIR/summary.json and DIR/report.html. A rerun of the same command resumes.",
    )
    a.add_argument("model", help="the .onnx classifier")
    a.add_argument("data", help="a folder of class sub-folders, or a .csv / .parquet manifest (columns: path, "
                                "optional label, group columns, optional x0,y0,x1,y1 box or mask path)")  # fmt: skip
    a.add_argument("--out", required=True, metavar="DIR", help="output folder (created; resumed when rerun)")
    add_model_options(a)
    a.add_argument("--task", choices=list(TASKS), default=None,
                   help="what the model does (default: read from the output's shape; the audit is made for "
                        "classify)")  # fmt: skip
    add_preprocess_options(a)
    a.add_argument("--batch-size", type=positive_int, default=16, metavar="N", help="images per run (default: 16)")
    a.add_argument("--classes", metavar="NAMES|FILE",
                   help="class names in output order: comma-separated, or a file with one per line (default: the "
                        "model's metadata, else the sorted labels when their count equals the outputs)")  # fmt: skip
    a.add_argument("--groups", type=_groups, default=[], metavar="COL[,COL]",
                   help="manifest columns naming subgroups to compare (site, camera, ...)")  # fmt: skip
    a.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this machine's cores (default); ray: Ray Data (camcore[ray])")  # fmt: skip
    a.add_argument("--ray-address", metavar="ADDRESS", help="--engine ray: the cluster (default: a local Ray)")
    a.add_argument("--workers", type=positive_int, metavar="N",
                   help="inference threads (default: the cores on the CPU, 1 on a GPU)")  # fmt: skip
    a.add_argument("--restart", action="store_true",
                   help="discard the rows of an earlier audit in DIR made with another model, layer, method or "
                        "preprocessing")  # fmt: skip
    return a


def cmd_audit(args: argparse.Namespace) -> int:
    """Run the audit; print where it went and the one-line summary. 2 when samples failed."""
    from camcore.arguments import EXIT_BAD_INPUT, say
    from camcore.audit.run import run
    from camcore.errors import CamcoreError

    if args.ray_address is not None and args.engine != "ray":
        raise CamcoreError("--ray-address needs --engine ray")
    _, summary = run(
        args.model, args.data, args.out, layers=args.layer, method=args.method, task=args.task, size=args.size,
        mean=args.mean, std=args.std, bgr=args.bgr, nhwc=True if args.nhwc else (False if args.nchw else None),
        batch_size=args.batch_size, classes=args.classes, groups=args.groups, engine=args.engine,
        restart=args.restart, output=args.output, providers=args.providers, threads=args.threads,
        workers=args.workers, ray_address=args.ray_address, note=say,
    )  # fmt: skip
    counts = summary.get("counts", {})
    flags = summary.get("flags", [])
    kinds = sorted({str(f.get("kind")) for f in flags})
    engine = summary.get("engine", {})
    rate = engine.get("images_per_second")
    print(f"audited {counts.get('samples', 0)} samples into {args.out}: {counts.get('samples', 0)} rows, "
          f"{counts.get('errors', 0)} errors, {len(flags)} flags{' (' + ', '.join(kinds) + ')' if kinds else ''}"
          f"{f', {rate:g} img/s' if rate else ''}")  # fmt: skip
    report = summary.get("report")
    if report:
        print(f"report: {report}")
    if counts.get("errors"):
        say(f"{counts['errors']} sample(s) failed: their rows carry the error (samples.parquet, column error)")
        return EXIT_BAD_INPUT
    return 0
