"""The command-line options that ``explain``, ``video`` and the coming ``audit`` share: one
definition each, with its help text and its check (argparse ``type=`` functions, so a bad
value ends in one line and exit code 2 before any work).

:class:`Parser` is an ``ArgumentParser`` whose errors are one line: ``camcore: error: ...``.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from camcore.preprocess import Preprocess, parse_size

EXIT_BAD_INPUT = 2


class Parser(argparse.ArgumentParser):
    """An argument parser that reports a bad argument on one line, naming the command's help."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"camcore: error: {message} (see `{self.prog} --help`)\n")


def _number(kind: Callable[[str], float | int], what: str, low: float | None = None, high: float | None = None,
            low_open: bool = False) -> Callable[[str], float | int]:  # fmt: skip
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}, not {text!r}") from None
        if value != value or (low is not None and (value <= low if low_open else value < low)):
            raise argparse.ArgumentTypeError(f"{what}, not {text}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{what}, not {text}")
        return value

    return parse


#: argparse types: the value or a one-line reason
positive_int = _number(int, "must be a whole number >= 1", 1)
count = _number(int, "must be a whole number >= 0", 0)
unit_float = _number(float, "must be a number in [0, 1]", 0.0, 1.0)
positive_float = _number(float, "must be a number > 0", 0.0, low_open=True)
finite_float = _number(float, "must be a finite number", float("-inf"))


def colormap_name(text: str) -> str:
    """A colormap of :data:`camcore.postprocess.COLORMAPS` (case-insensitive), or the closest names."""
    from camcore.postprocess import COLORMAPS

    by_lower = {c.lower(): c for c in COLORMAPS}
    if text.lower() in by_lower:
        return by_lower[text.lower()]
    close = difflib.get_close_matches(text.lower(), list(by_lower), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(by_lower[c] for c in close)}?" if close else f"choose from {', '.join(COLORMAPS)}"
    raise argparse.ArgumentTypeError(f"unknown colormap {text!r}; {hint}")


def add_model_options(p: argparse.ArgumentParser) -> None:
    """``--layer``, ``--output``, ``--method``, ``--providers``, ``--threads``."""
    from camcore.methods import METHODS

    p.add_argument("--method", choices=list(METHODS), default="gradcam", metavar="METHOD",
                   help=f"the CAM method (default: gradcam); one of: {', '.join(METHODS)}")  # fmt: skip
    p.add_argument("--layer", action="append", metavar="TENSOR",
                   help="target layer, an ONNX tensor or node name (repeatable; default: the last spatial "
                        "activation; `camcore layers MODEL` lists them)")  # fmt: skip
    p.add_argument("--output", metavar="NAME", help="the model output to explain (default: the first)")
    p.add_argument("--providers", nargs="+", metavar="PROVIDER",
                   help="onnxruntime execution providers (default: CUDA if it works, else CPU)")  # fmt: skip
    p.add_argument("--threads", type=positive_int, metavar="N", help="onnxruntime intra-op threads")


def class_value(text: str) -> int | str:
    """``--target``: a class index, or a class name the model's metadata lists (resolved by
    :func:`choose_task` once the model is loaded)."""
    try:
        return int(text)
    except ValueError:
        if not text.strip():
            raise argparse.ArgumentTypeError("must be a class index or a class name, not empty") from None
        return text.strip()


def class_index(target: int | str | None, names: Sequence[str] | None) -> int | None:
    """``target`` as an index: a name is looked up in ``names`` (case-insensitive).

    Raises:
        CamcoreError: a name the model does not list (with the closest names), or a name for a
            model without class names.
    """
    from camcore.errors import CamcoreError

    if not isinstance(target, str):
        return target
    if not names:
        raise CamcoreError(
            f"--target {target!r} is a class name, but the model's metadata lists no class names: give the index"
        )
    lowered = [n.lower() for n in names]
    if target.lower() in lowered:
        return lowered.index(target.lower())
    close = difflib.get_close_matches(target, list(names), n=3, cutoff=0.5)
    hint = (
        f"; closest: {', '.join(close)}"
        if close
        else f"; the model's classes: {', '.join(names[:10])}" + (", ..." if len(names) > 10 else "")
    )
    raise CamcoreError(f"--target {target!r} is not one of the model's {len(names)} class names{hint}")


