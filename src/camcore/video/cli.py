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
from pathlib import Path
from typing import Any

import numpy as np

from camcore.arguments import say
from camcore.errors import CamcoreError

EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143
DEFAULT_FPS = 25.0


def add_video_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``video`` command to ``camcore``'s sub-parsers and return its parser.

    Example:
        >>> p = argparse.ArgumentParser(); sub = p.add_subparsers(dest="command")
        >>> _ = add_video_parser(sub)
        >>> p.parse_args(["video", "m.onnx", "in.mp4", "-o", "out.mp4"]).every
        1
    """
    from camcore.arguments import (
        add_model_options,
        add_overlay_options,
        add_preprocess_options,
        add_task_options,
        add_top_k_option,
        class_value,
        count,
        positive_float,
        positive_int,
        unit_float,
    )
    from camcore.video.io import DECODERS
    from camcore.video.pyav import CODECS

    v = subparsers.add_parser(
        "video",
        help="explain every frame of a video, image sequence, camera or stream",
        description="Explain every frame of a video file, an image sequence (a glob), a camera index or a stream "
        "URL; write an overlay video (or a folder of frames, when OUT has no video suffix) and OUT.json.",
    )
    v.add_argument("model", help="the .onnx model")
    v.add_argument("input", help="video file, image glob ('frames/*.png'), camera index (0) or stream URL")
    v.add_argument("-o", "--out", required=True, help="output video (.mp4, .avi, .mkv, .mov) or frame folder")
    add_model_options(v)
    tg = v.add_mutually_exclusive_group()
    tg.add_argument("--target", type=class_value, metavar="CLASS",
                    help="the class to explain, as an index or a name from the model's metadata (classify: "
                         "default each frame's top-1; detect: the best detection of this class; segment: default "
                         "the largest class) or the value's index (regress, default 0)")  # fmt: skip
    tg.add_argument(
        "--follow-class",
        type=int,
        metavar="CLASS",
        help="detection models: explain the top detection of CLASS, followed from frame to frame "
        "(raw head output per image (4 + classes, K) as in YOLOv8; see --follow-layout)",
    )
    v.add_argument("--follow-layout", choices=("channels_first", "boxes_first"), default="channels_first",
                   help="the detection head's layout: (4 + classes, K) channels_first (YOLOv8, default) or "
                        "(K, 4 + classes) boxes_first")  # fmt: skip
    v.add_argument("--objectness", action="store_true", help="the head has an objectness column (YOLOv5)")
    add_task_options(v)
    v.add_argument("--batch", type=positive_int, default=4, metavar="N",
                   help="frames per inference run, at most (default: 4)")  # fmt: skip
    v.add_argument("--every", type=positive_int, default=1, metavar="K",
                   help="explain every K-th frame, reuse the map between (default: 1)")  # fmt: skip
    v.add_argument("--smooth", type=unit_float, default=0.5, metavar="S",
                   help="EMA weight of past maps in [0, 1) (default: 0.5)")  # fmt: skip
    v.add_argument(
        "--normalize",
        choices=("running", "frame"),
        default="running",
        help="running: a slowly adapting range shared by frames (default); frame: per-frame min-max",
    )
    v.add_argument("--range", type=float, nargs=2, metavar=("LO", "HI"),
                   help="a fixed normalization range of the raw maps (instead of --normalize)")  # fmt: skip
    add_overlay_options(v)
    v.add_argument("--side-by-side", action="store_true", help="write the frame and the overlay side by side")
    add_preprocess_options(v)
    v.add_argument("--fps", type=positive_float, help="output frame rate (default: the input's, else 25)")
    v.add_argument("--codec", choices=list(CODECS),
                   help="video codec (default: h264 for .mp4/.mov/.mkv, vp9 for .webm; needs PyAV)")  # fmt: skip
    v.add_argument("--quality", default=None, metavar="Q",
                   help="high, medium (default) or low, or a constant-quality rate factor (lower: better)")  # fmt: skip
    v.add_argument("--decoder", choices=DECODERS, default="auto",
                   help="auto (PyAV for files and streams when installed, else OpenCV), pyav or opencv")  # fmt: skip
    v.add_argument("--reconnect", type=count, default=5, metavar="N",
                   help="live streams: reconnection attempts after a drop, with backoff (default: 5)")  # fmt: skip
    v.add_argument("--segment", type=positive_float, metavar="MINUTES",
                   help="write OUT_000.mp4, OUT_001.mp4, ... of this many minutes each (live sources)")  # fmt: skip
    v.add_argument("--fourcc", metavar="CODE",
                   help="write with OpenCV and this FourCC instead of PyAV (MJPG is the default for .avi)")  # fmt: skip
    v.add_argument("--max-frames", type=positive_int, metavar="N", help="stop after this many frames")
    add_top_k_option(v)
    v.add_argument("--workers", type=positive_int, metavar="N",
                   help="inference workers (default: the core count on CPU, 1 on GPU)")  # fmt: skip
    return v


def _record(result: Any, info: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"frame": info.index, "explained": info.explained}
    if info.missing is not None:  # the task found no target in it: the last map, or none
        rec["missing"] = info.missing
    if not info.explained:
        rec["map_from"] = info.source if info.source != info.index else None
    rec.update(info.record)
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
def _no_signals() -> Iterator[None]:
    """Ignore a second Ctrl-C or SIGTERM while the outputs are being finalised."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _limit(frames: Iterator[np.ndarray], n: int | None) -> Iterator[np.ndarray]:
    for i, frame in enumerate(frames):
        if n is not None and i >= n:
            return
        yield frame


