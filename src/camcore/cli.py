"""The ``camcore`` command line: layers, augment, export, explain, video, audit, demo, info.

The commands parse and print; the work is the engine's, the batch service's
(:mod:`camcore.batch`) and the video pipeline's. Every argument is checked before any work
starts; bad input ends with one line on stderr and exit code 2. Outputs never overwrite an
input and are written atomically; Ctrl-C (exit 130) and SIGTERM (exit 143) finish what is
done: ``explain`` writes summary.json for the images it finished.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from camcore.arguments import (
    EXIT_BAD_INPUT,
    Parser,
    add_model_options,
    add_overlay_options,
    add_preprocess_options,
    add_target_options,
    add_task_options,
    add_top_k_option,
    positive_int,
    progress,
    say,
)
from camcore.errors import CamcoreError
from camcore.files import Terminated, terminate_as_interrupt
from camcore.preprocess import parse_size

EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="camcore", description="Class activation maps for any ONNX model.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    layers = sub.add_parser("layers", help="list candidate target layers (the default is marked *)")
    layers.add_argument("model", help="the .onnx model")
    layers.add_argument("--output", metavar="NAME", help="the model output to explain (default: the first)")
    layers.add_argument("--size", type=parse_size, metavar="HxW", help="fix the image input's spatial size")

    aug = sub.add_parser("augment", help="write the augmented model (outputs + activations + gradients)")
    aug.add_argument("model", help="the .onnx model")
    aug.add_argument("-o", "--out", required=True, help="path of the augmented .onnx (never the input)")
    aug.add_argument("--layer", action="append", metavar="TENSOR",
                     help="target layer (repeatable; default: the last spatial activation)")  # fmt: skip
    aug.add_argument("--output", metavar="NAME", help="the output to differentiate (default: the first)")
    aug.add_argument("--seed", choices=("class", "tensor"), default="class",
                     help="class: an int64 class per image (-1: top-1); tensor: a seed shaped like "
                          "the output")  # fmt: skip
    aug.add_argument("--size", type=parse_size, metavar="HxW", help="fix the image input's spatial size")

    add_export_parser(sub)

    ex = sub.add_parser("explain", help="write an overlay PNG, the raw map and a JSON summary per image")
    ex.add_argument("model", help="the .onnx model")
    ex.add_argument("images", nargs="+", help="image files, or folders of images")
    ex.add_argument("--out", required=True, help="output folder (created; never an input)")
    add_model_options(ex)
    add_target_options(ex)
    add_task_options(ex)
    ex.add_argument("--aug-smooth", action="store_true", help="average over flips and brightness (6 runs)")
    ex.add_argument("--eigen-smooth", action="store_true", help="first principal component instead of the sum")
    add_preprocess_options(ex)
    ex.add_argument("--batch-size", type=positive_int, default=8, metavar="N", help="images per run (default: 8)")
    add_top_k_option(ex)
    add_overlay_options(ex)

    demo = sub.add_parser("demo", help="explain the bundled demo model on fresh generated scenes")
    demo.add_argument("--out", default="camcore-demo", help="output folder (default: camcore-demo)")
    demo.add_argument("-n", "--scenes", type=positive_int, metavar="N",
                      help="how many scenes to generate and explain (default: 64; 300 with --audit)")  # fmt: skip
    demo.add_argument("--seed", type=int, help="the scenes' random seed (default: 1234; 4321 with --audit)")
    demo.add_argument("--audit", action="store_true",
                      help="audit the bundled shortcut model on a fresh dataset and print the findings")  # fmt: skip

    from camcore.audit.cli import add_audit_parser
    from camcore.video.cli import add_video_parser

    add_video_parser(sub)
    add_audit_parser(sub)
    sub.add_parser("info", help="versions, execution providers and the one in use")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help (0), or a bad argument already reported on one line (2)
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    from camcore.audit.cli import cmd_audit
    from camcore.video.cli import cmd_video

    handler = {
        "video": cmd_video,
        "audit": cmd_audit,
        "layers": cmd_layers,
        "augment": cmd_augment,
        "export": cmd_export,
        "explain": cmd_explain,
        "demo": cmd_demo,
        "info": cmd_info,
    }[args.command]
    try:
        with terminate_as_interrupt():
            return handler(args)
    except CamcoreError as exc:
        print(f"camcore: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Terminated:
        print("camcore: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("camcore: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


# ---------------------------------------------------------------------- layers, augment
def _image_input_shapes(model_path: str, size: tuple[int, int] | None) -> dict[str, list[int | str | None]] | None:
    """``--size`` as ``input_shapes`` for the model's image input, in its own layout."""
    if size is None:
        return None
    from camcore.graph import prepare_model
    from camcore.graph.layouts import image_input, image_layout

    proto, info = prepare_model(model_path)
    name = image_input(proto)
    if name is None:
        raise CamcoreError("--size needs an image input, but the model has no inputs")
    shape = info[name].shape
    if shape is None or len(shape) != 4:
        raise CamcoreError(f"--size needs a 4-D image input, but {name!r} has shape {shape}")
    nhwc = image_layout(proto, info, name) == "NHWC"
    return {name: [None, *size, None] if nhwc else [None, None, *size]}


