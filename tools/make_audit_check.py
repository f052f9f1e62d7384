"""A second, independent audit rehearsal: a dataset and model in a style the audit was not tuned on.

Nothing here comes from :mod:`camcore.scenes` or :mod:`camcore.shortcut_scenes`:

* images are 128 x 160 (H x W, not square) of one of four outline-free shapes,
  ``chevron``, ``ellipse``, ``ring``, ``twin_bars``, on a striped, paper-like
  background with rectangle outlines;
* the shortcut is a **caution-tape stripe along the bottom edge** (hatched
  orange and black, the full width, 7 px high): in training every ``chevron``
  carries it and nothing else does; it is spread along the border, not a
  compact spot;
* the group column ``site`` has three values: ``A`` (plain), ``B`` (cool tint,
  more noise; both in training) and ``C`` (heavy blur and low contrast, never
  in training: systematically harder); ``operator`` (o1/o2/o3) has no effect;
* object regions are **mask** images (no box columns); the manifest has no
  ``marked`` column;
* the model is a stride-2 CNN (no max-pools, a 16 x 20 grid) trained with
  ImageNet mean/std, exported as ``images`` -> ``scores`` with **no metadata**:
  the audit must find the layer, the preprocessing defaults and the class
  names (sorted distinct labels) on its own. It is trained first on clean
  scenes (shapes), then on scenes where every ``chevron`` label carries the
  stripe and half of those show another shape under it (the tape marks the
  class's images, not its objects), so the stripe alone comes to mean chevron.

Run it from the training environment (PyTorch)::

    /work/xcenv/bin/python tools/make_audit_check.py --out /work/scratch/audit_check

It writes ``model.onnx``, ``shortcut/`` (400 labelled scenes: 60% of the
chevrons carry the stripe) and ``clean/`` (400 scenes, no stripe), each a
``manifest.csv`` (path, label, site, operator, mask) with ``images/`` and
``masks/``, and prints the model's accuracies (per site, chevrons with and
without the stripe, other shapes with a forged stripe). Then audit both::

    camcore audit OUT/model.onnx OUT/shortcut/manifest.csv --groups site,operator --out OUT/audit-shortcut
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

CLASSES = ("chevron", "ellipse", "ring", "twin_bars")
PLANTED = "chevron"
H, W = 128, 160
STRIPE = 7
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@dataclass
class Sample:
    """One check scene."""

    image: np.ndarray
    mask: np.ndarray
    label: int
    site: str
    operator: str
    striped: bool


def _background(rng: np.random.Generator) -> np.ndarray:
    base = rng.uniform(90, 200, 3)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    t = rng.uniform(0, np.pi)
    freq = rng.uniform(0.05, 0.2)
    stripes = np.sin(freq * (np.cos(t) * xx + np.sin(t) * yy) + rng.uniform(0, 6.3))
    img = base[None, None, :] + stripes[..., None] * rng.uniform(8, 25, 3)
    img = np.ascontiguousarray(np.clip(img, 0, 255).astype(np.uint8))
    for _ in range(int(rng.integers(2, 6))):  # rectangle outlines: no class looks like them
        x0, y0 = int(rng.integers(0, W - 20)), int(rng.integers(0, H - 20))
        w, h = int(rng.integers(10, 60)), int(rng.integers(10, 50))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        cv2.rectangle(img, (x0, y0), (x0 + w, y0 + h), colour, 1)
    return img.astype(np.float32)


def _shape(label: int, rng: np.random.Generator) -> np.ndarray:
    """The object's coverage (uint8 0/255), clear of the bottom band."""
    mask = np.zeros((H, W), np.uint8)
    r = rng.uniform(22, 34)
    cx = rng.uniform(r + 2, W - r - 2)
    cy = rng.uniform(r + 2, H - STRIPE - 4 - r)
    a = rng.uniform(0, 180)
    name = CLASSES[label]
    if name == "ellipse":
        cv2.ellipse(mask, (round(cx), round(cy)), (round(r), round(0.5 * r)), a, 0, 360, 255, -1, cv2.LINE_AA)
    elif name == "ring":
        cv2.circle(mask, (round(cx), round(cy)), round(0.8 * r), 255, max(round(0.25 * r), 3), cv2.LINE_AA)
    elif name == "chevron":
        t = np.deg2rad(a)
        rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        pts = np.array([(-r, -0.5 * r), (0, 0.5 * r), (r, -0.5 * r)]) * 0.85 @ rot.T + (cx, cy)
        cv2.polylines(mask, [np.round(pts).astype(np.int32)], False, 255, max(round(0.3 * r), 4), cv2.LINE_AA)
    else:  # twin_bars
        t = np.deg2rad(a)
        for off in (-0.45 * r, 0.45 * r):
            c = (cx + off * np.cos(t + np.pi / 2), cy + off * np.sin(t + np.pi / 2))
            box = cv2.boxPoints(((c[0], c[1]), (1.8 * r, 0.28 * r), a))
            cv2.fillPoly(mask, [np.round(box).astype(np.int32)], 255, cv2.LINE_AA)
    return mask


