"""Video through PyAV (FFmpeg): output that plays everywhere, the input's audio and metadata kept,
threaded decoding, and live streams that reconnect.

Output (:class:`AvSink`): H.264 in .mp4/.mov/.mkv (``yuv420p``, ``+faststart``), VP9 in .webm, AV1
on request (:data:`CODECS`), with a constant-quality rate factor (``quality``). During the run the
video goes to ``OUT.partial.SUFFIX``, written so that it plays even if the process is killed
(fragmented MP4; Matroska/WebM are playable as they grow). When the sink closes, the video is
remuxed (no re-encoding) into the final file together with the input's audio track, copied packet
for packet, and the partial file is removed: a finished or interrupted run leaves ``OUT``, a killed
one ``OUT.partial.SUFFIX``, and the previous ``OUT`` stays as it was until the new one is complete.

Frames keep their input timestamps (variable frame rates included): each frame written carries the
time of the input frame it shows. Colour metadata (primaries, transfer, matrix, range) carry over.
A rotated input (phone videos) is decoded upright, so the model sees what a viewer sees, and the
explained video is written upright: it displays as the input does without a rotation flag.

Input (:class:`AvSource`): files with FFmpeg's threaded decoding, and live sources (RTSP, HTTP,
TCP, ...) that reconnect with backoff after a drop, a bounded number of times, logging each gap.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from camcore.errors import CamcoreError
from camcore.video.timed import TimedFrame

log = logging.getLogger("camcore.video")

__all__ = ["CODECS", "AvSink", "AvSource", "Codec", "have_pyav", "pick_codec"]


def have_pyav() -> bool:
    """Whether PyAV (the ``av`` package) imports here."""
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class Codec:
    """An encoder: FFmpeg's name, the containers it goes in, its options, and the constant-quality
    rate factor of each ``quality`` word (``crf``; lower is better and bigger)."""

    encoder: str
    suffixes: tuple[str, ...]
    options: dict[str, str] = field(default_factory=dict)
    quality: dict[str, int] = field(default_factory=dict)


#: the codecs ``--codec`` takes; the first whose suffixes hold the output's is the default
CODECS: dict[str, Codec] = {
    # ultrafast: on explained 720p frames 3.5x faster than veryfast (9.7 against 34 ms a frame on one
    # core) at the same PSNR (40 dB at rate factor 23) for files 1.5x bigger; no B-frames or CABAC,
    # so it also plays on the oldest decoders
    "h264": Codec("libx264", (".mp4", ".mov", ".mkv"), {"preset": "ultrafast"}, {"high": 18, "medium": 23, "low": 28}),
    "vp9": Codec(
        "libvpx-vp9",
        (".webm", ".mkv"),
        {"deadline": "realtime", "cpu-used": "8", "row-mt": "1", "b": "0"},
        {"high": 24, "medium": 32, "low": 40},
    ),
    "av1": Codec("libsvtav1", (".webm", ".mkv", ".mp4"), {"preset": "10"}, {"high": 28, "medium": 35, "low": 45}),
}


def pick_codec(path: str | Path, codec: str | None) -> str:
    """The codec for ``path``: ``codec`` (checked against the container) or the suffix's default.

    Raises:
        CamcoreError: an unknown codec, or one the container cannot hold.
    """
    suffix = Path(path).suffix.lower()
    if codec is None:
        for name, spec in CODECS.items():
            if suffix in spec.suffixes:
                return name
        raise CamcoreError(f"no codec writes {suffix!r} files; use .mp4 (H.264), .webm (VP9) or .mkv")
    if codec not in CODECS:
        raise CamcoreError(f"unknown codec {codec!r}; choose from {', '.join(CODECS)}")
    if suffix not in CODECS[codec].suffixes:
        raise CamcoreError(f"{codec} does not go in {suffix!r} files; use {' or '.join(CODECS[codec].suffixes)}")
    return codec


def rate_factor(codec: str, quality: str | int | None) -> int:
    """The ``crf`` of ``quality``: a word (high, medium, low; default medium) or a number."""
    levels = CODECS[codec].quality
    if quality is None:
        return levels["medium"]
    if isinstance(quality, str) and quality in levels:
        return levels[quality]
    try:
        value = int(quality)
    except (TypeError, ValueError):
        raise CamcoreError(f"quality must be high, medium, low or a rate factor (0..63), not {quality!r}") from None
    if not 0 <= value <= 63:
        raise CamcoreError(f"a rate factor is 0..63 (lower is better), got {value}")
    return value


def _quiet_encoder_logs() -> None:
    """SVT-AV1 prints its banner to stderr unless told otherwise; FFmpeg's own log stays at errors."""
    os.environ.setdefault("SVT_LOG", "1")
    import av

    av.logging.set_level(av.logging.ERROR)