def cmd_layers(args: argparse.Namespace) -> int:
    from camcore.graph import candidate_layers, prepare_model
    from camcore.graph.layers import default_layers, explained_output, input_size

    proto, info = prepare_model(args.model, _image_input_shapes(args.model, args.size))
    output = explained_output(proto, args.output)
    layers = candidate_layers(proto, info, output)
    hw = input_size(proto, info)
    defaults = {layer.tensor for layer in default_layers(proto, info, output)}
    if not layers:
        print("no candidate layers (no float activation of rank >= 3 leads to the output)")
        return 0
    width = max(len(layer.tensor) for layer in layers)
    print(f"  {'tensor':<{width}}  {'op':<20} {'layout':<15} {'grid':<9} shape")
    for layer in layers:
        mark = "*" if layer.tensor in defaults else " "
        shape = "?" if layer.shape is None else "x".join("?" if d is None else str(d) for d in layer.shape)
        grid = layer.grid(hw)
        cells = "-" if grid is None else "x".join("?" if d is None else str(d) for d in grid)
        print(f"{mark} {layer.tensor:<{width}}  {layer.op_type:<20} {layer.layout or '?':<15} {cells:<9} {shape}")
    print(f"({len(layers)} layers; layout: where the channels are, as the graph shows it; "
          "* = default target layer(s), their maps averaged)")  # fmt: skip
    return 0


def cmd_augment(args: argparse.Namespace) -> int:
    import onnx

    from camcore.files import atomic_write, output_file
    from camcore.graph import augment

    out = output_file(args.out, [args.model], "-o")
    aug = augment(args.model, args.layer, output=args.output, seed=args.seed,
                  input_shapes=_image_input_shapes(args.model, args.size))  # fmt: skip
    big = aug.model.ByteSize() > 1_800_000_000

    def write(tmp: Path) -> None:
        onnx.save(aug.model, str(tmp), save_as_external_data=big, location=out.name + ".data" if big else None)

    try:
        atomic_write(out, write)
    except OSError as exc:
        raise CamcoreError(f"cannot write {str(out)!r}: {exc.strerror or exc}") from None
    print(f"wrote {out}")
    print(f"  seed input: {aug.seed_input} ({aug.seed_mode})")
    for layer in aug.target_layers:
        print(f"  {layer}: activation -> {aug.activation_outputs[layer]}, gradient -> {aug.gradient_outputs[layer]}")
    return 0