def cmd_video(args: argparse.Namespace) -> int:
    """Run ``camcore video``; returns the exit code (0, or 130 after Ctrl-C, 143 after SIGTERM).
    The video module's warnings (a dropped stream, a resized frame, re-encoded audio) print as
    ``camcore: warning: ...`` and go into the summary.

    Raises:
        CamcoreError: bad input (the CLI prints it on one line and exits with 2).
    """
    with _warnings_to_stderr() as warnings:
        return _video(args, warnings)


def _video(args: argparse.Namespace, warnings: _Collect) -> int:
    from camcore.arguments import choose_task, preprocessing
    from camcore.cam import cam_class
    from camcore.files import output_file, output_folder
    from camcore.preprocess import read_model_metadata
    from camcore.runtime import select_providers
    from camcore.video.follow import FollowDetection
    from camcore.video.io import VIDEO_SUFFIXES, SummaryWriter, open_sink, open_source, summary_path
    from camcore.video.pipeline import VideoPipeline

    if args.smooth >= 1.0:
        raise CamcoreError(f"--smooth must be below 1, got {args.smooth}")
    if args.range is not None and not args.range[1] > args.range[0]:
        raise CamcoreError(f"--range needs LO < HI, got {args.range[0]} {args.range[1]}")
    inputs = [args.model] + ([] if "://" in args.input or args.input.isdigit() else [args.input])
    out_suffix = Path(args.out).suffix.lower()
    if out_suffix and out_suffix not in VIDEO_SUFFIXES and not args.fourcc and not args.out.endswith(("/", os.sep)) \
            and not Path(args.out).is_dir():  # fmt: skip
        output_file(args.out, inputs, "-o")  # an input is named as such first
        raise CamcoreError(
            f"-o {args.out!r}: camcore writes {', '.join(sorted(VIDEO_SUFFIXES))} videos, or frames into a folder "
            "(a path without a suffix, or ending in /)"
        )
    if out_suffix in VIDEO_SUFFIXES or (args.fourcc and out_suffix):
        output_file(args.out, inputs, "-o")
        output_file(summary_path(args.out), inputs, "-o (its .json)")
    else:
        output_folder(args.out, inputs, "-o")
    on_gpu = select_providers(args.providers).providers[0] != "CPUExecutionProvider"
    # on the CPU the inference workers keep every core busy: one decoder and one encoder thread
    # waste least (frame threads add CPU time and contention); on a GPU, FFmpeg's own choice
    io_threads = None if on_gpu else 1
    source = open_source(args.input, args.fps, args.decoder, args.reconnect, io_threads)  # before the model
    try:
        fps = source.fps or DEFAULT_FPS
        segment = None if args.segment is None else args.segment * 60.0
        sink = open_sink(args.out, fps, args.fourcc, codec=args.codec, quality=args.quality, source=source.info,
                         segment=segment, threads=io_threads)  # fmt: skip
        # (open_sink checks the codec and quality and writes nothing until the first frame)
        threads = args.threads if args.threads is not None else (None if on_gpu else 1)
        workers = args.workers or (1 if on_gpu or threads != 1 else (os.cpu_count() or 1))

        def build(output: str | None) -> Any:
            return cam_class(args.method)(args.model, args.layer, providers=args.providers, threads=threads,
                                          output=output)  # fmt: skip

        cam = build(args.output)
        preprocess, note = preprocessing(args, cam.engine, args.model)
        choice = None
        if args.follow_class is not None:
            taken = ("detection", "box", "region", "detection_layout")
            if args.task not in (None, "detect") or any(getattr(args, k) is not None for k in taken):
                raise CamcoreError("--follow-class picks its own detection: it takes no --task other than detect, "
                                   "--detection, --box, --region or --detection-layout (its layout is "
                                   "--follow-layout)")  # fmt: skip
            targets: Any = FollowDetection(args.follow_class, args.follow_layout, args.objectness)
        else:
            cam, choice = choose_task(args, cam, preprocess, build)
            targets = None  # the task chooses each frame's target from all its outputs
        pipe = VideoPipeline(
            cam,
            preprocess=preprocess,
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
            top_k=args.top_k,
            class_names=read_model_metadata(cam.engine.model, args.model).class_names,
            task=choice,
        )
        say(note)
        if source.fps is None:
            say(f"the input has no frame rate; writing {fps:g} fps (set --fps)")
        header = {
            "model": str(args.model),
            "input": args.input,
            "output": str(args.out),
            "method": args.method,
            "target_layers": cam.target_layers,
            **(choice.summary() if choice is not None else {"task": "detect", "task_source": "--follow-class"}),
            "target": args.target if args.follow_class is None else {"follow_class": args.follow_class},
            "input_size": list(preprocess.size) if preprocess.size else "frame size",
            "mean": list(preprocess.mean),
            "std": list(preprocess.std),
            "preprocessing": note,
            "fps": fps,
            "decoder": type(source).__name__,
            "writer": type(sink).__name__,
            "codec": getattr(sink, "codec", getattr(sink, "fourcc", None)),
            "frames_announced": source.count,
            "every": args.every,
            "smooth": args.smooth,
            "normalize": list(args.range) if args.range else args.normalize,
            "batch": args.batch,
            "workers": workers,
            "threads": threads,
        }
        total = source.count if args.max_frames is None else min(source.count or args.max_frames, args.max_frames)
        return _run(pipe, source, sink, SummaryWriter(summary_path(args.out), header), total, args, warnings)
    finally:
        source.close()