_REAL_TIME = {getattr(os, name) for name in ("SCHED_FIFO", "SCHED_RR") if hasattr(os, name)}


def _thread_policies() -> dict[int, int]:
    """The scheduling policy of each thread of this process (Linux; elsewhere empty)."""
    policies = {}
    with contextlib.suppress(OSError):
        for tid in map(int, os.listdir("/proc/self/task")):
            with contextlib.suppress(OSError):
                policies[tid] = os.sched_getscheduler(tid)
    return policies


@contextlib.contextmanager
def ordinary_scheduling() -> Iterator[None]:
    """Threads that the block turns real-time go back to the ordinary policy.

    SVT-AV1, run as root, makes the thread that starts it and its own 40-odd workers SCHED_FIFO at
    priority 99. Left so, the caller's thread, every thread and process it starts later (inference
    threads included) and the encoder itself can starve the rest of the machine: a child process
    that spins its threads shuts its parent out of both cores for as long as it runs. Non-root
    users and other platforms are unaffected (the change is refused or absent)."""
    if not hasattr(os, "sched_setscheduler"):
        yield
        return
    before = _thread_policies()
    try:
        yield
    finally:
        for tid, policy in _thread_policies().items():
            if policy in _REAL_TIME and before.get(tid) not in _REAL_TIME:
                with contextlib.suppress(OSError):
                    os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """``image`` turned so that it displays upright: a frame whose display rotation is ``rotation``
    degrees (counter-clockwise, as FFmpeg's display matrix) is rotated by it."""
    turns = (round(rotation / 90.0) % 4) if rotation else 0
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


@dataclass
class StreamInfo:
    """What an output takes over from its input: frame rate, colour, and the file whose audio is
    copied (from ``audio_offset`` seconds on, for the segments of a long output)."""

    fps: float | None = None
    path: str | None = None
    has_audio: bool = False
    colour: dict[str, Any] = field(default_factory=dict)
    audio_offset: float = 0.0


