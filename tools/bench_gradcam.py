"""Benchmark: camcore Grad-CAM against plain inference and pytorch-grad-cam, in one run.

ResNet-50 with random weights at 224x224 on the CPU, batch 1 and 8:
  * plain onnxruntime inference of the unmodified model (the floor);
  * camcore GradCAM end to end (augmented run + maps resized to the input size);
  * pytorch-grad-cam GradCAM on the same network in PyTorch, when importable.

Needs torch + torchvision to export the network (or pass --model with an exported
ResNet-50 whose input is named "input"). Prints configuration, medians and ratios.

    python tools/bench_gradcam.py [--repeats 20] [--batches 1 8] [--markdown]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort


def _block_medians(fns: dict[str, Callable[[], object]], repeats: int, rounds: int = 3) -> dict[str, float]:
    """Median milliseconds of each function, timed in alternating blocks.

    Alternating blocks (not single calls) because onnxruntime's and torch's idle worker
    threads keep spinning for a while after a run: on a 2-core machine a single call
    right after another engine's call competes with its spinning threads. Each block
    starts with one untimed call.
    """
    per_block = max(1, repeats // rounds)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            fn()
            for _ in range(per_block):
                t0 = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def _export_resnet50(path: Path) -> object:
    from torch_models import export_classifier

    return export_classifier("resnet50", path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="an exported ResNet-50 (default: export one with torch)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()

    import camcore

    net = None
    tmp = tempfile.TemporaryDirectory()
    model_path = args.model
    if model_path is None:
        model_path = Path(tmp.name) / "resnet50.onnx"
        net = _export_resnet50(model_path)

    try:
        import torch
        from pytorch_grad_cam import GradCAM as TorchGradCAM

        torch.set_num_threads(args.threads)
        have_rival = net is not None
    except ImportError:
        have_rival = False

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    plain = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    cam = camcore.GradCAM(str(model_path), providers=["CPUExecutionProvider"], threads=args.threads)

    print("# bench_gradcam")
    print(f"machine: {platform.machine()} {platform.processor() or ''} cpus={os.cpu_count()} threads={args.threads}")
    print(f"onnxruntime {ort.__version__}, camcore {camcore.__version__}, numpy {np.__version__}")
    print(f"model: ResNet-50 random weights, 224x224, target layer {cam.target_layers}")
    print(f"repeats: {args.repeats} per engine, median, in 3 alternating blocks\n")
    columns = ["batch", "plain ORT ms", "camcore Grad-CAM ms", "camcore / plain"]
    columns += ["pytorch-grad-cam ms", "pytorch-grad-cam / camcore"]
    print("| " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|---|")
    for n in args.batches:
        x = np.random.default_rng(n).standard_normal((n, 3, 224, 224)).astype(np.float32)
        fns: dict[str, Callable[[], object]] = {
            "plain": lambda x=x: plain.run(None, {"input": x}),
            "camcore": lambda x=x: cam(x),
        }
        if have_rival:
            tcam = TorchGradCAM(model=net, target_layers=[net.layer4[-1]])
            xt = torch.from_numpy(x)
            fns["rival"] = lambda tcam=tcam, xt=xt: tcam(input_tensor=xt, targets=None)
        t = _block_medians(fns, args.repeats)
        t_plain, t_cam = t["plain"], t["camcore"]
        rival, ratio_rival = "n/a", "n/a"
        if have_rival:
            rival, ratio_rival = f"{t['rival']:.1f}", f"{t['rival'] / t_cam:.2f}x"
        print(f"| {n} | {t_plain:.1f} | {t_cam:.1f} | {t_cam / t_plain:.3f}x | {rival} | {ratio_rival} |")
    tmp.cleanup()


if __name__ == "__main__":
    main()