# ---------------------------------------------------------------------- export
def add_export_parser(sub: Any) -> None:
    """``camcore export``: the self-contained CAM model (:func:`camcore.export_cam_model`)."""
    from camcore.graph.export_methods import EXPORTABLE

    ex = sub.add_parser("export", help="write a model that returns its outputs and the CAM (and overlay) in one run")
    ex.add_argument("model", help="the .onnx model")
    ex.add_argument("-o", "--out", required=True, help="path of the exported .onnx (never the input)")
    ex.add_argument("--layer", action="append", metavar="TENSOR",
                    help="target layer (repeatable, maps averaged; default: the last spatial activation)")  # fmt: skip
    ex.add_argument("--method", default="gradcam", metavar="NAME",
                    help=f"one of {', '.join(EXPORTABLE)} (default: gradcam)")  # fmt: skip
    ex.add_argument("--output", metavar="NAME", help="the (N, classes) output to explain (default: the first)")
    ex.add_argument("--size", type=parse_size, metavar="HxW", help="fix the image input's spatial size")
    ex.add_argument("--class-input", choices=("optional", "required"), default="optional",
                    help="optional: 'class' defaults to -1 (top-1) where the runtime honours ONNX input "
                         "defaults (onnxruntime; OpenVINO folds it: top-1 only); required: a plain input "
                         "every runtime can feed")  # fmt: skip
    ex.add_argument("--overlay", action="store_true", help="also take the uint8 RGB 'image' and return 'overlay'")
    add_overlay_options(ex)


def cmd_export(args: argparse.Namespace) -> int:
    from camcore.files import output_file
    from camcore.graph.export import export_cam_model, exported_names

    output_file(args.out, [args.model], "-o")  # refused before any work
    proto = export_cam_model(args.model, args.out, layers=args.layer, method=args.method, size=args.size,
                             overlay=args.overlay, colormap=args.colormap, alpha=args.alpha, output=args.output,
                             class_input=args.class_input)  # fmt: skip
    names = exported_names(proto)
    print(f"wrote {args.out}")
    print(f"  inputs: {', '.join(names['inputs'])}")
    print(f"  outputs: {', '.join(names['outputs'])}")
    return 0


# ---------------------------------------------------------------------- explain
def image_paths(given: Sequence[str]) -> list[str]:
    """The image files of the arguments: files as they are, folders' images sorted.

    Raises:
        CamcoreError: a path that does not exist, or a folder without images.
    """
    from camcore.files import image_files

    paths: list[str] = []
    for arg in given:
        p = Path(arg)
        if p.is_dir():
            paths += image_files(p)
        elif not p.exists():
            raise CamcoreError(f"image {arg!r} does not exist")
        else:
            paths.append(arg)
    return paths


