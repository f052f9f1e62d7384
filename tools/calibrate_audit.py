"""Calibrate the audit's decision rules on real runs: a model, fresh generated scenes, the flags.

Writes an audit dataset of shortcut scenes (:mod:`camcore.shortcut_scenes`: ``--planted`` class
marked at ``--mark-rate``, site B at ``--site-b-rate``; ``--planted none`` for clean data), computes
the rows with the audit's worker (:class:`camcore.audit.worker.AuditWorker`, Grad-CAM), runs
:func:`camcore.audit.analysis.summarize` and prints per class the figures the rules read and the
flags raised.

    python tools/calibrate_audit.py --model src/camcore/data/demo_classifier.onnx --planted none
    python tools/calibrate_audit.py --model src/camcore/data/audit_classifier.onnx --planted star \
        --mark-rate 0.5 --site-b-rate 0.5 --out /tmp/cal
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from camcore.audit.analysis import AuditContext, summarize
from camcore.audit.dataset import load_dataset
from camcore.audit.worker import AuditConfig, AuditWorker
from camcore.demo import load_demo_meta
from camcore.scenes import CLASS_NAMES
from camcore.shortcut_scenes import generate_audit_batch, write_audit_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--planted", default="none")
    ap.add_argument("--mark-rate", type=float, default=0.5)
    ap.add_argument("--site-b-rate", type=float, default=0.0)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--out", default="/tmp/camcore-calibrate")
    ap.add_argument("--groups", default="site,camera,marked")
    args = ap.parse_args()
    out = Path(args.out)
    planted = None if args.planted == "none" else args.planted
    scenes = generate_audit_batch(args.n, args.seed, planted=planted, mark_rate=args.mark_rate,
                                  site_b_rate=args.site_b_rate)  # fmt: skip
    manifest = write_audit_dataset(out / "data", scenes)
    groups = tuple(g for g in args.groups.split(",") if g)
    data = load_dataset(manifest, groups)
    beside = Path(args.model).with_suffix(".json")  # the training tools' metadata, else the demo's
    meta = json.loads(beside.read_text()) if beside.is_file() else load_demo_meta()
    prov = {"model_sha256": "-", "layer": meta["target_layer"], "method": "gradcam", "camcore_version": "cal"}
    cfg = AuditConfig(model=str(Path(args.model).resolve()), layers=(meta["target_layer"],), size=(96, 96),
                      mean=tuple(meta["mean"]), std=tuple(meta["std"]), class_names=tuple(CLASS_NAMES),
                      groups=groups, provenance=prov, batch_size=32, threads=1)  # fmt: skip
    t0 = time.time()
    table = AuditWorker(cfg)(data.samples)
    t1 = time.time()
    pq.write_table(table, out / "samples.parquet")
    ctx = AuditContext(class_names=list(CLASS_NAMES), class_names_source="model metadata", groups=groups,
                       provenance=prov, model_path=args.model)  # fmt: skip
    summary = summarize(table, ctx)
    t2 = time.time()
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"{args.model} planted={planted} mark_rate={args.mark_rate} n={args.n}: rows {t1 - t0:.1f}s, "
          f"summarize {t2 - t1:.1f}s, accuracy {summary['accuracy']}")  # fmt: skip
    for name, c in summary["classes"].items():
        clusters = [(k["size"], k["region_energy_mean"], k["peak_dispersion"]) for k in c["clusters"]]
        lift = (c["region_energy_mean"] or np.nan) / (c["region_area_mean"] or np.nan)
        print(f"  {name:9s} n={c['samples']:4d} acc={c['accuracy']} energy={c['region_energy_mean']} "
              f"area={c['region_area_mean']} lift={lift:.2f} disp={c['peak_dispersion']} k={c['clustering']['k']} "
              f"clusters(size, energy, disp)={clusters}")  # fmt: skip
    for col, values in summary["groups"].items():
        for v, s in values.items():
            tests = {m: (t["effect_size"], t["p_adjusted"]) for m, t in s["tests"].items()}
            print(f"  group {col}={v}: n={s['samples']} acc={s['accuracy']} tests={tests}")
    for f in summary["flags"]:
        print("  FLAG", f["kind"], "-", f["message"])
    if not summary["flags"]:
        print("  no flags")


if __name__ == "__main__":
    main()