def add_target_options(p: argparse.ArgumentParser) -> None:
    """``--target`` and ``--target-type``, from the target registry."""
    from camcore.targets import TARGET_TYPES

    p.add_argument("--target", type=class_value, metavar="CLASS",
                   help="the class to explain, as an index or a name from the model's metadata (classify: "
                        "default each image's top-1; detect: the best detection of this class; segment: default "
                        "the largest class) or the value's index (regress, default 0)")  # fmt: skip
    p.add_argument("--target-type", choices=list(TARGET_TYPES), default=None,
                   help="what to explain (default: class; raw and regression name their task): "
                        + "; ".join(f"{k}: {v.help}" for k, v in TARGET_TYPES.items()))  # fmt: skip


def add_preprocess_options(p: argparse.ArgumentParser) -> None:
    """``--size``, ``--mean``, ``--std``, ``--bgr``, ``--nhwc``/``--nchw``."""
    p.add_argument("--size", type=parse_size, metavar="HxW",
                   help="model input size (default: the model's; needed when it is dynamic)")  # fmt: skip
    default = "(default: the model's metadata, else ImageNet's)"
    p.add_argument("--mean", type=finite_float, nargs=3, metavar=("R", "G", "B"),
                   help=f"per-channel mean of [0, 1] pixels {default}")  # fmt: skip
    p.add_argument("--std", type=positive_float, nargs=3, metavar=("R", "G", "B"),
                   help=f"per-channel std of [0, 1] pixels {default}")  # fmt: skip
    p.add_argument("--bgr", action="store_true", help="the model expects BGR channel order (default: RGB)")
    layout = p.add_mutually_exclusive_group()
    layout.add_argument(
        "--nhwc", action="store_true", help="the model takes NHWC images (default: read from the graph)"
    )
    layout.add_argument(
        "--nchw", action="store_true", help="the model takes NCHW images (default: read from the graph)"
    )


def add_overlay_options(p: argparse.ArgumentParser) -> None:
    """``--colormap`` and ``--alpha``."""
    p.add_argument("--colormap", type=colormap_name, default="jet", metavar="NAME",
                   help="heat-map colours: an OpenCV colormap or mpl_* (default: jet)")  # fmt: skip
    p.add_argument("--alpha", type=unit_float, default=0.5, metavar="A",
                   help="weight of the heat map in the overlay, in [0, 1] (default: 0.5)")  # fmt: skip


