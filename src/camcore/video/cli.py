"""``camcore video MODEL INPUT -o OUT.mp4``: explain every frame of a file, camera or stream.

Wiring into ``camcore.cli``::

    from camcore.video.cli import add_video_parser, cmd_video
    add_video_parser(sub)                  # in _parser()
    "video": cmd_video,                    # in main()'s handler table
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from camcore.errors import CamcoreError
from camcore.preprocess import IMAGENET_MEAN, IMAGENET_STD, parse_size

EXIT_INTERRUPTED = 130
DEFAULT_FPS = 25.0


def add_video_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``video`` command to ``camcore``'s sub-parsers and return its parser.

    Example:
        >>> p = argparse.ArgumentParser(); sub = p.add_subparsers(dest="command")
        >>> _ = add_video_parser(sub)
        >>> p.parse_args(["video", "m.onnx", "in.mp4", "-o", "out.mp4"]).every
        1
    """
    from camcore.methods import METHODS

    v = subparsers.add_parser(
        "video",
        help="explain every frame of a video, image sequence, camera or stream",
        description="Explain every frame of a video file, an image sequence (a glob), a camera index or a stream "
        "URL; write an overlay video (or a folder of frames, when OUT has no video suffix) and OUT.json.",
    )
    v.add_argument("model")
    v.add_argument("input", help="video file, image glob ('frames/*.png'), camera index (0) or stream URL")
    v.add_argument("-o", "--out", required=True, help="output video (.mp4, .avi, .mkv, .mov) or frame folder")
    v.add_argument("--method", choices=sorted(METHODS), default="gradcam")
    v.add_argument("--layer", action="append", help="target layer (repeatable; default: automatic)")
    v.add_argument("--output", help="differentiated model output (default: the first)")
    tg = v.add_mutually_exclusive_group()
    tg.add_argument("--target", type=int, help="class to explain (default: each frame's top-1 class)")
    tg.add_argument(
        "--follow-class",
        type=int,
        metavar="CLASS",
        help="detection models: explain the top detection of CLASS, followed from frame to frame "
        "(raw head output per image (4 + classes, K) as in YOLOv8; see --follow-layout)",
    )
    v.add_argument("--follow-layout", choices=("channels_first", "boxes_first"), default="channels_first")
    v.add_argument("--objectness", action="store_true", help="the head has an objectness column (YOLOv5)")
    v.add_argument("--batch", type=int, default=4, help="frames per inference run, at most (default: 4)")
    v.add_argument("--every", type=int, default=1, help="explain every K-th frame, reuse the map between")
    v.add_argument("--smooth", type=float, default=0.5, help="EMA weight of past maps in [0, 1) (default: 0.5)")
    v.add_argument(
        "--normalize",
        choices=("running", "frame"),
        default="running",
        help="running: a slowly adapting range shared by frames (default); frame: per-frame min-max",
    )
    v.add_argument("--range", type=float, nargs=2, metavar=("LO", "HI"), help="fixed normalization range of raw maps")
    v.add_argument("--colormap", default="jet")
    v.add_argument("--alpha", type=float, default=0.5)
    v.add_argument("--side-by-side", action="store_true", help="write the frame and the overlay side by side")
    v.add_argument("--size", type=parse_size, help="model input HxW (default: the model's; needed if dynamic)")
    v.add_argument("--mean", type=float, nargs=3, default=IMAGENET_MEAN, metavar=("R", "G", "B"))
    v.add_argument("--std", type=float, nargs=3, default=IMAGENET_STD, metavar=("R", "G", "B"))
    v.add_argument("--bgr", action="store_true", help="the model expects BGR channel order")
    v.add_argument("--nhwc", action="store_true", help="the model expects NHWC layout")
    v.add_argument("--fps", type=float, help="output frame rate (default: the input's, else 25)")
    v.add_argument("--fourcc", help="video codec FourCC (default: mp4v, MJPG for .avi)")
    v.add_argument("--max-frames", type=int, help="stop after this many frames")
    v.add_argument("--top-k", type=int, default=5, help="predictions per frame in the summary")
    v.add_argument("--providers", nargs="+", help="onnxruntime providers (default: CUDA if it works, else CPU)")
    v.add_argument("--threads", type=int, help="onnxruntime threads per worker (default: 1 on CPU)")
    v.add_argument("--workers", type=int, help="inference workers (default: the core count on CPU, 1 on GPU)")
    return v


def _cam_class(method_key: str) -> type:
    """The public CAM class of a method, else a BaseCAM subclass bound to it (as ``explain`` does)."""
    import camcore
    from camcore.cam import BaseCAM
    from camcore.methods import METHODS

    method = METHODS[method_key]
    public = getattr(camcore, method.name, None)
    if isinstance(public, type) and issubclass(public, BaseCAM):
        return public
    return type(method.name, (BaseCAM,), {"method_key": method.key})


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def _record(result: Any, info: Any, top_k: int) -> dict[str, Any]:
    rec: dict[str, Any] = {"frame": info.index, "explained": info.explained}
    if not info.explained:
        rec["map_from"] = info.source
    if info.target_class is not None:
        rec["explained_class"] = info.target_class
    if result.outputs and result.outputs[0].ndim == 1 and top_k > 0:
        row = result.outputs[0].astype(np.float64)
        probs = _softmax(row)
        top = np.argsort(-row, kind="stable")[:top_k]
        rec["top_k"] = [{"class": int(k), "logit": float(row[k]), "probability": float(probs[k])} for k in top]
    if info.detection is not None:
        rec["detection"] = info.detection
    if info.resized_from is not None:
        rec["resized_from"] = list(info.resized_from)
    return rec


