"""Benchmark camcore's fused overlay against the OpenCV chain it replaces.

Runs both in one process on the same random frames and prints the configuration, the best-of-N
times and the speed-up, as a markdown table ready for BENCHMARKS.md.

Usage::

    python tools/bench_overlay.py [--repeat 30] [--threads 1 2 0]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from functools import partial

import cv2
import numpy as np

import camcore
from camcore.postprocess import overlay, overlay_reference

# (cam height, cam width, frame height, frame width)
CASES = [(7, 7, 224, 224), (14, 14, 720, 1280), (14, 14, 1080, 1920), (28, 28, 2160, 3840)]


def best_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30, help="timed runs per case (best is kept)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 0], help="thread counts; 0 = all cores")
    args = parser.parse_args(argv)

    print(
        f"camcore {camcore.__version__} | OpenCV {cv2.__version__} (IPP {cv2.ipp.useIPP()})"
        f" | numpy {np.__version__} | Python {platform.python_version()}"
    )
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores")
    print(f"best of {args.repeat}; alpha=0.5, colormap=jet, rgb=True; same threads for both sides\n")
    print("| cam | frame | threads | OpenCV chain (ms) | camcore (ms) | speed-up |")
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for h, w, height, width in CASES:
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        cam = rng.random((h, w), dtype=np.float32)
        out = np.empty_like(image)
        for threads in args.threads:
            cv2.setNumThreads(threads if threads > 0 else -1)
            ref = best_ms(partial(overlay_reference, image, cam), args.repeat)
            fast = best_ms(partial(overlay, image, cam, out=out, threads=threads), args.repeat)
            label = threads if threads > 0 else f"all ({os.cpu_count()})"
            print(f"| {h}x{w} | {height}x{width} | {label} | {ref:.3f} | {fast:.3f} | {ref / fast:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
