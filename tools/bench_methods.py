"""Benchmark: every registered CAM method, camcore against pytorch-grad-cam, in one run.

ResNet-18 with random weights (torchvision, seed 0) at 224x224 on the CPU, batch 1 and 8,
top-1 targets, target layer ``layer4`` (RefineCAM: ``layer3`` + ``layer4``). camcore explains
the ONNX export (legacy exporter, opset 17, dynamic batch); pytorch-grad-cam 1.5.7 explains
the same network in PyTorch. Methods pytorch-grad-cam does not have run on camcore only.

Each (method, engine) runs in a fresh subprocess, so neither engine's worker threads, caches
or allocator state can affect the other, and peak memory is comparable across engines:

* time: the median of ``--repeats`` calls after one untimed warm-up call (the slow methods,
  ``SLOW``: one timed call and no warm-up, so that call includes camcore's session creation);
* peak memory: the process's resident-set high-water mark (``VmHWM``, reset through
  ``/proc/self/clear_refs`` before the batch's warm-up) minus its RSS at that moment,
  i.e. everything the calls allocated at their peak: numpy, onnxruntime's arenas and
  sessions (camcore), torch tensors and autograd buffers (pytorch-grad-cam). Model weights,
  imports and the input are loaded before and not counted.

    python tools/bench_methods.py [--repeats 3] [--methods scorecam ablationcam] [--batches 1 8]
        [--model resnet18.onnx] [--full]

camcore runs numpy's BLAS on one thread inside its methods' small linear algebra (SVDs, kernel
eigenvectors, mask upsampling) through threadpoolctl; the header says so (``numpy BLAS:``).

``--full`` also runs batch 8 of the rival's slowest methods (ScoreCAM, AblationCAM: minutes).
Needs torch + torchvision (for the export and the rival) unless ``--model`` is given (then
camcore only; its input must be named ``input``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: options for both engines where a method's default makes one call take minutes
BENCH_OPTIONS: dict[str, dict[str, Any]] = {
    "sess": {"num_scales": 3},
    "sscam": {"num_samples": 4, "top_k": 64},
    "iscam": {"num_samples": 4, "top_k": 64},
}
#: one timed call, no warm-up
SLOW = {"scorecam", "sscam", "iscam", "ablationcam", "sess"}
#: (method, engine) whose batch 8 is skipped unless --full (pytorch-grad-cam: ~1 minute a call)
SKIP_B8 = {("scorecam", "rival"), ("ablationcam", "rival"), ("sscam", "camcore"), ("iscam", "camcore")}
#: camcore methods whose pytorch-grad-cam class has another name or does not exist
NO_RIVAL = {"CAM", "SmoothGradCAMpp", "SSCAM", "ISCAM", "GuidedGradCAM"}


def _rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _measure(fn: Any, repeats: int, warm: bool) -> dict[str, float]:
    reset = _reset_peak()
    base = _rss_kb()
    if warm:
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"ms": statistics.median(times), "peak_mb": (_peak_kb() - base) / 1024, "exact_peak": reset}


def _layer_tensors(model_path: str) -> dict[str, str]:
    """ONNX tensor names of layer3's and layer4's outputs in the legacy export."""
    import onnx

    outs = [o for n in onnx.load(model_path).graph.node for o in n.output]
    pick = {}
    for layer in ("layer3", "layer4"):
        relus = [o for o in outs if o.startswith(f"/{layer}/") and o.endswith("Relu_output_0")]
        pick[layer] = relus[-1]
    return pick


def child(args: argparse.Namespace) -> None:
    """Run one (method, engine) for every batch; print one JSON line."""
    import numpy as np

    threads = args.threads
    key, engine = args.child_method, args.child_engine
    from camcore.methods import method_by_key

    m = method_by_key(key)
    layers = ["layer3", "layer4"] if m.name == "RefineCAM" else ["layer4"]
    opts = dict(BENCH_OPTIONS.get(m.key, {}))
    if engine == "camcore":
        import camcore

        names = _layer_tensors(str(args.model))
        cam = getattr(camcore, m.name)(
            str(args.model), [names[x] for x in layers], providers=["CPUExecutionProvider"], threads=threads, **opts
        )

        def make(x: Any) -> Any:
            return lambda: cam(x)
    else:
        import pytorch_grad_cam as pgc
        import torch
        import torchvision

        torch.set_num_threads(threads)
        torch.manual_seed(0)
        net = torchvision.models.resnet18(weights=None).eval()
        kwargs = {k: v for k, v in opts.items() if k not in ("top_k",)}
        tcam = getattr(pgc, m.name)(model=net, target_layers=[net.get_submodule(x) for x in layers], **kwargs)

        def make(x: Any) -> Any:
            xt = torch.from_numpy(x)
            return lambda: tcam(input_tensor=xt, targets=None)

    res = {}
    for n in args.batches:
        if n == 8 and (m.key, engine) in SKIP_B8 and not args.full:
            continue
        x = np.random.default_rng(n).standard_normal((n, 3, 224, 224)).astype(np.float32)
        slow = m.key in SLOW
        res[n] = _measure(make(x), 1 if slow else args.repeats, warm=not slow)
    print("RESULT " + json.dumps(res))


def _export(path: Path) -> None:
    from torch_models import export_classifier

    export_classifier("resnet18", path)


def _run_child(args: argparse.Namespace, key: str, engine: str, model: Path) -> dict[str, Any] | str:
    cmd = [sys.executable, __file__, "--child-method", key, "--child-engine", engine, "--model", str(model)]
    cmd += ["--repeats", str(args.repeats), "--threads", str(args.threads), "--batches", *map(str, args.batches)]
    if args.full:
        cmd.append("--full")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return {int(k): v for k, v in json.loads(line[7:]).items()}
    return "failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1][:120]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="an exported ResNet-18 (default: export one with torch)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--methods", nargs="+", help="method keys or class names (default: every registered method)")
    ap.add_argument("--full", action="store_true", help="also batch 8 of the rival's slowest methods")
    ap.add_argument("--child-method", help=argparse.SUPPRESS)
    ap.add_argument("--child-engine", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_method:
        child(args)
        return

    import numpy as np
    import onnxruntime as ort

    import camcore
    from camcore import blas
    from camcore.methods import METHODS, method_by_key

    tmp = tempfile.TemporaryDirectory()
    model = args.model
    have_rival = False
    rival_version = "not importable"
    try:
        import importlib.metadata

        import pytorch_grad_cam as pgc
        import torch

        rival_version = f"grad-cam {importlib.metadata.version('grad-cam')}, torch {torch.__version__}"
        have_rival = model is None
    except ImportError:
        pass
    if model is None:
        model = Path(tmp.name) / "resnet18.onnx"
        _export(model)
    keys = [method_by_key(k).key for k in args.methods] if args.methods else list(METHODS)

    print("# bench_methods")
    print(f"machine: {platform.machine()} cpus={os.cpu_count()} threads={args.threads}; "
          f"load average {os.getloadavg()[0]:.2f} at the start")  # fmt: skip
    print(f"camcore {camcore.__version__}, onnxruntime {ort.__version__}, numpy {np.__version__}")
    print(f"numpy BLAS: {blas.describe()}")
    print(f"rival: {rival_version}")
    print("model: ResNet-18 random weights (seed 0), 224x224, top-1 targets, layer4 (RefineCAM: layer3 + layer4)")
    print(f"time: median of {args.repeats} calls after a warm-up (slow methods {sorted(SLOW)}: one call, no warm-up)")
    print(
        "peak: RSS high-water over the batch's calls (warm-up included: camcore's session creation and arena growth"
        " at batch 1) above the RSS before them; fresh process per (method, engine)"
    )
    print(f"options for both engines: {BENCH_OPTIONS}\n")
    print("| method | batch | camcore ms | pytorch-grad-cam ms | rival / camcore | camcore peak MB | rival peak MB |")
    print("|---|---|---|---|---|---|---|")
    t_start = time.perf_counter()
    for key in keys:
        m = METHODS[key]
        ours = _run_child(args, key, "camcore", model)
        rival: dict[str, Any] | str = "n/a"
        if have_rival and m.name not in NO_RIVAL and hasattr(pgc, m.name):
            rival = _run_child(args, key, "rival", model)
        for n in args.batches:
            o = ours.get(n) if isinstance(ours, dict) else None
            r = rival.get(n) if isinstance(rival, dict) else None
            cm = f"{o['ms']:.1f}" if o else (ours if isinstance(ours, str) else "skipped")
            rm = f"{r['ms']:.1f}" if r else (rival if isinstance(rival, str) else "skipped")
            ratio = f"{r['ms'] / o['ms']:.2f}x" if o and r else "n/a"
            cp = f"{o['peak_mb']:.0f}" if o else ""
            rp = f"{r['peak_mb']:.0f}" if r else ""
            print(f"| {m.name} | {n} | {cm} | {rm} | {ratio} | {cp} | {rp} |", flush=True)
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s; load average at the end {os.getloadavg()[0]:.2f}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
