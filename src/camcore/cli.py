"""The ``camcore`` command line: layers, augment, explain, demo, info.

Bad input (a model, an image, a layer, a shape) ends with a one-line error on stderr
and exit code 2; a batch keeps going past bad images and reports them at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from camcore.errors import CamcoreError
from camcore.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess, parse_size

EXIT_BAD_INPUT = 2


def _parser() -> argparse.ArgumentParser:
    from camcore.methods import METHODS
    from camcore.targets import TARGET_TYPES

    p = argparse.ArgumentParser(prog="camcore", description="Class activation maps for any ONNX model.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    layers = sub.add_parser("layers", help="list candidate target layers (the default is marked *)")
    layers.add_argument("model")
    layers.add_argument("--output", help="differentiated output (default: the first)")
    layers.add_argument("--size", type=parse_size, help="fix the input's spatial size HxW")

    aug = sub.add_parser("augment", help="write the augmented model (outputs + activations + gradients)")
    aug.add_argument("model")
    aug.add_argument("-o", "--out", required=True, help="path of the augmented .onnx")
    aug.add_argument("--layer", action="append", help="target layer (repeatable; default: automatic)")
    aug.add_argument("--output", help="differentiated output (default: the first)")
    aug.add_argument(
        "--seed",
        choices=("class", "tensor"),
        default="class",
        help="class: int64 class per row (-1 = top-1); tensor: a seed shaped like the output",
    )
    aug.add_argument("--size", type=parse_size, help="fix the input's spatial size HxW")

    ex = sub.add_parser("explain", help="write an overlay PNG, the raw map and a JSON summary per image")
    ex.add_argument("model")
    ex.add_argument("images", nargs="+")
    ex.add_argument("--out", required=True, help="output folder")
    ex.add_argument("--method", choices=list(METHODS), default="gradcam", help="the CAM method (default: gradcam)")
    ex.add_argument("--layer", action="append", help="target layer (repeatable; default: automatic)")
    ex.add_argument("--target", type=int, help="class (or output index) to explain (default: the top-1 class)")
    ex.add_argument(
        "--target-type",
        choices=list(TARGET_TYPES),
        default="class",
        help="what to explain: " + "; ".join(f"{k}: {v[1]}" for k, v in TARGET_TYPES.items()),
    )
    ex.add_argument("--aug-smooth", action="store_true", help="average over flips and brightness (6 runs)")
    ex.add_argument("--eigen-smooth", action="store_true", help="first principal component instead of the sum")
    ex.add_argument("--size", type=parse_size, help="resize images to HxW (default: the model's input size)")
    ex.add_argument("--mean", type=float, nargs=3, default=IMAGENET_MEAN, metavar=("R", "G", "B"))
    ex.add_argument("--std", type=float, nargs=3, default=IMAGENET_STD, metavar=("R", "G", "B"))
    ex.add_argument("--bgr", action="store_true", help="the model expects BGR channel order")
    ex.add_argument("--nhwc", action="store_true", help="the model expects NHWC layout")
    ex.add_argument("--batch-size", type=int, default=8)
    ex.add_argument("--top-k", type=int, default=5)
    ex.add_argument("--colormap", default="jet")
    ex.add_argument("--alpha", type=float, default=0.5)
    ex.add_argument("--providers", nargs="+", help="onnxruntime providers (default: CUDA if it works, else CPU)")
    ex.add_argument("--threads", type=int, help="onnxruntime intra-op threads")

    demo = sub.add_parser("demo", help="explain the bundled demo model on fresh generated scenes")
    demo.add_argument("--out", default="camcore-demo", help="output folder (default: camcore-demo)")
    demo.add_argument("-n", "--scenes", type=int, default=64)
    demo.add_argument("--seed", type=int, default=1234)

    from camcore.video.cli import add_video_parser

    add_video_parser(sub)
    sub.add_parser("info", help="versions, execution providers and the one in use")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from camcore.video.cli import cmd_video

    args = _parser().parse_args(argv)
    handler = {
        "video": cmd_video,
        "layers": cmd_layers,
        "augment": cmd_augment,
        "explain": cmd_explain,
        "demo": cmd_demo,
        "info": cmd_info,
    }[args.command]
    try:
        return handler(args)
    except CamcoreError as exc:
        print(f"camcore: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("camcore: interrupted", file=sys.stderr)
        return 130


# ---------------------------------------------------------------------- layers
def _input_shapes(
    model_path: str, size: tuple[int, int] | None, nhwc: bool = False
) -> dict[str, list[int | str | None]] | None:
    if size is None:
        return None
    from camcore.graph import prepare_model

    proto, info = prepare_model(model_path)
    inits = {i.name for i in proto.graph.initializer}
    name = next(i.name for i in proto.graph.input if i.name not in inits)
    shape = info[name].shape
    if shape is None or len(shape) != 4:
        raise CamcoreError(f"--size needs a 4-D image input, but {name!r} has shape {shape}")
    dims: list[int | str | None] = [None, None, *size] if not nhwc else [None, *size, None]
    return {name: dims}


def cmd_layers(args: argparse.Namespace) -> int:
    from camcore.graph import candidate_layers, default_layer, prepare_model

    proto, info = prepare_model(args.model, _input_shapes(args.model, args.size))
    output = args.output or proto.graph.output[0].name
    layers = candidate_layers(proto, info, output)
    default = default_layer(layers)
    if not layers:
        print("no candidate layers (no float activation of rank >= 3 leads to the output)")
        return 0
    width = max(len(layer.tensor) for layer in layers)
    print(f"  {'tensor':<{width}}  {'op':<20} shape")
    for layer in layers:
        mark = "*" if default is not None and layer.tensor == default.tensor else " "
        shape = "?" if layer.shape is None else "x".join("?" if d is None else str(d) for d in layer.shape)
        print(f"{mark} {layer.tensor:<{width}}  {layer.op_type:<20} {shape}")
    print(f"({len(layers)} layers; * = default target layer)")
    return 0


# ---------------------------------------------------------------------- augment
def cmd_augment(args: argparse.Namespace) -> int:
    import onnx

    from camcore.graph import augment

    aug = augment(
        args.model, args.layer, output=args.output, seed=args.seed, input_shapes=_input_shapes(args.model, args.size)
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    big = aug.model.ByteSize() > 1_800_000_000
    onnx.save(aug.model, str(out), save_as_external_data=big, location=out.name + ".data" if big else None)
    print(f"wrote {out}")
    print(f"  seed input: {aug.seed_input} ({aug.seed_mode})")
    for layer in aug.target_layers:
        print(f"  {layer}: activation -> {aug.activation_outputs[layer]}, gradient -> {aug.gradient_outputs[layer]}")
    return 0


# ---------------------------------------------------------------------- explain
def _read_image(path: str) -> np.ndarray:
    import cv2

    if not Path(path).is_file():
        raise CamcoreError(f"image {path!r} does not exist")
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise CamcoreError(f"cannot decode image {path!r} (not an image OpenCV can read)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _model_size(cam: object, args: argparse.Namespace) -> tuple[int, int] | None:
    """The size images are resized to: the model's, ``--size`` (checked against it), or None."""
    from camcore.preprocess import model_input_size

    fixed = model_input_size(cam, args.nhwc)
    if args.size:
        if fixed is not None and fixed != tuple(args.size):
            raise CamcoreError(
                f"--size {args.size[0]}x{args.size[1]} contradicts the model's input size {fixed[0]}x{fixed[1]}"
            )
        return args.size
    return fixed  # None: each image keeps its own size


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def cmd_explain(args: argparse.Namespace) -> int:
    import cv2
    from tqdm import tqdm

    from camcore import overlay
    from camcore.cam import cam_classes
    from camcore.methods import METHODS
    from camcore.targets import TARGET_TYPES

    if args.batch_size < 1:
        raise CamcoreError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not 0.0 <= args.alpha <= 1.0:
        raise CamcoreError(f"--alpha must be in [0, 1], got {args.alpha}")
    method = METHODS[args.method]
    cam = cam_classes()[method.name](args.model, args.layer, providers=args.providers, threads=args.threads)
    make_target = TARGET_TYPES[args.target_type][0]
    by_class = args.target_type in ("class", "softmax")
    size = _model_size(cam, args)
    preprocess = Preprocess(size, args.mean, args.std, bgr=args.bgr, nhwc=args.nhwc)
    if args.target is not None and by_class:
        out_shape = cam.info[cam.output].shape
        classes = out_shape[-1] if out_shape else None
        if args.target < 0 or (isinstance(classes, int) and args.target >= classes):
            raise CamcoreError(f"--target {args.target} is out of range for {classes} classes")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    records: list[dict[str, object]] = []
    failures: list[dict[str, str]] = []
    used_stems: set[str] = set()
    pending: list[tuple[str, np.ndarray, np.ndarray]] = []

    def stem_for(path: str) -> str:
        stem, k = Path(path).stem, 1
        while stem in used_stems:
            k += 1
            stem = f"{Path(path).stem}_{k}"
        used_stems.add(stem)
        return stem

    def flush() -> None:
        if not pending:
            return
        groups: dict[tuple[int, ...], list[tuple[str, np.ndarray, np.ndarray]]] = {}
        for item in pending:
            groups.setdefault(item[2].shape, []).append(item)
        for items in groups.values():
            try:
                _explain_batch(items)
            except CamcoreError:
                for item in items:  # find the culprit, keep the rest
                    try:
                        _explain_batch([item])
                    except CamcoreError as exc:
                        failures.append({"image": item[0], "error": str(exc)})
        pending.clear()

    def _explain_batch(items: list[tuple[str, np.ndarray, np.ndarray]]) -> None:
        x = np.stack([item[2] for item in items])
        targets, logits = None, None
        if args.target is not None or args.target_type != "class" or args.aug_smooth or method.kind != "layer":
            logits = cam.outputs_of({cam.input_names[0]: x})  # the last run may be of an augmented copy
            if args.target is not None or args.target_type != "class":
                targets = [make_target(args.target, row) for row in logits]
        maps = cam(x, targets=targets, aug_smooth=args.aug_smooth, eigen_smooth=args.eigen_smooth)
        if logits is None:
            logits = cam.outputs[0]
        for i, (path, rgb, _) in enumerate(items):
            stem = stem_for(path)
            row = logits[i].reshape(-1) if logits.ndim >= 2 else logits.reshape(-1)
            probs = _softmax(row.astype(np.float64))
            top = np.argsort(-row)[: args.top_k]
            explained = (int(args.target if args.target is not None else top[0]) if by_class
                         else args.target)  # fmt: skip
            picture = overlay(rgb, maps[i], alpha=args.alpha, colormap=args.colormap, rgb=True)
            png, npy = out_dir / f"{stem}_cam.png", out_dir / f"{stem}_cam.npy"
            cv2.imwrite(str(png), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
            np.save(npy, maps[i])
            records.append(
                {
                    "image": path,
                    "overlay": str(png),
                    "map": str(npy),
                    "explained_class": explained,
                    "top_k": [{"class": int(k), "logit": float(row[k]), "probability": float(probs[k])} for k in top],
                }
            )

    for path in tqdm(args.images, desc="explain", unit="img", disable=None):
        try:
            rgb = _read_image(path)
            pending.append((path, rgb, preprocess(rgb, channels="rgb")))
        except CamcoreError as exc:
            failures.append({"image": path, "error": str(exc)})
        if len(pending) >= args.batch_size:
            flush()
    flush()

    summary = {
        "model": args.model,
        "method": method.name,
        "target_type": args.target_type,
        "aug_smooth": args.aug_smooth,
        "eigen_smooth": args.eigen_smooth,
        "target_layers": cam.target_layers,
        "input_size": list(size) if size else "per image",
        "mean": list(args.mean),
        "std": list(args.std),
        "images": records,
        "failures": failures,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"explained {len(records)} image(s) into {out_dir} (layer {', '.join(cam.target_layers)})")
    for f in failures:
        print(f"camcore: skipped {f['image']}: {f['error']}", file=sys.stderr)
    return EXIT_BAD_INPUT if failures else 0


# ---------------------------------------------------------------------- demo, info
def cmd_demo(args: argparse.Namespace) -> int:
    from camcore.demo import format_report, run_demo

    report = run_demo(args.out, n=args.scenes, seed=args.seed)
    print(format_report(report))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    import platform

    import cv2
    import onnx
    import onnxruntime as ort

    import camcore
    from camcore.runtime import select_providers

    choice = select_providers()
    print(f"camcore      {camcore.__version__}")
    print(f"python       {platform.python_version()} ({platform.machine()}, {platform.system()})")
    print(f"onnx         {onnx.__version__}")
    build = "GPU build" if "CUDAExecutionProvider" in ort.get_available_providers() else "CPU build"
    print(f"onnxruntime  {ort.__version__} ({build})")
    print(f"numpy        {np.__version__}")
    print(f"opencv       {cv2.__version__}")
    print(f"providers    available: {', '.join(ort.get_available_providers())}")
    print(f"in use       {choice.providers[0]} ({choice.reason})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