class AvSource:
    """Frames of a file or a live stream, decoded by FFmpeg with frame threads.

    ``frames()`` yields upright BGR arrays with their timestamps (:class:`~camcore.video.io.TimedFrame`;
    a live source's restart after a drop resets its clock, so live frames are timed by count), and
    ``av_frames()`` the decoded ``av.VideoFrame`` objects themselves. A live source (a URL) that drops is reopened after
    0.5, 1, 2, ... s (at most ``retries`` times in a row); each gap is logged, and the frames
    already delivered stand.

    Example:
        >>> src = AvSource("clip.mp4"); src.fps, src.count
        (25.0, 40)
    """

    def __init__(self, spec: str, fps: float | None = None, *, live: bool | None = None, retries: int = 5,
                 open_timeout: float = 10.0, threads: int | None = None) -> None:  # fmt: skip
        import av

        self.spec = spec
        self.threads = threads
        self.live = ("://" in spec) if live is None else live
        self.retries = retries
        self.open_timeout = open_timeout
        self.delivered = 0
        self.gaps: list[float] = []
        self.description = repr(spec)
        self._container = self._open()
        video = self._video_stream(self._container)
        rate = video.average_rate or video.guessed_rate
        native = float(rate) if rate else None
        self.fps = fps or (native if native and 0 < native <= 1000 else None)
        self.count = None if self.live or not video.frames else int(video.frames)
        cc = video.codec_context
        self.info = StreamInfo(
            fps=self.fps,
            path=None if self.live else spec,
            has_audio=bool(self._container.streams.audio) and not self.live,
            colour={k: getattr(cc, k, None) for k in ("color_primaries", "color_trc", "colorspace", "color_range")},
        )
        del av

    @staticmethod
    def probe(path: str, fps: float | None) -> StreamInfo:
        """The :class:`StreamInfo` of a file another decoder reads (its audio and colour)."""
        import av

        try:
            with av.open(path) as container:
                video = container.streams.video[0] if container.streams.video else None
                cc = video.codec_context if video is not None else None
                colour = {k: getattr(cc, k, None) for k in ("color_primaries", "color_trc", "colorspace",
                                                            "color_range")} if cc is not None else {}  # fmt: skip
                return StreamInfo(fps, path, bool(container.streams.audio), colour)
        except (av.error.FFmpegError, OSError):
            return StreamInfo(fps)

    def _open(self) -> Any:
        import av

        options = {"rw_timeout": str(int(self.open_timeout * 1e6))} if self.live else {}
        try:
            container = av.open(self.spec, "r", options=options, timeout=self.open_timeout if self.live else None)
        except (av.error.FFmpegError, OSError) as exc:
            what = "stream" if self.live else "video file"
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CamcoreError(f"cannot open {what} {self.spec!r}: {reason}") from None
        return container

    def _video_stream(self, container: Any) -> Any:
        if not container.streams.video:
            container.close()
            raise CamcoreError(f"{self.spec!r} has no video stream")
        stream = container.streams.video[0]
        if self.threads is not None:
            stream.codec_context.thread_count = self.threads
        stream.thread_type = "AUTO" if self.threads != 1 else "SLICE"  # frame and slice threads
        return stream

    def frames(self) -> Iterator[TimedFrame]:
        """The frames as upright BGR arrays with the time each is shown at (a live source: by count)."""
        for frame in self.av_frames():
            image = upright(frame.to_ndarray(format="bgr24"), frame.rotation or 0)
            shown_at = frame.time if not self.live else (self.delivered - 1) / (self.fps or 25.0)
            yield TimedFrame(image, shown_at)

    def av_frames(self) -> Iterator[Any]:
        """The decoded frames (``av.VideoFrame``), in order; a live source reconnects."""
        import av

        tries = 0
        while True:
            container = self._container
            try:
                stream = container.streams.video[0]
                for frame in container.decode(stream):
                    tries = 0
                    self.delivered += 1
                    yield frame
                if not self.live:
                    if self.count is not None and self.delivered < self.count:
                        log.warning("%s ended after %d of the %d frames its header announces (truncated file or "
                                    "decode error)", self.description, self.delivered, self.count)  # fmt: skip
                    return
                log.warning("%s ended after %d frame(s)", self.description, self.delivered)
            except (av.error.FFmpegError, OSError) as exc:
                if not self.live:
                    log.warning("%s: decoding stopped after %d frame(s) (%s)", self.description, self.delivered,
                                str(exc).splitlines()[0] if str(exc) else type(exc).__name__)  # fmt: skip
                    return
                log.warning("%s dropped after %d frame(s) (%s)", self.description, self.delivered,
                            str(exc).splitlines()[0] if str(exc) else type(exc).__name__)  # fmt: skip
            with contextlib.suppress(Exception):
                container.close()
            if tries >= self.retries:
                log.warning("%s: gave up after %d reconnection attempt(s)", self.description, tries)
                return
            start = time.monotonic()
            while tries < self.retries:
                time.sleep(0.5 * 2**tries)
                tries += 1
                try:
                    self._container = self._open()
                    self._video_stream(self._container)
                except CamcoreError:
                    continue
                gap = time.monotonic() - start
                self.gaps.append(gap)
                log.warning("%s reconnected after %.1f s (attempt %d)", self.description, gap, tries)
                break
            else:
                log.warning("%s: gave up after %d reconnection attempt(s)", self.description, tries)
                return

    def close(self) -> None:
        """Close the container (idempotent)."""
        with contextlib.suppress(Exception):
            self._container.close()


