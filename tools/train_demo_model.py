"""Train the demo classifier shipped in ``src/camcore/data/`` and export it to ONNX.

The model classifies the synthetic scenes of :mod:`camcore.scenes` (one shape
on a cluttered background). It is a small CAM-friendly CNN: five
Conv-BN-ReLU blocks, three 2x2 max-pools (96 -> 12), global average pooling
and one linear layer. Nothing is downloaded; the data is generated here.

Needs PyTorch, onnx and onnxruntime (not camcore's runtime dependencies), so
run it from the training environment::

    /work/xcenv/bin/python tools/train_demo_model.py

It prints its configuration, trains, reports test accuracy, exports
``demo_classifier.onnx`` (opset 17, input ``input`` NCHW float32 normalised,
output ``logits``, dynamic batch), checks the ONNX against PyTorch with
onnxruntime, measures the pointing game with pytorch-grad-cam when it is
installed, and writes ``demo_classifier.json`` (class names, preprocessing,
recommended target layer, seeds and accuracies).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from camcore.scenes import CLASS_NAMES, Scene, generate_batch

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "src" / "camcore" / "data"
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
CHANNELS = (16, 24, 40, 48, 48)
POOL_AFTER = (0, 1, 2)  # block indices followed by a 2x2 max-pool
#: Pointing-game tolerance, pixels (see camcore.demo).
TOLERANCE = 4


def _show(path: Path) -> str:
    """``path`` relative to the repository root when it lies inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


class DemoNet(nn.Module):
    """Conv-BN-ReLU blocks, max-pools down to size/8, GAP and a linear head."""

    def __init__(self, n_classes: int, channels: tuple[int, ...] = CHANNELS) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for i, c_out in enumerate(channels):
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
            ]
            if i in POOL_AFTER:
                layers.append(nn.MaxPool2d(2))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, n_classes)`` for normalised images ``(N, 3, H, W)``."""
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def to_tensor(scenes: list[Scene]) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised NCHW float32 images and int64 labels."""
    images = np.stack([s.image for s in scenes]).astype(np.float32) / 255.0
    images = (images - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    y = torch.tensor([s.label for s in scenes], dtype=torch.int64)
    return x, y


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 512) -> float:
    """Top-1 accuracy of ``model`` in eval mode."""
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        correct += int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum())
    return correct / len(x)