class _Collect(logging.Handler):
    """Print the pipeline's warnings as ``camcore: warning: ...`` and keep them for the summary."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        self.messages.append(msg)
        from tqdm import tqdm

        tqdm.write(f"camcore: warning: {msg}", file=sys.stderr)


@contextlib.contextmanager
def _warnings_to_stderr() -> Iterator[_Collect]:
    logger = logging.getLogger("camcore.video")
    handler = _Collect()
    logger.addHandler(handler)
    old = logger.propagate
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.propagate = old


@contextlib.contextmanager
def _no_sigint() -> Iterator[None]:
    """Ignore a second Ctrl-C while the output is being finalised."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _limit(frames: Iterator[np.ndarray], n: int | None) -> Iterator[np.ndarray]:
    for i, frame in enumerate(frames):
        if n is not None and i >= n:
            return
        yield frame


def cmd_video(args: argparse.Namespace) -> int:
    """Run ``camcore video``; returns the exit code (0, or 130 after Ctrl-C).

    Raises:
        CamcoreError: bad input (the CLI prints it on one line and exits with 2).
    """
    from tqdm import tqdm

    from camcore.preprocess import Preprocess, model_input_size
    from camcore.runtime import select_providers
    from camcore.video.follow import FollowDetection
    from camcore.video.io import SummaryWriter, open_sink, open_source, summary_path
    from camcore.video.pipeline import VideoPipeline

    for name in ("batch", "every"):
        if getattr(args, name) < 1:
            raise CamcoreError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.max_frames is not None and args.max_frames < 1:
        raise CamcoreError(f"--max-frames must be >= 1, got {args.max_frames}")
    if not 0.0 <= args.alpha <= 1.0:
        raise CamcoreError(f"--alpha must be in [0, 1], got {args.alpha}")
    source = open_source(args.input, args.fps)  # fails fast, before the model is compiled
    try:
        on_gpu = select_providers(args.providers).providers[0] != "CPUExecutionProvider"
        threads = args.threads if args.threads is not None else (None if on_gpu else 1)
        workers = args.workers or (1 if on_gpu or threads != 1 else (os.cpu_count() or 1))
        cam = _cam_class(args.method)(args.model, args.layer, providers=args.providers, threads=threads,
                                      output=args.output)  # fmt: skip
        size = args.size or model_input_size(cam, args.nhwc)
        if args.follow_class is not None:
            targets: Any = FollowDetection(args.follow_class, args.follow_layout, args.objectness)
        else:
            targets = args.target
        pipe = VideoPipeline(
            cam,
            preprocess=Preprocess(size, args.mean, args.std, bgr=args.bgr, nhwc=args.nhwc),
            targets=targets,
            batch=args.batch,
            every=args.every,
            smooth=args.smooth,
            normalize=tuple(args.range) if args.range else args.normalize,
            colormap=args.colormap,
            alpha=args.alpha,
            channels="bgr",
            side_by_side=args.side_by_side,
            workers=workers,
        )
        fps = source.fps or DEFAULT_FPS
        if source.fps is None:
            print(f"camcore: the input has no frame rate; writing {fps:g} fps (set --fps)", file=sys.stderr)
        sink = open_sink(args.out, fps, args.fourcc)
        header = {
            "model": str(args.model),
            "input": args.input,
            "output": str(args.out),
            "method": args.method,
            "target_layers": cam.target_layers,
            "target": args.target if args.follow_class is None else {"follow_class": args.follow_class},
            "input_size": list(size) if size else "frame size",
            "mean": list(args.mean),
            "std": list(args.std),
            "fps": fps,
            "frames_announced": source.count,
            "every": args.every,
            "smooth": args.smooth,
            "normalize": list(args.range) if args.range else args.normalize,
            "batch": args.batch,
            "workers": workers,
            "threads": threads,
        }
        total = source.count if args.max_frames is None else min(source.count or args.max_frames, args.max_frames)
        return _run(pipe, source, sink, SummaryWriter(summary_path(args.out), header), total, args, tqdm)
    finally:
        source.close()


def _run(pipe: Any, source: Any, sink: Any, summary: Any, total: int | None, args: Any, tqdm: Any) -> int:
    interrupted = False
    error: BaseException | None = None
    explained = resized = 0
    t0 = time.perf_counter()
    bar = tqdm(total=total, unit="frame", desc="camcore video", disable=None, smoothing=0.05)
    with (
        _warnings_to_stderr() as warnings,
        contextlib.closing(pipe.stream(_limit(source.frames(), args.max_frames))) as stream,
    ):
        try:
            for result, info in stream:
                sink.write(result.overlay)
                summary.add(_record(result, info, args.top_k))
                explained += info.explained
                resized += info.resized_from is not None
                bar.update()
        except KeyboardInterrupt:
            interrupted = True
        except BaseException as exc:
            error = exc
        finally:
            with _no_sigint():
                stream.close()
                sink.close()
                bar.close()
                seconds = time.perf_counter() - t0
                summary.close(
                    {
                        "frames": sink.written,
                        "explained": explained,
                        "resized": resized,
                        "interrupted": interrupted,
                        "error": None if error is None else str(error),
                        "warnings": warnings.messages,
                        "seconds": round(seconds, 3),
                        "fps": round(sink.written / seconds, 2) if seconds > 0 else None,
                    }
                )
    if error is not None:
        raise error
    rate = sink.written / seconds if seconds > 0 else 0.0
    state = "interrupted: " if interrupted else ""
    print(f"camcore video: {state}wrote {sink.written} frame(s) to {args.out} ({rate:.1f} fps); summary {summary.path}")
    return EXIT_INTERRUPTED if interrupted else 0