class AvSink:
    """Write frames with PyAV: see the module docstring for the files it leaves.

    Args:
        path: the output file (.mp4, .mov, .mkv, .webm).
        fps: the nominal frame rate (timestamps come from :meth:`write`'s ``time`` when given).
        codec: a key of :data:`CODECS` (default: the suffix's).
        quality: high, medium (default), low, or a rate factor.
        source: what to take over from the input (audio, colour).
        threads: encoder threads (None: FFmpeg's choice).

    Example:
        >>> with AvSink("out.mp4", fps=25) as sink:
        ...     sink.write(frame_bgr, time=0.04)
    """

    def __init__(
        self,
        path: str | Path,
        fps: float,
        codec: str | None = None,
        quality: str | int | None = None,
        *,
        source: StreamInfo | None = None,
        threads: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.codec = pick_codec(self.path, codec)
        self.crf = rate_factor(self.codec, quality)
        self.fps = float(fps)
        self.source = source or StreamInfo()
        self.threads = threads
        self.partial = self.path.with_name(f"{self.path.stem}.partial{self.path.suffix}")
        self.written = 0
        self.size: tuple[int, int] | None = None
        self.first_time = 0.0
        self.last_time: float | None = None
        #: the run stopped before the input ended: the input's audio ends with the last frame written
        self.cut_short = False
        self._container: Any = None
        self._stream: Any = None
        self._closed = False

    # ------------------------------------------------------------------ writing
    def _open(self, width: int, height: int) -> None:
        import av

        _quiet_encoder_logs()
        spec = CODECS[self.codec]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mp4 = self.path.suffix.lower() in (".mp4", ".mov")
        options = {"movflags": "frag_keyframe+empty_moov+default_base_moof"} if mp4 else {}
        try:
            self._container = av.open(str(self.partial), "w", options=options)
            stream = self._container.add_stream(spec.encoder, rate=Fraction(self.fps).limit_denominator(1001000),
                                                options={**spec.options, "crf": str(self.crf)})  # fmt: skip
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise CamcoreError(f"cannot write {str(self.path)!r} with {spec.encoder}: {exc}") from None
        stream.width, stream.height = width + width % 2, height + height % 2  # yuv420p needs even sizes
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, 90000)
        stream.codec_context.time_base = Fraction(1, 90000)
        if self.threads:
            stream.codec_context.thread_count = self.threads
        for key, value in self.source.colour.items():
            if value is not None:
                with contextlib.suppress(AttributeError, ValueError, TypeError):
                    setattr(stream.codec_context, key, value)
        self._stream, self.size = stream, (width, height)

    def write(self, frame: np.ndarray, time: float | None = None) -> None:
        """Append one BGR uint8 frame shown at ``time`` seconds (default: its index / fps)."""
        import av

        if self._stream is None:
            with ordinary_scheduling():
                self._open(frame.shape[1], frame.shape[0])
        h, w = frame.shape[:2]
        if (w, h) != self.size:
            raise CamcoreError(f"frame {self.written} is {w}x{h}, the video is {self.size[0]}x{self.size[1]}")  # type: ignore[index]
        if w % 2 or h % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        t = self.written / self.fps if time is None else float(time)
        if self.last_time is not None and t <= self.last_time:  # timestamps must increase
            t = self.last_time + 1.0 / (90000 / 1)
        if self.last_time is None:
            self.first_time = t
        self.last_time = t
        out = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="bgr24")
        out.pts = round(t * 90000)
        out.time_base = Fraction(1, 90000)
        # SVT-AV1 starts its threads on the first frame (see ordinary_scheduling)
        with ordinary_scheduling() if self.written == 0 else contextlib.nullcontext():
            packets = self._stream.encode(out)
        for packet in packets:
            self._container.mux(packet)
        self.written += 1

    # ------------------------------------------------------------------ finishing
    def close(self) -> None:
        """Flush the encoder and put the final file in place with the input's audio (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._stream is None:
            return
        with ordinary_scheduling():
            packets = self._stream.encode()
        for packet in packets:
            self._container.mux(packet)
        self._container.close()
        from camcore.files import AtomicFile

        final = AtomicFile(self.path)
        try:
            audio = self.source.path if self.source.has_audio else None
            until = self.last_time + 1.0 / self.fps if self.cut_short and self.last_time is not None else None
            remux(self.partial, final.temporary, audio, until, self.source.audio_offset, self.first_time)
        except BaseException:
            final.discard()
            raise
        final.commit()
        with contextlib.suppress(OSError):
            self.partial.unlink()

    def __enter__(self) -> AvSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def remux(
    video: Path, out: Path, audio_from: str | None, until: float | None, offset: float = 0.0, first: float = 0.0
) -> None:
    """Copy the video stream of ``video`` and the first audio stream of ``audio_from`` (from
    ``offset`` seconds on, up to ``until`` seconds after it: the video's span) into ``out``, packets
    interleaved by time. Audio the container cannot hold as it is (AAC in WebM) is re-encoded to
    Opus, and a warning says so.

    The first video frame is shown at ``first`` seconds again: a fragmented MP4 cannot start with
    a negative decoding time, so its muxer delayed every frame by the B-frame reordering delay; the
    final file takes that back (an edit list in MP4)."""
    import av

    suffix = out.suffix.lower()
    fmt = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}.get(suffix)
    options = {"movflags": "+faststart"} if suffix in (".mp4", ".mov") else {}
    with contextlib.ExitStack() as stack:
        src_v = stack.enter_context(av.open(str(video)))
        dst = stack.enter_context(av.open(str(out), "w", format=fmt, options=options))
        v_in = src_v.streams.video[0]
        v_out = dst.add_stream_from_template(v_in, opaque=True)
        delay = _first_pts(src_v, v_in) - first
        src_v.seek(0, stream=v_in)
        packets = [_shifted(_copied(src_v.demux(v_in), v_in, v_out), delay, keep_early=True)]
        if audio_from is not None:
            src_a = stack.enter_context(av.open(audio_from))
            if src_a.streams.audio:
                a_in = src_a.streams.audio[0]
                if offset > 0:
                    src_a.seek(int(offset / a_in.time_base), stream=a_in, backward=True)
                packets.append(_shifted(_audio(dst, src_a, a_in, suffix), offset))
        _interleave(dst, packets, until)


def _first_pts(container: Any, stream: Any) -> float:
    """The smallest presentation time among the first packets of ``stream`` (the first frame's)."""
    times = []
    for packet in container.demux(stream):
        if packet.pts is not None:
            times.append(float(packet.pts * stream.time_base))
        if len(times) >= 16:
            break
    return min(times) if times else 0.0


def _shifted(
    packets: Iterator[tuple[float, Any]], offset: float, keep_early: bool = False
) -> Iterator[tuple[float, Any]]:
    """Packets with their times moved back by ``offset`` seconds; those before it are dropped (the
    start of a segment) unless ``keep_early`` (a decoding delay taken back)."""
    if not offset:
        yield from packets
        return
    for t, packet in packets:
        if t < offset and not keep_early:
            continue
        shift = round(offset / packet.time_base)
        packet.pts = None if packet.pts is None else packet.pts - shift
        packet.dts = None if packet.dts is None else packet.dts - shift
        yield t - offset, packet


def _copied(packets: Iterator[Any], stream: Any, out_stream: Any) -> Iterator[tuple[float, Any]]:
    """(time, packet) of a stream copied as it is."""
    for packet in packets:
        if packet.dts is None:
            continue
        t = float(packet.dts * stream.time_base)
        packet.stream = out_stream
        yield t, packet


def _audio(dst: Any, container: Any, stream: Any, suffix: str) -> Iterator[tuple[float, Any]]:
    """The input's audio for ``dst``: copied, or re-encoded to Opus where the container needs it."""
    import av

    try:
        if suffix == ".webm" and stream.codec_context.name not in ("opus", "vorbis"):
            raise ValueError(f"WebM holds Opus or Vorbis audio, not {stream.codec_context.name}")
        return _copied(container.demux(stream), stream, dst.add_stream_from_template(stream, opaque=True))
    except (ValueError, av.error.FFmpegError) as exc:
        log.warning("the input's %s audio is re-encoded to Opus for %s (%s)", stream.codec_context.name, suffix, exc)
    out_stream = dst.add_stream("libopus", rate=48000)
    layout = stream.codec_context.layout.name if stream.codec_context.layout else "stereo"
    out_stream.layout = layout
    resampler = av.AudioResampler(format="s16", layout=layout, rate=48000)

    def timed(packet: Any) -> tuple[float, Any]:
        return (float(packet.pts * packet.time_base) if packet.pts is not None else 0.0), packet

    def packets() -> Iterator[tuple[float, Any]]:
        for frame in container.decode(stream):
            for chunk in resampler.resample(frame):
                yield from map(timed, out_stream.encode(chunk))
        yield from map(timed, out_stream.encode(None))

    return packets()


def _interleave(dst: Any, sources: list[Iterator[tuple[float, Any]]], until: float | None) -> None:
    """Mux the (time, packet) of every source in time order; audio stops at ``until``."""
    heap: list[tuple[float, int, Any]] = []

    def push(k: int) -> None:
        for t, packet in sources[k]:
            heapq.heappush(heap, (t, k, packet))
            return

    for k in range(len(sources)):
        push(k)
    while heap:
        t, k, packet = heapq.heappop(heap)
        if k == 0 or until is None or t <= until:
            dst.mux(packet)
        push(k)