def read_image(path: str) -> np.ndarray:
    """An RGB uint8 image, or a one-line error naming the file."""
    import cv2

    data = np.fromfile(path, dtype=np.uint8) if Path(path).is_file() else None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data is not None and data.size else None
    if img is None:
        raise CamcoreError(f"cannot decode image {path!r} (empty, or not an image OpenCV can read)")
    if img.size == 0:
        raise CamcoreError(f"image {path!r} is empty ({img.shape[1]}x{img.shape[0]})")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def cmd_explain(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from camcore.arguments import choose_task, preprocessing
    from camcore.batch import BatchExplainer, Failed, Item, Names
    from camcore.cam import cam_class
    from camcore.files import atomic_write, output_folder, uninterrupted
    from camcore.preprocess import read_model_metadata

    # every argument, before any inference
    paths = image_paths(args.images)
    out_dir = output_folder(args.out, [args.model, *args.images, *paths], "--out")

    def build(output: str | None) -> Any:
        return cam_class(args.method)(args.model, args.layer, output=output, providers=args.providers,
                                      threads=args.threads)  # fmt: skip

    cam = build(args.output)
    preprocess, note = preprocessing(args, cam.engine, args.model)
    cam, choice = choose_task(args, cam, preprocess, build)
    class_names = read_model_metadata(cam.engine.model, args.model).class_names
    explainer = BatchExplainer(cam, choice, batch_size=args.batch_size, top_k=args.top_k, aug_smooth=args.aug_smooth,
                               eigen_smooth=args.eigen_smooth, class_names=class_names)  # fmt: skip
    say(note)

    records: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    names = Names()
    summary: dict[str, Any] = {
        "model": args.model,
        "method": cam.method.name,
        **choice.summary(),
        "target_type": None if choice.classes is None else choice.classes.kind.name,
        "target": args.target,
        "aug_smooth": args.aug_smooth,
        "eigen_smooth": args.eigen_smooth,
        "target_layers": cam.target_layers,
        "input_size": list(preprocess.size) if preprocess.size else "per image",
        "mean": list(preprocess.mean),
        "std": list(preprocess.std),
        "preprocessing": note,
        "images": records,
        "failures": failures,
    }

    def items() -> Iterator[Item | Failed]:
        for path in paths:
            try:
                rgb = read_image(path)
                yield Item(path, rgb, preprocess(rgb, channels="rgb"))
            except CamcoreError as exc:
                yield Failed(path, str(exc))

    interrupted = ""
    t0 = time.perf_counter()
    bar = None
    try:
        bar = progress(len(paths), "camcore explain", "img")
        for done in explainer.run(items()):
            if isinstance(done, Failed):
                failures.append({"image": done.key, "error": done.error})
                tqdm.write(f"camcore: skipped {done.key}: {done.error}", file=sys.stderr)
            else:
                with uninterrupted():  # the image's PNG, .npy and record, all or none
                    records.append(_write_explained(done, out_dir, names(done.key), args))
            bar.update()
    except KeyboardInterrupt as exc:
        interrupted = "terminated" if isinstance(exc, Terminated) else "interrupted"
        raise
    finally:
        with uninterrupted():  # a signal that comes now waits for summary.json to be in place
            if bar is not None:
                bar.close()
            summary.update(interrupted=interrupted or False, seconds=round(time.perf_counter() - t0, 3),
                           done=len(records), total=len(paths))  # fmt: skip
            text = json.dumps(summary, indent=2)
            atomic_write(out_dir / "summary.json", lambda tmp: tmp.write_text(text))
    print(f"explained {len(records)} of {len(paths)} image(s) into {out_dir} (layer {', '.join(cam.target_layers)})")
    if failures:
        print(f"camcore: {len(failures)} image(s) failed; see {out_dir / 'summary.json'}", file=sys.stderr)
    return EXIT_BAD_INPUT if failures else 0


def _write_explained(done: Any, out_dir: Path, stem: str, args: argparse.Namespace) -> dict[str, Any]:
    """Write one image's overlay PNG and map .npy (atomically); its summary record."""
    import cv2

    from camcore.files import atomic_write
    from camcore.postprocess import overlay

    picture = overlay(done.item.image, done.map, alpha=args.alpha, colormap=args.colormap, rgb=True)
    png, npy = out_dir / f"{stem}_cam.png", out_dir / f"{stem}_cam.npy"

    def write_png(tmp: Path) -> None:
        ok, data = cv2.imencode(".png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        if not ok:
            raise CamcoreError(f"cannot encode {str(png)!r}")
        tmp.write_bytes(data.tobytes())

    def write_npy(tmp: Path) -> None:
        with tmp.open("wb") as f:
            np.save(f, done.map)

    try:
        atomic_write(png, write_png)
        atomic_write(npy, write_npy)
    except OSError as exc:
        raise CamcoreError(f"cannot write into {str(out_dir)!r}: {exc.strerror or exc}") from None
    return {"image": done.key, "overlay": str(png), "map": str(npy), **done.record}


# ---------------------------------------------------------------------- demo, info
def cmd_demo(args: argparse.Namespace) -> int:
    from camcore.demo import format_audit_report, format_report, run_audit_demo, run_demo
    from camcore.files import output_folder

    out = output_folder(args.out, option="--out")
    if args.audit:
        audit = run_audit_demo(out, n=args.scenes or 300, seed=4321 if args.seed is None else args.seed)
        print(format_audit_report(audit))
        return 0
    report = run_demo(out, n=args.scenes or 64, seed=1234 if args.seed is None else args.seed)
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
