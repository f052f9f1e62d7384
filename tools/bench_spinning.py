"""Benchmark: camcore's sessions with and without onnxruntime's spinning intra-op threads.

A camcore call alternates onnxruntime runs with numpy and OpenCV work (seeds, layer maps, the
assembly). onnxruntime's default lets its idle pool threads spin after each run; on a small
machine they take the cores that work needs. ``camcore.runtime.Session`` turns the spinning off
(``spinning=False``); this script builds the same model twice in one process, once each way,
and times in alternating blocks, for each model: plain inference (a ``Session`` built the same
way), the whole camcore Grad-CAM call, and the CPU time the call used (all threads).

    python tools/bench_spinning.py [MODEL.onnx ...] [--batch 1] [--repeats 200] [--blocks 6]

Without models: the reach set's Keras CNN and torch ViT, and the demo model.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]


def _cam(path: str, spinning: bool, batch: int) -> tuple[object, np.ndarray, object, str]:
    """A GradCAM whose sessions spin or not, an input, and a plain session built the same way."""
    import camcore
    from camcore import runtime

    build = runtime.Session.__init__

    def spun(self: runtime.Session, *a: Any, **k: Any) -> None:
        build(self, *a, **{**k, "spinning": spinning})

    runtime.Session.__init__ = spun  # type: ignore[method-assign]  # the sessions of this CAM's first call
    try:
        cam = camcore.GradCAM(path, None)
        shape = [d if isinstance(d, int) and d > 0 else 224 for d in cam.engine.info[cam.engine.input_names[0]].shape]
        x = np.random.default_rng(0).standard_normal([batch, *shape[1:]]).astype(np.float32)
        cam(x)
        plain = runtime.Session(cam.engine.model).session
    finally:
        runtime.Session.__init__ = build  # type: ignore[method-assign]
    return cam, x, plain, cam.engine.input_names[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help="ONNX files (default: two reach models and the demo model)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=200, help="calls per block")
    ap.add_argument("--blocks", type=int, default=6)
    args = ap.parse_args()
    from camcore.demo import DEMO_MODEL

    models = args.models or [str(ROOT / "tests/reach/keras_plain_op13.onnx"),
                             str(ROOT / "tests/reach/torch_vit_dynamo.onnx"), str(DEMO_MODEL)]  # fmt: skip
    print(f"# bench_spinning: {platform.machine()} cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f} "
          f"onnxruntime {ort.__version__}; batch {args.batch}, "
          f"median of {args.blocks} blocks of {args.repeats}")  # fmt: skip
    print("| model | threads | plain ms | camcore ms | camcore CPU ms | camcore / plain |")
    print("|---|---|---|---|---|---|")
    for path in models:
        cases = {spin: _cam(path, spin, args.batch) for spin in (True, False)}
        got: dict[bool, dict[str, list[float]]] = {s: {"plain": [], "cam": [], "cpu": []} for s in cases}
        for _ in range(args.blocks):
            for spin, (cam, x, plain, name) in cases.items():
                t = time.perf_counter()
                for _ in range(args.repeats):
                    plain.run(None, {name: x})  # type: ignore[attr-defined]
                got[spin]["plain"].append((time.perf_counter() - t) / args.repeats * 1e3)
                t, c = time.perf_counter(), time.process_time()
                for _ in range(args.repeats):
                    cam(x)  # type: ignore[operator]
                got[spin]["cam"].append((time.perf_counter() - t) / args.repeats * 1e3)
                got[spin]["cpu"].append((time.process_time() - c) / args.repeats * 1e3)
        for spin, t in got.items():
            p, c, cpu = (statistics.median(t[k]) for k in ("plain", "cam", "cpu"))
            label = "spinning (onnxruntime's default)" if spin else "not spinning (camcore's)"
            print(f"| {Path(path).stem} | {label} | {p:.3f} | {c:.3f} | {cpu:.3f} | {c / p:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