def box(text: str) -> tuple[float, float, float, float]:
    """``x0,y0,x1,y1``: four finite numbers, x0 < x1 and y0 < y1 (input pixels)."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or not all(abs(v) < float("inf") for v in values):
        raise argparse.ArgumentTypeError(f"must be x0,y0,x1,y1 (four numbers, input pixels), not {text!r}")
    if not (values[2] > values[0] and values[3] > values[1]):
        raise argparse.ArgumentTypeError(f"needs x0 < x1 and y0 < y1, not {text!r}")
    return values[0], values[1], values[2], values[3]


def add_task_options(p: argparse.ArgumentParser, target: bool = False) -> None:
    """``--task``, ``--detection``, ``--box``, ``--region``, ``--score-threshold`` (and
    ``--target``/``--target-type`` with ``target``), from the task registry."""
    from camcore.tasks import TASKS

    if target:
        add_target_options(p)
    p.add_argument("--task", choices=list(TASKS), default=None,
                   help="what the model does (default: read from the explained output's shape): "
                        + "; ".join(f"{k}: {v.help}" for k, v in TASKS.items()))  # fmt: skip
    p.add_argument("--detection", type=count, metavar="K",
                   help="detect: explain the K-th detection, best first (default: the top-scoring one)")  # fmt: skip
    p.add_argument("--box", type=box, metavar="X0,Y0,X1,Y1",
                   help="detect: explain the detection with the highest IoU with this box (input pixels)")  # fmt: skip
    p.add_argument("--region", type=box, metavar="X0,Y0,X1,Y1",
                   help="segment: explain the class's pixels in this region only (input pixels)")  # fmt: skip
    p.add_argument("--score-threshold", type=unit_float, metavar="S",
                   help="detect: the score detections need to be listed and counted (default: 0.25)")  # fmt: skip
    from camcore.tasks.detect import LAYOUTS

    p.add_argument("--detection-layout", choices=list(LAYOUTS), default=None,
                   help="detect: the head's layout, when its shape leaves it open (default: read from the output "
                        "shapes and the model's class names): " + "; ".join(f"{k}: {v}" for k, v in
                                                                               LAYOUTS.items()))  # fmt: skip


def choose_task(args: argparse.Namespace, cam: Any, preprocess: Preprocess, rebuild: Callable[[str], Any]) -> Any:
    """The run's :class:`~camcore.tasks.TaskChoice` and the CAM that explains its output, from the
    task options of ``args`` (``--target`` may name a class of the model's metadata):
    :func:`camcore.tasks.registry.choose_task_for`, whose ``rebuild(output)`` makes a CAM on
    another output when the task explains one that ``--output`` did not name.

    Returns:
        (cam, choice)

    Raises:
        CamcoreError: a task or option that does not fit the model.
    """
    from camcore.preprocess import read_model_metadata
    from camcore.tasks import TaskOptions
    from camcore.tasks.registry import choose_task_for

    if isinstance(getattr(args, "target", None), str):  # a class name: its index in the model's metadata
        args.target = class_index(args.target, read_model_metadata(cam.engine.model, cam.engine.source).class_names)
    options = TaskOptions(getattr(args, "target", None), getattr(args, "target_type", None), args.detection,
                          args.box, args.region, args.score_threshold, args.detection_layout)  # fmt: skip
    return choose_task_for(cam, args.task, options, explicit_output=args.output is not None, input_hw=preprocess.size,
                           nhwc=preprocess.nhwc, rebuild=rebuild)  # fmt: skip


def add_top_k_option(p: argparse.ArgumentParser) -> None:
    """``--top-k``."""
    p.add_argument("--top-k", type=count, default=5, metavar="K",
                   help="predictions (classes, detections) per image in the summary (default: 5; 0: none)")  # fmt: skip


def progress(total: int | None, desc: str, unit: str) -> Any:
    """A tqdm progress bar on stderr, shown when stderr is a terminal. A terminal that reports no
    size (a fresh pseudo-terminal: 0 x 0, as under ``script``, CI runners or some IDEs) gets 80 x 24:
    given 0 rows, tqdm draws nothing at all."""
    from tqdm import tqdm

    ncols = nrows = None
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
        ncols, nrows = (80 if not size.columns else None), (24 if not size.lines else None)
    except (OSError, ValueError):  # not a terminal (tqdm then stays silent), or no real file descriptor
        pass
    return tqdm(total=total, desc=desc, unit=unit, disable=None, file=sys.stderr, ncols=ncols, nrows=nrows,
                smoothing=0.05)  # fmt: skip


def say(message: str) -> None:
    """A note for the user, on stderr (stdout stays for results)."""
    print(f"camcore: {message}", file=sys.stderr)


def preprocessing(args: argparse.Namespace, engine: Any, model_path: str | None) -> tuple[Preprocess, str]:
    """The :class:`~camcore.preprocess.Preprocess` the options ask for, completed from the model:
    its input size and layout (read from the graph, ``--nhwc``/``--nchw`` override), its
    metadata's mean, std and channel order (else ImageNet's), and a line saying what was chosen.

    Raises:
        CamcoreError: ``--size`` contradicts a fixed model input size.
    """
    from camcore.errors import CamcoreError
    from camcore.preprocess import IMAGENET_MEAN, IMAGENET_STD, model_input_size, read_model_metadata

    meta = read_model_metadata(engine.model, model_path)
    if args.nhwc or args.nchw:
        nhwc, layout_from = bool(args.nhwc), "--nhwc" if args.nhwc else "--nchw"
    elif meta.nhwc is not None:
        nhwc, layout_from = meta.nhwc, meta.source
    else:
        nhwc, layout_from = engine.input_layout == "NHWC", "the graph"
    fixed = model_input_size(engine, nhwc)
    size = args.size
    if size is not None and fixed is not None and tuple(size) != fixed:
        raise CamcoreError(f"--size {size[0]}x{size[1]} contradicts the model's input size {fixed[0]}x{fixed[1]}")
    size = size or fixed
    if args.mean is not None or args.std is not None:
        stats_from = "--mean/--std"
    elif meta.mean is not None:
        stats_from = meta.source
    else:
        stats_from = "ImageNet's defaults (pass --mean/--std if the model was trained otherwise)"
    mean = args.mean if args.mean is not None else (meta.mean or IMAGENET_MEAN)
    std = args.std if args.std is not None else (meta.std or IMAGENET_STD)
    bgr = bool(args.bgr) or bool(meta.bgr)
    pre = Preprocess(size, tuple(mean), tuple(std), bgr=bgr, nhwc=nhwc)
    shown = lambda v: "(" + ", ".join(f"{x:g}" for x in v) + ")"  # noqa: E731
    note = (f"preprocessing: mean {shown(mean)}, std {shown(std)} from {stats_from}; "
            f"{'NHWC' if nhwc else 'NCHW'} (from {layout_from}), {'BGR' if bgr else 'RGB'}, "
            f"{f'{size[0]}x{size[1]}' if size else 'each image at its own size'}")  # fmt: skip
    return pre, note
