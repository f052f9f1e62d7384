"""Throughput of the one-machine audit against the machine's work bound.

The work bound is what the cores could do if they did nothing but the unavoidable work, one
image per core at a time::

    bound = cores / (decode + preprocess + plain single-thread inference, per image)

each term measured here on the same images, the plain model (no gradients, no maps) run by one
single-threaded onnxruntime session at the audit's batch size. The audit's figure is the
images per second of :func:`camcore.audit.local.run_local` (decode, preprocess, the augmented
model, maps, statistics, rows and Parquet parts) on a warm worker. Blocks of the two alternate
(``--repeats`` each) so that a busy neighbour slows both alike; the medians and their ratio are
printed, with the configuration. Goal (issue 10): ratio >= 0.85.

Usage:
    python tools/bench_audit.py                      # the demo model on 1024 generated scenes
    python tools/bench_audit.py --images 2048 --repeats 7 --batch-size 32
    python tools/bench_audit.py --model resnet18.onnx --image-size 224 --images 128   # a real-size CNN
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np


def make_dataset(folder: Path, n: int, seed: int, size: int, labels: bool = True) -> Path:
    """``n`` generated scenes as PNGs under class folders, and a manifest with their boxes (and
    labels: the scenes' classes, which only the demo model knows)."""
    from camcore.scenes import generate_batch

    rows = []
    for i, scene in enumerate(generate_batch(n, seed, size=size)):
        rel = f"{scene.class_name}/{i:06d}.png"
        (folder / scene.class_name).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / rel), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
        rows.append([rel, *([scene.class_name] if labels else []), "a" if i % 3 else "b", *scene.box])
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", *(["label"] if labels else []), "site", "x0", "y0", "x1", "y1"])
        w.writerows(rows)
    return manifest


def main(argv: list[str] | None = None) -> int:
    import onnxruntime as ort

    import camcore
    from camcore.audit.dataset import load_dataset
    from camcore.audit.local import run_local
    from camcore.audit.run import run
    from camcore.audit.store import SampleStore
    from camcore.audit.worker import AuditConfig, AuditWorker
    from camcore.demo import DEMO_MODEL
    from camcore.runtime import Session

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(DEMO_MODEL), help="the .onnx classifier (default: the demo model)")
    p.add_argument("--images", type=int, default=1024, help="generated images per block (default: 1024)")
    p.add_argument("--image-size", type=int, default=96, help="side of the generated images (default: 96)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5, help="blocks of each kind (default: 5)")
    p.add_argument("--workers", type=int, default=None, help="inference threads (default: the cores)")
    args = p.parse_args(argv)
    cores = os.cpu_count() or 1

    with tempfile.TemporaryDirectory(prefix="camcore-bench-audit-") as tmp:
        root = Path(tmp)
        demo = Path(args.model).resolve() == DEMO_MODEL.resolve()
        manifest = make_dataset(root / "data", args.images, 7, args.image_size, labels=demo)
        # the run's own configuration (preprocessing, class names, provenance), from a tiny audit
        _, summary = run(args.model, manifest, root / "probe", groups=["site"], batch_size=args.batch_size,
                         progress=False)  # fmt: skip
        from camcore.audit.store import load_samples

        probe = load_samples(root / "probe")
        meta = probe.schema.metadata or {}
        import json

        prov = json.loads(meta[b"camcore.provenance"])
        config = AuditConfig(model=str(Path(args.model).resolve()), method=prov["method"],
                             layers=tuple(prov["layer"].split(",")), output=prov["output"], task=prov["task"],
                             size=tuple(prov["input_size"]), mean=tuple(prov["mean"]), std=tuple(prov["std"]),
                             bgr=prov["bgr"], nhwc=prov["nhwc"], batch_size=args.batch_size,
                             class_names=tuple(prov["class_names"] or ()) or None, groups=("site",),
                             provenance=prov, threads=1)  # fmt: skip
        samples = load_dataset(manifest, ["site"]).samples
        worker = AuditWorker(config)
        worker(samples[: args.batch_size])  # compile the augmented session
        plain = Session(args.model, ["CPUExecutionProvider"], threads=1)
        name = plain.session.get_inputs()[0].name

        cpu: dict[str, list[float]] = {"bound": [], "audit": []}

        def bound_block() -> float:
            """cores / seconds per image of decode + preprocess + plain single-thread inference."""
            c0 = time.process_time()
            t0 = time.perf_counter()
            xs = []
            for s in samples:
                data = np.fromfile(s.path, np.uint8)
                xs.append(worker.preprocess(cv2.imdecode(data, cv2.IMREAD_COLOR), channels="bgr"))
            for i in range(0, len(xs), args.batch_size):
                plain.run({name: np.stack(xs[i : i + args.batch_size])})
            t2 = time.perf_counter()
            cpu["bound"].append((time.process_time() - c0) / len(samples))
            return cores / ((t2 - t0) / len(samples))

        def audit_block(k: int) -> float:
            c0 = time.process_time()
            with SampleStore(root / f"out{k}", worker.schema) as store:
                done = run_local(worker, samples, store, workers=args.workers, flush_seconds=1e9)
            cpu["audit"].append((time.process_time() - c0) / len(samples))
            return done.rows / done.seconds

        def serial_block() -> float:
            """cores / seconds per image of the audit's work in one thread (its overhead, without the overlap)."""
            t0 = time.perf_counter()
            worker(samples)
            return cores / ((time.perf_counter() - t0) / len(samples))

        bounds, audits, serials = [], [], []
        for k in range(args.repeats):
            bounds.append(bound_block())
            audits.append(audit_block(k))
            serials.append(serial_block())
            print(f"block {k}: bound {bounds[-1]:8.1f} img/s   audit {audits[-1]:8.1f} img/s   "
                  f"ratio {audits[-1] / bounds[-1]:.3f}   (serial audit work x cores: {serials[-1]:8.1f} img/s, "
                  f"{serials[-1] / bounds[-1]:.3f})", flush=True)  # fmt: skip
    b, a, s = statistics.median(bounds), statistics.median(audits), statistics.median(serials)
    print(f"model {Path(args.model).name}, {args.images} images {args.image_size}x{args.image_size} PNG with boxes, "
          f"batch {args.batch_size}, {cores} cores, workers {args.workers or cores}, camcore {camcore.__version__}, "
          f"onnxruntime {ort.__version__}, numpy {np.__version__}, opencv {cv2.__version__}, "
          f"python {platform.python_version()}, {platform.machine()}")  # fmt: skip
    print(f"work bound (median of {args.repeats}): {b:.1f} img/s; audit: {a:.1f} img/s; ratio {a / b:.3f} "
          f"(goal >= 0.85); the audit's work alone, one thread x cores: {s:.1f} img/s ({s / b:.3f} of the bound)")
    cb, ca = statistics.median(cpu["bound"]), statistics.median(cpu["audit"])
    print(f"CPU time per image (all threads, robust to other jobs): bound {cb * 1e3:.3f} ms, audit {ca * 1e3:.3f} "
          f"ms: on {cores} idle cores the audit's work allows {cores / ca:.1f} img/s, {cb / ca:.3f} of the "
          "bound")  # fmt: skip
    print(f"load average while measured: {os.getloadavg()[0]:.2f} (1 min) on {cores} cores")  # fmt: skip
    del summary
    return 0


if __name__ == "__main__":
    sys.exit(main())
