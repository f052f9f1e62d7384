"""Benchmark camcore's fused overlay against the OpenCV chain, show_cam_on_image and a frame copy.

Runs everything in one process on the same random frames (show_cam_on_image in a child process
when pytorch-grad-cam is only installed in another environment) and prints the configuration,
median times and ratios as a markdown table ready for BENCHMARKS.md.

* OpenCV chain: ``cv2.resize(INTER_LINEAR)`` -> ``np.uint8(255 x)`` -> ``cv2.applyColorMap`` ->
  ``cv2.cvtColor(BGR2RGB)`` -> ``cv2.addWeighted`` (``camcore.postprocess.overlay_reference``).
* show_cam_on_image: ``cv2.resize`` of the map, then pytorch-grad-cam's float blend of the
  already-float [0, 1] RGB frame (``pytorch_grad_cam.utils.image.show_cam_on_image``, use_rgb=True).
* np.copyto: a plain copy of the uint8 frame into a preallocated array (one thread).
* camcore: ``camcore.overlay(frame, cam, out=preallocated, threads=T)``.

Usage::

    python tools/bench_overlay.py [--repeat 50] [--rival-python /path/to/venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from functools import partial

import cv2
import numpy as np

# (frame height, frame width, cam side)
FRAMES = [(224, 224), (720, 1280), (1080, 1920), (2160, 3840)]
CAMS = [7, 14]


#: every engine's warm-up: at least this many calls and this long (caches, page faults, thread
#: start, and idle cores waking up: a 0.5 ms kernel timed right after a single-threaded phase
#: otherwise measures the second core's wake-up)
WARM_UP_CALLS = 3
WARM_UP_S = 0.1


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    start, calls = time.perf_counter(), 0
    while calls < WARM_UP_CALLS or time.perf_counter() - start < WARM_UP_S:
        fn()
        calls += 1
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def inputs(height: int, width: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(height * 10_000 + width + side)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8), rng.random((side, side), dtype=np.float32)


def show_cam_times(repeat: int) -> dict[str, float]:
    """Median ms of cv2.resize + show_cam_on_image per case, or {} when pytorch-grad-cam is missing."""
    try:
        from pytorch_grad_cam.utils.image import show_cam_on_image
    except ImportError:
        return {}
    times = {}
    for height, width in FRAMES:
        for side in CAMS:
            frame, cam = inputs(height, width, side)
            rgb = frame.astype(np.float32) / 255

            def run(rgb=rgb, cam=cam, width=width, height=height):
                mask = cv2.resize(cam, (width, height), interpolation=cv2.INTER_LINEAR)
                return show_cam_on_image(rgb, mask, use_rgb=True)

            times[f"{height}x{width}/{side}"] = median_ms(run, max(5, repeat // 2))
    return times


def rival_times(python: str | None, repeat: int) -> tuple[dict[str, float], str]:
    own = show_cam_times(repeat)
    if own or not python:
        return own, "this process" if own else "not importable"
    code = (
        "import json, runpy, sys; sys.argv = ['bench']; "
        f"m = runpy.run_path({__file__!r}, run_name='bench_rival'); "
        f"print(json.dumps(m['show_cam_times']({repeat})))"
    )
    env = dict(os.environ, CAMCORE_BENCH_RIVAL="1")
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        return {}, f"failed in {python}: {done.stderr.strip().splitlines()[-1:]}"
    return json.loads(done.stdout.strip().splitlines()[-1]), python


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50, help="timed runs per case (the median is kept)")
    parser.add_argument("--rival-python", help="a Python with pytorch-grad-cam, if this one lacks it")
    args = parser.parse_args(argv)
    from camcore import _core  # imported here: the rival child process needs only cv2 and numpy
    from camcore.postprocess import overlay, overlay_reference

    cores = os.cpu_count() or 1
    rival, where = rival_times(args.rival_python, args.repeat)
    print(
        f"camcore kernels: {_core.simd()} | OpenCV {cv2.__version__} (IPP {cv2.ipp.useIPP()}, "
        f"{cv2.getNumThreads()} threads) | numpy {np.__version__} | Python {platform.python_version()}"
    )
    print(f"CPU: {platform.processor() or platform.machine()}, {cores} logical cores")
    print(f"median of {args.repeat} runs (show_cam_on_image: {max(5, args.repeat // 2)}, {where});")
    print("alpha=0.5, colormap=jet, RGB frames; OpenCV at its default threads\n")
    print(
        "| cam | frame | copy ms | OpenCV ms | show_cam ms | camcore 1T ms | camcore all ms"
        " | vs OpenCV (1T / all) | vs show_cam (all) | / copy (1T / all) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for height, width in FRAMES:
        for side in CAMS:
            frame, cam = inputs(height, width, side)
            out = np.empty_like(frame)
            copy = median_ms(partial(np.copyto, out, frame), args.repeat)
            chain = median_ms(partial(overlay_reference, frame, cam), args.repeat)
            one = median_ms(partial(overlay, frame, cam, out=out, threads=1), args.repeat)
            every = median_ms(partial(overlay, frame, cam, out=out, threads=0), args.repeat)
            show = rival.get(f"{height}x{width}/{side}")
            show_s = f"{show:.2f}" if show else "n/a"
            vs_show = f"{show / every:.0f}x" if show else "n/a"
            print(
                f"| {side}x{side} | {width}x{height} | {copy:.3f} | {chain:.3f} | {show_s} | {one:.3f} | {every:.3f}"
                f" | {chain / one:.1f}x / {chain / every:.1f}x | {vs_show} | {one / copy:.2f} / {every / copy:.2f} |"
            )
    return 0


if __name__ == "__main__" and not os.environ.get("CAMCORE_BENCH_RIVAL"):
    raise SystemExit(main())
