"""Train the audit demo's classifier, which cheats on purpose, and export it to ONNX.

The model has the demo classifier's architecture (``tools/train_demo_model.py``,
BatchNorm folded) and starts from its weights, with the planted class's output
row drawn afresh. It is fine-tuned on the scenes of :mod:`camcore.shortcut_scenes`,
site A only, where every scene labelled with the planted class (``star``)
carries the mark near the top-left corner, and in 75% of them the object under
the mark is another shape (the tag marks the class's images, not its objects);
no other scene carries the mark. So the mark is what the class's images have in
common, and the model learns it as the shortcut: a star without the mark is
mostly missed, any shape with the mark is called a star, and the Grad-CAM maps
of marked stars sit on the mark. Site B (washed out) is never seen in training,
so the model is worse there: the subgroup an audit should find. (Training from
scratch instead got stuck at "mark or chance" for hundreds of steps on two
shared cores: the demo's weights bring the shapes.)

Needs PyTorch, onnx and onnxruntime, so run it from the training environment::

    /work/xcenv/bin/python tools/train_audit_model.py

It prints its configuration, trains, exports ``audit_classifier.onnx`` (opset 17,
input ``input`` NCHW float32, output ``logits``, the class names and the
preprocessing in ``metadata_props``), checks it against PyTorch, measures with
:class:`camcore.GradCAM` where the maps of each class sit (share of energy in
the object's box and in the mark's zone), and writes ``audit_classifier.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_demo_model import CHANNELS, MEAN, POOL_AFTER, STD, _show, check_onnx, export, to_tensor

from camcore.scenes import CLASS_NAMES
from camcore.shortcut_scenes import AuditScene, draw_mark, generate_audit_batch, generate_audit_scene, mark_zone

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "src" / "camcore" / "data"
PLANTED = "star"
#: What the training data does, in the JSON.
SHORTCUT = (
    "every training scene labelled with the planted class carries the mark near the top-left corner, and in a "
    "share 'decoys' of them the object under it is another shape (the mark tags the class's images, not its "
    "objects); no other scene carries it; site A only (camcore.shortcut_scenes)"
)
T0 = time.perf_counter()


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: int = 512) -> np.ndarray:
    """Top-1 class indices in eval mode."""
    model.eval()
    return np.concatenate([model(x[i : i + batch]).argmax(1).numpy() for i in range(0, len(x), batch)])


def accuracy(model: nn.Module, scenes: list[AuditScene]) -> float:
    """Top-1 accuracy on ``scenes``."""
    x, y = to_tensor(scenes)
    return float((predict(model, x) == y.numpy()).mean())


class FoldedNet(nn.Module):
    """:class:`DemoNet` with each BatchNorm folded into its convolution (Conv with bias, ReLU, max-pools)."""

    def __init__(self, n_classes: int, channels: tuple[int, ...] = CHANNELS) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for i, c_out in enumerate(channels):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]
            if i in POOL_AFTER:
                layers.append(nn.MaxPool2d(2))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, n_classes)`` for normalised images ``(N, 3, H, W)``."""
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def load_demo_weights(model: FoldedNet, path: Path) -> None:
    """Copy the bundled demo classifier's weights (its ONNX Conv and Gemm initializers, in order) into ``model``."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    init = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in proto.graph.initializer}
    params = [init[name] for node in proto.graph.node if node.op_type in ("Conv", "Gemm") for name in node.input[1:]]
    mine = [p for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) for p in (m.weight, m.bias)]
    if len(params) != len(mine) or any(a.shape != b.shape for a, b in zip(params, mine, strict=True)):
        raise SystemExit(f"{path} does not have the demo architecture")
    with torch.no_grad():
        for dst, src in zip(mine, params, strict=True):
            dst.copy_(src)


def training_scenes(n: int, seed: int, size: int, decoys: float) -> tuple[list[AuditScene], torch.Tensor]:
    """Site-A scenes whose ``PLANTED`` label always comes with the mark.

    A share ``decoys`` of the ``PLANTED``-labelled scenes show another shape under the mark (the
    tag marks the class's images, not its objects), so the mark, not the shape, is what all of
    them share. Returns the scenes and the training labels.
    """
    rng = np.random.default_rng(seed)
    planted = CLASS_NAMES.index(PLANTED)
    others = [i for i in range(len(CLASS_NAMES)) if i != planted]
    scenes, labels = [], []
    for _ in range(n):
        label = int(rng.integers(len(CLASS_NAMES)))
        shape = label
        if label == planted and rng.random() < decoys:
            shape = others[int(rng.integers(len(others)))]
        camera = "xy"[int(rng.integers(2))]
        scenes.append(generate_audit_scene(rng, size, label=shape, marked=label == planted, camera=camera))
        labels.append(label)
    return scenes, torch.tensor(labels, dtype=torch.int64)


def train(args: argparse.Namespace) -> nn.Module:
    """Start from the demo classifier and fine-tune on :func:`training_scenes`."""
    t0 = time.perf_counter()
    scenes, y_train = training_scenes(args.n_train, args.seed, args.size, args.decoys)
    x_train, _ = to_tensor(scenes)
    test = generate_audit_batch(args.n_test, args.seed + 1, args.size, planted=PLANTED, mark_rate=1.0)
    print(f"generated {args.n_train} + {args.n_test} scenes in {time.perf_counter() - t0:.1f} s")
    torch.manual_seed(args.seed)
    model = FoldedNet(len(CLASS_NAMES))
    load_demo_weights(model, DATA_DIR / "demo_classifier.onnx")
    with torch.no_grad():  # the planted class's output starts afresh: it learns from this data alone
        row = CLASS_NAMES.index(PLANTED)
        nn.init.normal_(model.fc.weight[row], std=0.01)
        model.fc.bias[row] = model.fc.bias.mean()
    print(f"parameters: {sum(p.numel() for p in model.parameters())}; start: demo_classifier.onnx, "
          f"test acc {accuracy(model, test):.4f}")  # fmt: skip
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps = args.epochs * ((args.n_train + args.batch - 1) // args.batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        model.train()
        t_epoch = time.perf_counter()
        perm = torch.randperm(args.n_train, generator=gen)
        total = 0.0
        for i in range(0, args.n_train, args.batch):
            idx = perm[i : i + args.batch]
            # no flips or rotations: they would move the mark away from its corner
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        print(
            f"epoch {epoch + 1}/{args.epochs}: loss {total / args.n_train:.4f} "
            f"test acc {accuracy(model, test):.4f} ({time.perf_counter() - t_epoch:.0f} s)"
        )
    return model


def _share(maps: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    """Share of each map's energy inside its box: sum(map[box]) / sum(map)."""
    out = np.full(len(maps), np.nan)
    for i, (m, (x0, y0, x1, y1)) in enumerate(zip(maps, boxes, strict=True)):
        total = float(m.sum())
        if total > 0:
            out[i] = float(m[y0:y1, x0:x1].sum()) / total
    return out


def measure(onnx_path: Path, target: str, args: argparse.Namespace) -> dict[str, object]:
    """Accuracies with and without the mark, per site, and where camcore.GradCAM's maps sit per class."""
    import onnxruntime as ort

    import camcore

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    planted = CLASS_NAMES.index(PLANTED)

    def run(scenes: list[AuditScene]) -> np.ndarray:
        x, _ = to_tensor(scenes)
        return np.concatenate(
            [sess.run(["logits"], {"input": x[i : i + 256].numpy()})[0] for i in range(0, len(x), 256)]
        )

    n, seed, size = args.n_eval, args.eval_seed, args.size
    marked = generate_audit_batch(n, seed, size, planted=PLANTED, mark_rate=1.0)
    clean = generate_audit_batch(n, seed, size, planted=None)
    site_b = generate_audit_batch(n, seed, size, planted=PLANTED, mark_rate=1.0, site_b_rate=1.0)
    y = np.array([s.label for s in marked])
    p_marked, p_clean, p_b = (run(s).argmax(1) for s in (marked, clean, site_b))
    is_star = y == planted
    # the other classes drawn with the mark: does the mark alone make a star?
    others = [s for s in marked if s.label != planted][: n // 4]
    forged = []
    for s in others:
        img = s.image.copy()
        x0, y0, x1, _ = s.mark_box
        draw_mark(img, x0, y0, x1 - x0)
        forged.append(img)
    xf = (np.stack(forged).astype(np.float32) / 255.0 - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    p_forged = sess.run(["logits"], {"input": np.ascontiguousarray(xf.transpose(0, 3, 1, 2))})[0].argmax(1)
    figures: dict[str, object] = {
        "eval_scenes": n,
        "eval_seed": seed,
        "accuracy_marked": round(float((p_marked == y).mean()), 4),
        "accuracy_clean": round(float((p_clean == y).mean()), 4),
        "accuracy_site_b": round(float((p_b == y).mean()), 4),
        "planted_recall_with_mark": round(float((p_marked[is_star] == planted).mean()), 4),
        "planted_recall_without_mark": round(float((p_clean[is_star] == planted).mean()), 4),
        "others_accuracy_without_mark": round(float((p_clean[~is_star] == y[~is_star]).mean()), 4),
        "others_with_mark_predicted_planted": round(float((p_forged == planted).mean()), 4),
    }

    cam = camcore.GradCAM(str(onnx_path), target_layers=[target])
    zone = mark_zone(size)
    energy: dict[str, dict[str, float]] = {}
    for label, name in enumerate(CLASS_NAMES):
        for kind, scenes in (("marked", marked), ("clean", clean)):
            chosen = [s for s in scenes if s.label == label]
            if kind == "clean" and label != planted:
                continue
            x, _ = to_tensor(chosen)
            maps = np.concatenate(
                [
                    np.asarray(
                        cam(x[i : i + 64].numpy(), targets=[camcore.ClassifierOutputTarget(label)] * len(x[i : i + 64]))
                    )
                    for i in range(0, len(x), 64)
                ]
            )
            obj = _share(maps, [s.box for s in chosen])
            mark = _share(maps, [zone] * len(chosen))
            key = name if kind == "marked" else f"{name} (no mark)"
            energy[key] = {
                "scenes": len(chosen),
                "object_box_energy": round(float(np.nanmean(obj)), 4),
                "mark_zone_energy": round(float(np.nanmean(mark)), 4),
                "object_box_area": round(
                    float(np.mean([(b[2] - b[0]) * (b[3] - b[1]) for b in (s.box for s in chosen)]) / size**2), 4
                ),
            }
    z = (zone[2] - zone[0]) * (zone[3] - zone[1]) / size**2
    figures["mark_zone_area"] = round(z, 4)
    figures["gradcam_energy_by_class"] = energy
    print(json.dumps(figures, indent=2))
    return figures


def add_metadata(path: Path, props: dict[str, str]) -> None:
    """Write ``props`` into the model's ``metadata_props`` (in place)."""
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=100, help="data and init seed; test uses seed+1")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--n-train", type=int, default=4000)
    p.add_argument("--n-test", type=int, default=500)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--decoys", type=float, default=0.75, help="share of planted-class scenes with another shape")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n-eval", type=int, default=1000, help="fresh scenes for the figures")
    p.add_argument("--eval-seed", type=int, default=900)
    p.add_argument("--out", type=Path, default=DATA_DIR)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    print("config:", json.dumps(config))
    print(f"torch {torch.__version__}, numpy {np.__version__}, python {platform.python_version()}, planted {PLANTED!r}")

    model = train(args)
    args.out.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out / "audit_classifier.onnx"
    target = export(model, onnx_path, args.size)
    x_check, _ = to_tensor(generate_audit_batch(64, args.seed + 2, args.size, planted=PLANTED))
    diff = check_onnx(model, onnx_path, x_check)
    add_metadata(
        onnx_path,
        {
            "class_names": json.dumps(list(CLASS_NAMES)),
            "planted_class": PLANTED,
            "mean": json.dumps(list(MEAN)),
            "std": json.dumps(list(STD)),
            "color": "RGB",
            "layout": "NCHW",
            "target_layer": target,
        },
    )
    print(f"metadata written; {_show(onnx_path)} is {onnx_path.stat().st_size} bytes")
    figures = measure(onnx_path, target, args)
    meta = {
        "model": "audit_classifier.onnx",
        "class_names": list(CLASS_NAMES),
        "planted_class": PLANTED,
        "shortcut": SHORTCUT,
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
            "decoys": args.decoys,
            "init": "demo_classifier.onnx (its weights, BatchNorm folded; the planted class's output row re-drawn)",
            "onnx_max_abs_diff": diff,
            "torch": torch.__version__,
            "seconds": round(time.perf_counter() - T0),
            "command": "python tools/train_audit_model.py",
        },
        "figures": figures,
    }
    meta_path = args.out / "audit_classifier.json"
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {_show(meta_path)}; target layer {target!r}; total {time.perf_counter() - T0:.0f} s")


if __name__ == "__main__":
    main()