def train(args: argparse.Namespace) -> tuple[nn.Module, dict[str, float]]:
    """Generate the data, train the model and return it with its accuracies."""
    t0 = time.perf_counter()
    x_train, y_train = to_tensor(generate_batch(args.n_train, args.seed, args.size))
    x_test, y_test = to_tensor(generate_batch(args.n_test, args.seed + 1, args.size))
    print(f"generated {args.n_train} + {args.n_test} scenes in {time.perf_counter() - t0:.1f} s")

    torch.manual_seed(args.seed)
    model = DemoNet(len(CLASS_NAMES))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_params}")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = (args.n_train + args.batch - 1) // args.batch
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch, pct_start=0.2
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    gen = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        model.train()
        t_epoch = time.perf_counter()
        perm = torch.randperm(args.n_train, generator=gen)
        total = 0.0
        for i in range(0, args.n_train, args.batch):
            idx = perm[i : i + args.batch]
            xb, yb = x_train[idx], y_train[idx]
            # Flips and 90-degree rotations keep every class and the clutter statistics.
            if torch.rand(1, generator=gen).item() < 0.5:
                xb = xb.flip(3)
            xb = torch.rot90(xb, int(torch.randint(4, (1,), generator=gen)), dims=(2, 3))
            loss = loss_fn(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        acc = accuracy(model, x_test, y_test)
        print(
            f"epoch {epoch + 1}/{args.epochs}: loss {total / args.n_train:.4f} "
            f"test acc {acc:.4f} ({time.perf_counter() - t_epoch:.0f} s)"
        )
    stats = {
        "train_accuracy": accuracy(model, x_train[:4096], y_train[:4096]),
        "test_accuracy": accuracy(model, x_test, y_test),
        "train_seconds": time.perf_counter() - t0,
    }
    return model, stats


def export(model: nn.Module, path: Path, size: int) -> str:
    """Export to ONNX and return the name of the last ReLU output tensor."""
    import onnx

    model.eval()
    dummy = torch.zeros(1, 3, size, size)
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated, but it folds BatchNorm into Conv
        # and emits plain opset-17 ops with readable tensor names.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    ops = sorted({n.op_type for n in proto.graph.node})
    print(f"exported {_show(path)} ({path.stat().st_size} bytes), ops: {ops}")
    relus = [n for n in proto.graph.node if n.op_type == "Relu"]
    return relus[-1].output[0]


def check_onnx(model: nn.Module, path: Path, x: torch.Tensor) -> float:
    """Largest absolute difference between onnxruntime and PyTorch logits."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(["logits"], {"input": x.numpy()})[0]
    with torch.no_grad():
        want = model.eval()(x).numpy()
    diff = float(np.abs(got - want).max())
    print(f"onnxruntime vs torch: max |diff| = {diff:.2e} on {len(x)} images")
    if diff > 1e-3:
        raise SystemExit("ONNX export does not match PyTorch")
    return diff


def pointing_game(model: nn.Module, n: int, seed: int, size: int) -> float | None:
    """Pointing-game accuracy of Grad-CAM (pytorch-grad-cam) on fresh scenes."""
    try:
        from pytorch_grad_cam import GradCAM
    except ImportError:
        print("pytorch-grad-cam not installed: pointing game not measured")
        return None
    scenes = generate_batch(n, seed, size)
    x, _ = to_tensor(scenes)
    model.eval()
    last_relu = [m for m in model.features if isinstance(m, nn.ReLU)][-1]
    hits = 0
    with GradCAM(model=model, target_layers=[last_relu]) as cam:
        maps = cam(input_tensor=x, targets=None)  # explains the top-1 class
    for scene, m in zip(scenes, maps, strict=True):
        yy, xx = np.unravel_index(int(np.argmax(m)), m.shape)
        x0, y0, x1, y1 = scene.box
        hits += (x0 - TOLERANCE <= xx < x1 + TOLERANCE) and (y0 - TOLERANCE <= yy < y1 + TOLERANCE)
    acc = hits / n
    print(f"pointing game (pytorch-grad-cam, tolerance {TOLERANCE} px): {acc:.4f} on {n} scenes")
    return acc


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0, help="data and init seed; test uses seed+1")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--n-train", type=int, default=16000)
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=4e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cam-scenes", type=int, default=1000, help="scenes for the pointing game")
    p.add_argument("--cam-seed", type=int, default=777)
    p.add_argument("--out", type=Path, default=DATA_DIR)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    np.random.seed(args.seed)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    print("config:", json.dumps(config))
    print(
        f"torch {torch.__version__}, numpy {np.__version__}, python {platform.python_version()}, "
        f"threads {torch.get_num_threads()}, classes {CLASS_NAMES}, channels {CHANNELS}"
    )

    model, stats = train(args)
    args.out.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out / "demo_classifier.onnx"
    target = export(model, onnx_path, args.size)
    x_check, _ = to_tensor(generate_batch(64, args.seed + 2, args.size))
    diff = check_onnx(model, onnx_path, x_check)
    pg = pointing_game(model, args.cam_scenes, args.cam_seed, args.size)

    meta = {
        "model": "demo_classifier.onnx",
        "class_names": list(CLASS_NAMES),
        "input_name": "input",
        "output_name": "logits",
        "input_size": [args.size, args.size],
        "layout": "NCHW",
        "color": "RGB",
        "scale": 1.0 / 255.0,
        "mean": list(MEAN),
        "std": list(STD),
        "preprocess": "x = (rgb_uint8 / 255 - mean) / std, HWC -> CHW",
        "target_layer": target,
        "architecture": {
            "channels": list(CHANNELS),
            "pool_after": list(POOL_AFTER),
            "head": "GlobalAveragePool + Gemm",
        },
        "training": {
            "seed": args.seed,
            "n_train": args.n_train,
            "n_test": args.n_test,
            "epochs": args.epochs,
            "batch": args.batch,
            "lr": args.lr,
            "train_accuracy": round(stats["train_accuracy"], 4),
            "test_accuracy": round(stats["test_accuracy"], 4),
            "pointing_game_pytorch_grad_cam": None if pg is None else round(pg, 4),
            "pointing_game_tolerance_px": TOLERANCE,
            "pointing_game_scenes": args.cam_scenes,
            "pointing_game_seed": args.cam_seed,
            "onnx_max_abs_diff": diff,
            "torch": torch.__version__,
            "command": "python tools/train_demo_model.py",
        },
    }
    meta_path = args.out / "demo_classifier.json"
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {_show(meta_path)}; target layer {target!r}")
    print(f"test accuracy {stats['test_accuracy']:.4f}, total {time.perf_counter() - T0:.0f} s")


T0 = time.perf_counter()

if __name__ == "__main__":
    main()
