"""The dataset audit: explain a whole labelled dataset, find where the model looks and where it cheats.

``camcore audit MODEL DATA --out DIR`` (:mod:`camcore.audit.cli`) and :func:`run` for notebooks
write ``DIR/samples.parquet`` (one row per sample: prediction, the map, its statistics),
``DIR/summary.json`` (per class, strategies, subgroups, sanity, flags) and ``DIR/report.html``.

Example:
    >>> import camcore.audit
    >>> table, summary = camcore.audit.run("model.onnx", "val/", "audit")      # doctest: +SKIP
    >>> camcore.audit.load_samples("audit").num_rows                          # doctest: +SKIP
"""

from __future__ import annotations

from camcore.audit.run import run
from camcore.audit.store import load_samples

__all__ = ["load_samples", "run"]
