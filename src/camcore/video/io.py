"""Video input and output: sources OpenCV can open, video or frame-folder sinks, the JSON summary.

Errors that come from the user's input (a missing or undecodable file, a codec the OpenCV build
lacks, an unwritable output) are :class:`~camcore.errors.CamcoreError` with one-line messages.
Sinks are context managers: leaving them, by an error or Ctrl-C, finalises the file, so the
frames written so far stay playable. The video and the JSON summary are written under temporary
names and renamed into place when closed, so a killed run leaves the previous pair as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import cv2
import numpy as np

from camcore.errors import CamcoreError
from camcore.files import AtomicFile, image_files
from camcore.video.pyav import AvSink, AvSource, StreamInfo, have_pyav
from camcore.video.timed import TimedFrame

log = logging.getLogger("camcore.video")

#: Output suffixes written as a video file, with the OpenCV FourCC used without PyAV; anything
#: else is a folder of frames. With PyAV (the default) .mp4/.mov/.mkv get H.264 and .webm VP9.
VIDEO_SUFFIXES: dict[str, str] = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG",
                                  ".webm": "VP90"}  # fmt: skip
#: the decoders ``open_source`` takes: ``auto`` is PyAV for files and streams when it is installed
DECODERS = ("auto", "pyav", "opencv")


#: Consecutive failed reads tolerated on a live source (camera, URL) before it counts as dropped.
LIVE_RETRIES = 5


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence OpenCV's and FFmpeg's own stderr lines while opening a file (we raise our own)."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (embedded interpreters)
        saved = -1
    try:
        if saved >= 0:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        yield
    finally:
        if saved >= 0:
            os.dup2(saved, 2)
            os.close(saved)
        cv2.utils.logging.setLogLevel(level)


def read_frames(cap: cv2.VideoCapture, *, live: bool = False, name: str = "input") -> Iterator[np.ndarray]:
    """Yield the frames of an open ``cv2.VideoCapture`` until it ends; release it at the end.

    ``live`` sources (cameras, streams) get :data:`LIVE_RETRIES` retries of a failed read before
    the stream counts as dropped; a drop is logged, and the frames so far stand.

    Example:
        >>> for frame in read_frames(cv2.VideoCapture("clip.mp4")):
        ...     print(frame.shape)
    """
    failures = 0
    count = 0
    try:
        while True:
            ok, frame = cap.read()
            if ok and frame is not None:
                failures = 0
                count += 1
                yield frame
                continue
            if live and failures < LIVE_RETRIES:
                failures += 1
                time.sleep(0.05 * failures)
                continue
            if live:
                log.warning("%s stopped delivering frames after %d frame(s) (stream dropped or ended)", name, count)
            return
    finally:
        cap.release()


class FrameSource:
    """An opened input: a video file, an image-sequence glob, a camera index or a stream URL.

    Attributes:
        fps: frames per second from the container (``None`` when unknown: cameras, globs).
        count: frame count when known, else ``None``.
        live: a camera or network stream (reads are retried, a drop is not an error).

    Example:
        >>> src = open_source("clip.mp4")
        >>> src.fps, src.count
        (25.0, 40)
        >>> frames = src.frames()     # a generator of BGR uint8 frames
    """

    def __init__(self, spec: str, description: str, fps: float | None, count: int | None, live: bool) -> None:
        self.spec, self.description, self.fps, self.count, self.live = spec, description, fps, count, live
        self._cap: cv2.VideoCapture | None = None
        self._files: list[str] | None = None
        self.delivered = 0
        #: live sources: reopening attempts after a drop, and the gaps (seconds) they bridged
        self.retries = 5
        self.gaps: list[float] = []
        #: what an output takes over: the frame rate and, for a file PyAV can read, its audio
        self.info = StreamInfo(fps=fps)

    def frames(self) -> Iterator[TimedFrame]:
        """The frames, BGR uint8, with the time each is shown at; counts them in ``delivered``."""
        if self._files is not None:
            inner: Iterator[np.ndarray] = self._read_files(self._files)
        elif self.live:
            inner = self._read_live()
        else:
            assert self._cap is not None
            inner = read_frames(self._cap, name=self.description)
        cap = self._cap
        for frame in inner:
            shown_at = None
            if cap is not None and not self.live:
                msec = cap.get(cv2.CAP_PROP_POS_MSEC)
                shown_at = msec / 1000.0 if msec == msec and msec >= 0 else None
            elif self.fps:
                shown_at = self.delivered / self.fps
            self.delivered += 1
            yield TimedFrame(frame, shown_at)
        if self.count is not None and not self.live and self.delivered < self.count:
            log.warning(
                "%s ended after %d of the %d frames its header announces (truncated file or decode error)",
                self.description, self.delivered, self.count,
            )  # fmt: skip

    def _read_live(self) -> Iterator[np.ndarray]:
        """A camera or stream through OpenCV: after a drop it is reopened after 0.5, 1, 2, ... s, at
        most ``retries`` times in a row; each gap is logged."""
        tries = 0  # in a row: a reopened source that delivers frames starts the count again
        while True:
            assert self._cap is not None
            before = self.delivered
            yield from read_frames(self._cap, live=True, name=self.description)
            if self.delivered > before:
                tries = 0
            start = time.monotonic()
            while tries < self.retries:
                time.sleep(0.5 * 2**tries)
                tries += 1
                with _quiet_stderr():
                    cap = cv2.VideoCapture(int(self.spec) if self.spec.isdigit() else self.spec)
                if cap.isOpened():
                    self._cap = cap
                    gap = time.monotonic() - start
                    self.gaps.append(gap)
                    log.warning("%s reopened after %.1f s (attempt %d)", self.description, gap, tries)
                    break
                cap.release()
            else:
                log.warning("%s: gave up after %d reconnection attempt(s)", self.description, tries)
                return

    @staticmethod
    def _read_files(files: list[str]) -> Iterator[np.ndarray]:
        for path in files:
            img = cv2.imread(path, cv2.IMREAD_COLOR)
            if img is None:
                log.warning("skipped %s: not an image OpenCV can read", path)
                continue
            yield img

    def close(self) -> None:
        """Release the capture (idempotent)."""
        if self._cap is not None:
            self._cap.release()


def open_source(
    spec: str, fps: float | None = None, decoder: str = "auto", retries: int = 5, threads: int | None = None
) -> FrameSource | AvSource:
    """Open ``spec``: a digit string is a camera index, ``scheme://`` a stream URL, a folder or a
    pattern with ``*``, ``?`` or ``[`` a sorted image sequence, anything else a file (or an OpenCV
    ``%04d`` sequence pattern). ``fps`` overrides (or supplies) the frame rate.

    Files and streams are decoded by PyAV (FFmpeg's threaded decoding, the frames' timestamps and
    display rotation, reconnection of dropped streams up to ``retries`` times) when it is
    installed, else by OpenCV; ``decoder`` ("auto", "pyav", "opencv") chooses. Cameras and image
    sequences go through OpenCV. ``threads``: the decoder's threads (None: FFmpeg's choice; 1 is
    the most efficient when inference already keeps every core busy).

    Raises:
        CamcoreError: the file does not exist, cannot be opened, or has no video.
    """
    if fps is not None and not (fps > 0 and math.isfinite(fps)):
        raise CamcoreError(f"--fps must be a positive number, got {fps}")
    if decoder not in DECODERS:
        raise CamcoreError(f"decoder must be one of {', '.join(DECODERS)}, not {decoder!r}")
    is_folder = "://" not in spec and Path(spec).is_dir()
    if is_folder or (any(c in spec for c in "*?[") and "://" not in spec):
        files = image_files(spec) if is_folder else sorted(glob.glob(spec))
        if not files:
            raise CamcoreError(f"no files match {spec!r}")
        what = "in folder" if is_folder else "matching"
        src = FrameSource(spec, f"{len(files)} images {what} {spec!r}", fps, len(files), live=False)
        src._files = files
        return src
    live = spec.isdigit() or "://" in spec
    if not live and "%" not in spec and not Path(spec).is_file():
        raise CamcoreError(f"input {spec!r} does not exist")
    if decoder == "pyav" and not have_pyav():
        raise CamcoreError("--decoder pyav needs PyAV: pip install av")
    if not spec.isdigit() and "%" not in spec and decoder != "opencv" and have_pyav():
        return AvSource(spec, fps, live=live, retries=retries, threads=threads)
    params = [] if threads is None else [cv2.CAP_PROP_N_THREADS, threads]
    with _quiet_stderr():
        cap = cv2.VideoCapture(int(spec) if spec.isdigit() else spec, cv2.CAP_ANY, params)
        opened = cap.isOpened()
    if not opened:
        what = "camera" if spec.isdigit() else "stream" if live else "video file"
        raise CamcoreError(f"cannot open {what} {spec!r}: OpenCV (FFmpeg) cannot read it")
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    native = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    if not (native > 0 and math.isfinite(native)) or native > 1000:
        native = 0.0
    src = FrameSource(spec, repr(spec), fps or (native or None), count if count > 0 and not live else None, live)
    src._cap, src.retries = cap, retries
    if not live and have_pyav():  # the audio of the file can still be copied
        src.info = AvSource.probe(spec, src.fps)
    return src


class VideoSink:
    """Write frames to a video file (opened at the first frame, which fixes the size).

    Example:
        >>> with VideoSink("out.mp4", fps=25) as sink:
        ...     sink.write(frame)
    """

    def __init__(self, path: str | Path, fps: float, fourcc: str | None = None) -> None:
        self.path = Path(path)
        self.fps = float(fps)
        self.fourcc = fourcc or VIDEO_SUFFIXES.get(self.path.suffix.lower(), "mp4v")
        if len(self.fourcc) != 4:
            raise CamcoreError(f"a FourCC code has 4 characters, got {self.fourcc!r}")
        self._writer: cv2.VideoWriter | None = None
        self._file: AtomicFile | None = None
        self.size: tuple[int, int] | None = None
        self.written = 0

    def _open(self, width: int, height: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = AtomicFile(self.path)
        with _quiet_stderr():
            writer = cv2.VideoWriter(str(self._file.temporary), cv2.VideoWriter.fourcc(*self.fourcc), self.fps,
                                     (width, height))  # fmt: skip
            ok = writer.isOpened()
        if not ok:
            writer.release()
            self._file.discard()
            hint = "mp4v for .mp4, MJPG for .avi" if self.fourcc != "mp4v" else "an .avi output (MJPG)"
            raise CamcoreError(
                f"cannot write {str(self.path)!r} with codec {self.fourcc!r} ({width}x{height} at {self.fps:g} fps): "
                f"this OpenCV build lacks the codec or the folder is not writable; try {hint}"
            )
        self._writer, self.size = writer, (width, height)

    def write(self, frame: np.ndarray, time: float | None = None) -> None:
        """Append one BGR uint8 frame (OpenCV writes a constant frame rate: ``time`` is not used)."""
        if self._writer is None:
            self._open(frame.shape[1], frame.shape[0])
        assert self._writer is not None
        self._writer.write(frame)
        self.written += 1

    def close(self) -> None:
        """Finalise the file (idempotent): the container index is written, the file plays, and
        it replaces ``path``."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._file is not None:
            self._file.commit()

    def __enter__(self) -> VideoSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FolderSink:
    """Write frames as numbered images ``frame_000000.png`` into a folder."""

    def __init__(self, folder: str | Path, ext: str = ".png") -> None:
        self.path = Path(folder)
        self.ext = ext if ext.startswith(".") else "." + ext
        self.written = 0
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CamcoreError(f"cannot create output folder {str(self.path)!r}: {exc.strerror}") from None

    def write(self, frame: np.ndarray, time: float | None = None) -> None:
        """Write the next frame (``time`` is not used)."""
        target = self.path / f"frame_{self.written:06d}{self.ext}"
        if not cv2.imwrite(str(target), frame):
            raise CamcoreError(f"cannot write {str(target)!r}")
        self.written += 1

    def close(self) -> None:
        """Nothing to finalise."""

    def __enter__(self) -> FolderSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_sink(
    path: str | Path,
    fps: float,
    fourcc: str | None = None,
    *,
    codec: str | None = None,
    quality: str | int | None = None,
    source: StreamInfo | None = None,
    segment: float | None = None,
    threads: int | None = None,
) -> Sink:
    """The sink for ``path``: a folder of frames when it has no video suffix; OpenCV's writer for
    .avi or an explicit ``fourcc``; else PyAV (:class:`~camcore.video.pyav.AvSink`: H.264 in .mp4,
    .mov, .mkv, VP9 in .webm, ``codec`` and ``quality`` to choose, the ``source``'s audio kept),
    in files of ``segment`` seconds each when given (``threads``: the encoder's). Without PyAV,
    OpenCV writes MPEG-4 Part 2 (``mp4v``), which browsers do not play, and a warning says so.

    Raises:
        CamcoreError: a codec or quality the output cannot take.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in VIDEO_SUFFIXES and not (fourcc and p.suffix):
        return FolderSink(p)
    if fourcc or suffix == ".avi":
        if codec or segment:
            raise CamcoreError("--codec and --segment need PyAV outputs (.mp4, .mov, .mkv, .webm), not --fourcc/.avi")
        return VideoSink(p, fps, fourcc)
    if not have_pyav():
        if codec or segment:
            raise CamcoreError("--codec and --segment need PyAV: pip install av")
        log.warning("PyAV is not installed: writing %s with OpenCV (%s), which browsers do not play; pip install av "
                    "for H.264", p.name, VIDEO_SUFFIXES[suffix])  # fmt: skip
        return VideoSink(p, fps)
    if segment is not None:
        return SegmentedSink(p, fps, segment, codec=codec, quality=quality, source=source, threads=threads)
    return AvSink(p, fps, codec, quality, source=source, threads=threads)


class SegmentedSink:
    """A long-running output cut into files of ``seconds`` each: ``OUT_000.mp4``, ``OUT_001.mp4``...

    Each segment is finished (playable, with its share of the input's audio) when the next one
    starts; the frame times restart at 0 in every file.
    """

    def __init__(self, path: Path, fps: float, seconds: float, *, codec: str | None, quality: str | int | None,
                 source: StreamInfo | None, threads: int | None = None) -> None:  # fmt: skip
        if not (seconds > 0 and math.isfinite(seconds)):
            raise CamcoreError(f"a segment lasts more than 0 s, got {seconds}")
        AvSink(path, fps, codec, quality)  # checks the codec and quality now, before any frame
        self.path, self.fps, self.seconds = path, float(fps), float(seconds)
        self.codec, self.quality, self.source, self.threads = codec, quality, source, threads
        self.paths: list[Path] = []
        self.written = 0
        self._sink: AvSink | None = None
        self._first: float | None = None
        self._index = -1
        self._start = 0.0

    def write(self, frame: np.ndarray, time: float | None = None) -> None:
        """Append one BGR frame shown at ``time`` seconds (default: its index / fps)."""
        t = self.written / self.fps if time is None else float(time)
        if self._first is None:
            self._first = t
        index = int((t - self._first) // self.seconds)
        if self._sink is None or index > self._index:
            self._next(index)
        assert self._sink is not None
        self._sink.write(frame, t - self._start)
        self.written += 1

    def _next(self, index: int) -> None:
        if self._sink is not None:  # the segment ends: its audio with its last frame
            self._sink.close()
            self._sink = None
        assert self._first is not None
        self._index, self._start = index, self._first + index * self.seconds
        target = self.path.with_name(f"{self.path.stem}_{len(self.paths):03d}{self.path.suffix}")
        self.paths.append(target)
        source = None
        if self.source is not None:
            source = dataclasses.replace(self.source, audio_offset=self._start)
        self._sink = AvSink(target, self.fps, self.codec, self.quality, source=source, threads=self.threads)
        self._sink.cut_short = True

    def close(self) -> None:
        """Finish the current segment (idempotent)."""
        if self._sink is not None:
            self._sink.cut_short = self.cut_short
            self._sink.close()
            self._sink = None

    #: the run stopped before the input ended (the last segment's audio ends with its last frame)
    cut_short = False


Sink = VideoSink | FolderSink | AvSink | SegmentedSink


def summary_path(output: str | Path) -> Path:
    """Where the JSON summary goes: ``OUT.json`` beside a video, ``OUT/summary.json`` in a folder."""
    p = Path(output)
    return p.with_suffix(".json") if p.suffix.lower() in VIDEO_SUFFIXES else p / "summary.json"


class SummaryWriter:
    """A JSON summary written as the frames go, so memory stays flat on long videos.

    The file is ``{header..., "frames": [one record per frame], "result": {...}}``; :meth:`close`
    writes the end, also after an error or Ctrl-C, and moves the file onto ``path``.
    """

    def __init__(self, path: str | Path, header: dict[str, Any]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = AtomicFile(self.path)
        self._f: IO[str] | None = self._file.temporary.open("w")
        self._f.write("{\n")
        for key, value in header.items():
            self._f.write(f"  {json.dumps(key)}: {json.dumps(value)},\n")
        self._f.write('  "frames": [')
        self.count = 0

    def add(self, record: dict[str, Any]) -> None:
        """Append one frame's record."""
        assert self._f is not None
        self._f.write(("\n    " if self.count == 0 else ",\n    ") + json.dumps(record))
        self.count += 1

    def close(self, result: dict[str, Any]) -> None:
        """Write ``result`` and the closing brackets (idempotent)."""
        if self._f is None:
            return
        self._f.write(("\n  " if self.count else "") + "],\n")
        self._f.write(f'  "result": {json.dumps(result)}\n}}\n')
        self._f.close()
        self._f = None
        self._file.commit()

    def __enter__(self) -> SummaryWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close({"error": repr(exc)} if exc is not None else {})