def _run(pipe: Any, source: Any, sink: Any, summary: Any, total: int | None, args: Any, warnings: _Collect) -> int:
    from camcore.arguments import progress
    from camcore.files import Terminated

    stopped = ""
    error: BaseException | None = None
    explained = resized = missing = 0
    t0 = time.perf_counter()
    bar = progress(total, "camcore video", "frame")
    with contextlib.closing(pipe.stream(_limit(source.frames(), args.max_frames))) as stream:
        try:
            for result, info in stream:
                sink.write(result.overlay, info.time)
                summary.add(_record(result, info))
                explained += info.explained
                missing += info.missing is not None
                resized += info.resized_from is not None
                bar.update()
        except KeyboardInterrupt as exc:
            stopped = "terminated" if isinstance(exc, Terminated) else "interrupted"
        except BaseException as exc:
            error = exc
        finally:
            with _no_signals():
                stream.close()
                cut_short = bool(stopped or error) or (args.max_frames is not None and sink.written >= args.max_frames)
                if hasattr(sink, "cut_short"):
                    sink.cut_short = cut_short  # the input's audio then ends with the last frame written
                sink.close()
                bar.close()
                seconds = time.perf_counter() - t0
                summary.close(
                    {
                        "frames": sink.written,
                        "explained": explained,
                        "missing": missing,
                        "resized": resized,
                        "interrupted": stopped or False,
                        "error": None if error is None else str(error),
                        "warnings": warnings.messages,
                        "seconds": round(seconds, 3),
                        "fps": round(sink.written / seconds, 2) if seconds > 0 else None,
                        "segments": [str(p) for p in getattr(sink, "paths", [])],
                        "reconnections": len(getattr(source, "gaps", [])),
                    }
                )
    if error is not None:
        raise error
    if missing:
        say(f"{missing} frame(s) had no target (\"missing\" in their summary records says why): each shows the "
            "last explained frame's map, or none before the first")  # fmt: skip
    rate = sink.written / seconds if seconds > 0 else 0.0
    state = f"{stopped}: " if stopped else ""
    print(f"camcore video: {state}wrote {sink.written} frame(s) to {args.out} ({rate:.1f} fps); summary {summary.path}")
    return {"": 0, "interrupted": EXIT_INTERRUPTED, "terminated": EXIT_TERMINATED}[stopped]