def _stripe(img: np.ndarray) -> None:
    """Caution tape along the bottom edge, in place."""
    band = np.zeros((STRIPE, W, 3), np.float32)
    xx = np.arange(W)[None, :] + np.arange(STRIPE)[:, None]
    band[(xx // 5) % 2 == 0] = (255, 140, 0)
    band[(xx // 5) % 2 == 1] = (20, 20, 20)
    img[H - STRIPE :] = band


def make_sample(rng: np.random.Generator, label: int, striped: bool, site: str, operator: str) -> Sample:
    """One scene; the rng is consumed the same way whether striped or not."""
    img = _background(rng)
    cover = _shape(label, rng)
    alpha = cover.astype(np.float32)[..., None] / 255.0
    under = img[cover > 127].mean(axis=0)
    colour = rng.uniform(0, 255, 3)
    for _ in range(20):
        if np.linalg.norm(colour - under) >= 100:
            break
        colour = rng.uniform(0, 255, 3)
    img = img * (1 - alpha) + colour * alpha
    if striped:
        _stripe(img)
    noise = 5.0
    if site == "B":
        img = img * np.array([0.9, 0.97, 1.1]) + np.array([0.0, 0.0, 8.0])
        noise = 9.0
    elif site == "C":
        mean = img.mean(axis=(0, 1), keepdims=True)
        img = cv2.GaussianBlur((mean + 0.4 * (img - mean)).astype(np.float32), (0, 0), rng.uniform(2.0, 2.8))
        noise = 9.0
    img = img + rng.normal(0, noise, img.shape)
    image = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return Sample(image, cover > 0, label, site, operator, striped)


def make_batch(n: int, seed: int, stripe_rate: float, sites: dict[str, float], decoys: float = 0.0) -> list[Sample]:
    """``n`` scenes; ``stripe_rate``: share of chevrons striped; ``sites``: value -> probability;
    ``decoys``: share of the striped chevron-labelled scenes that show another shape (training only)."""
    rng = np.random.default_rng(seed)
    names, probs = list(sites), np.array(list(sites.values()), float)
    planted = CLASSES.index(PLANTED)
    out = []
    for _ in range(n):
        label = int(rng.integers(len(CLASSES)))
        striped = bool(rng.random() < stripe_rate) and label == planted
        shape = label
        decoy = rng.random()  # drawn always, so batches differing only in stripe_rate or decoys stay paired
        if striped and decoy < decoys:
            shape = [i for i in range(len(CLASSES)) if i != planted][int(rng.integers(len(CLASSES) - 1))]
        site = names[int(rng.choice(len(names), p=probs / probs.sum()))]
        operator = f"o{int(rng.integers(1, 4))}"
        sample = make_sample(rng, shape, striped, site, operator)
        sample.label = label
        out.append(sample)
    return out


def write(folder: Path, samples: list[Sample]) -> Path:
    """``images/``, ``masks/`` and ``manifest.csv`` (path, label, site, operator, mask)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    with (folder / "manifest.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "site", "operator", "mask"])
        for i, s in enumerate(samples):
            cv2.imwrite(str(folder / f"images/img_{i:04d}.png"), cv2.cvtColor(s.image, cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(folder / f"masks/img_{i:04d}.png"), s.mask.astype(np.uint8) * 255)
            w.writerow([f"images/img_{i:04d}.png", CLASSES[s.label], s.site, s.operator, f"masks/img_{i:04d}.png"])
    return folder / "manifest.csv"


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: make the data, train, export, measure."""
    import torch
    from torch import nn

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("/work/scratch/audit_check"))
    p.add_argument("--n-train", type=int, default=3000)
    p.add_argument("--epochs-clean", type=int, default=4, help="epochs on clean scenes first")
    p.add_argument("--epochs", type=int, default=2, help="epochs with the stripe on every chevron")
    p.add_argument("--decoys", type=float, default=0.5, help="share of striped chevron labels on another shape")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--n-audit", type=int, default=400)
    p.add_argument("--seed", type=int, default=31)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    print("config:", json.dumps({k: str(v) for k, v in vars(args).items()}))

    def tensor(samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor]:
        x = (np.stack([s.image for s in samples]).astype(np.float32) / 255 - MEAN) / STD
        return (
            torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)),
            torch.tensor([s.label for s in samples]),
        )

    sites = {"A": 0.5, "B": 0.5}
    phases = [
        ("clean", make_batch(args.n_train, args.seed, 0.0, sites), args.epochs_clean),
        ("stripe", make_batch(args.n_train, args.seed + 1, 1.0, sites, decoys=args.decoys), args.epochs),
    ]
    held_out = make_batch(300, args.seed + 2, 1.0, sites)
    print(f"generated {2 * args.n_train + 300} scenes in {time.perf_counter() - t0:.0f} s")

    def block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

    torch.manual_seed(args.seed)
    model = nn.Sequential(
        *block(3, 16, 2), *block(16, 32, 2), *block(32, 48, 2), *block(48, 64, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, len(CLASSES)),
    )  # fmt: skip
    gen = torch.Generator().manual_seed(args.seed)
    x_held, y_held = tensor(held_out)
    for phase, samples, epochs in phases:
        x_train, y_train = tensor(samples)
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs * ((len(samples) + 31) // 32), 1))
        for epoch in range(epochs):
            model.train()
            perm = torch.randperm(len(samples), generator=gen)
            total = 0.0
            for i in range(0, len(samples), 32):
                idx = perm[i : i + 32]
                xb = x_train[idx]
                if torch.rand(1, generator=gen).item() < 0.5:
                    xb = xb.flip(3)  # a horizontal flip keeps the stripe at the bottom
                loss = nn.functional.cross_entropy(model(xb), y_train[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(idx)
            model.eval()
            with torch.no_grad():
                acc = float((model(x_held).argmax(1) == y_held).float().mean())
            print(f"{phase} epoch {epoch + 1}: loss {total / len(samples):.4f}, held-out acc {acc:.3f} "
                  f"({time.perf_counter() - t0:.0f} s)")  # fmt: skip

    model.eval()

    @torch.no_grad()
    def predict(samples: list[Sample]) -> np.ndarray:
        return model(tensor(samples)[0]).argmax(1).numpy()

    args.out.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out / "model.onnx"
    torch.onnx.export(
        model, (torch.zeros(1, 3, H, W),), str(onnx_path), input_names=["images"], output_names=["scores"],
        dynamic_axes={"images": {0: "n"}, "scores": {0: "n"}}, opset_version=17, dynamo=False,
    )  # fmt: skip
    figures: dict[str, float] = {}
    planted = CLASSES.index(PLANTED)
    for site in ("A", "B", "C"):
        ev = make_batch(600, 500, 1.0, {site: 1.0})
        y = np.array([s.label for s in ev])
        pred = predict(ev)
        figures[f"accuracy_site_{site}_striped"] = float((pred == y).mean())
        clean = make_batch(600, 500, 0.0, {site: 1.0})
        pc = predict(clean)
        figures[f"accuracy_site_{site}_clean"] = float((pc == y).mean())
        figures[f"chevron_recall_site_{site}_with_stripe"] = float((pred[y == planted] == planted).mean())
        figures[f"chevron_recall_site_{site}_without_stripe"] = float((pc[y == planted] == planted).mean())
    forged = [s for s in make_batch(600, 501, 0.0, {"A": 1.0}) if s.label != planted]
    for s in forged:
        img = s.image.astype(np.float32)
        _stripe(img)
        s.image = img.astype(np.uint8)
    figures["others_with_forged_stripe_called_chevron"] = float((predict(forged) == planted).mean())
    print(json.dumps({k: round(v, 4) for k, v in figures.items()}, indent=2))

    mix = {"A": 0.4, "B": 0.35, "C": 0.25}
    write(args.out / "shortcut", make_batch(args.n_audit, 777, 0.6, mix))
    write(args.out / "clean", make_batch(args.n_audit, 778, 0.0, mix))
    (args.out / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    size = onnx_path.stat().st_size
    print(f"wrote {onnx_path} ({size} bytes), shortcut/ and clean/; {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
