"""The frame pipeline: decode, preprocess, batched CAM inference, smoothing, overlay, in threads.

::

    frames ──► [decode] ──► [preprocess + batch] ──► [CAM worker] x W ──► [reorder, smooth,
                   │               │ (skipped frames, --every)            overlay] ──► caller
                   └── size fix    └───────────────────────────────────────►┘

Why one file of about 450 lines: the stages below are the threads of one run and share its
queues, stop flag and in-flight bound; split, each would reach into the others' state.

Every stage is a thread joined by queues; OpenCV, onnxruntime and the C++ overlay release the
GIL, so the stages overlap on several cores. A semaphore caps the frames in flight, so memory
stays flat however long the video. The caller's thread consumes the results (and, in the CLI,
encodes them): results come out in input order, one per input frame.

On CPU the fastest set-up is one single-threaded onnxruntime session run by several workers
(``workers`` = cores, the CAM built with ``threads=1``): no thread-pool spinning competes with
the decode, overlay and encode threads. The workers are forks of the CAM (:meth:`BaseCAM.fork`)
that share its engine's compiled sessions (``InferenceSession.run`` is thread-safe). Each
batch goes through the batch service (:class:`camcore.batch.BatchExplainer`) for unscaled maps
(:func:`camcore.maps.assemble_unscaled`), which the smoother scales with a range shared by frames.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, cast

import cv2
import numpy as np

if TYPE_CHECKING:
    import av

    from camcore.tasks import TaskChoice

from camcore.batch import BatchExplainer, Explained, Item, Missed
from camcore.cam import BaseCAM
from camcore.errors import CamcoreError
from camcore.maps import spatial_size
from camcore.postprocess import overlay as draw_overlay
from camcore.preprocess import Channels, Preprocess, model_input_size
from camcore.targets import Target
from camcore.video.follow import FrameTargets, as_frame_targets
from camcore.video.smoothing import Normalization, TemporalSmoother
from camcore.video.timed import TimedFrame

__all__ = ["FrameInfo", "FrameResult", "TimedFrame", "VideoPipeline", "explain_frames"]

log = logging.getLogger("camcore.video")
_POLL = 0.1  # seconds between checks of the stop flag while a stage waits


class FrameResult(NamedTuple):
    """One explained frame, as yielded by :func:`explain_frames`.

    Attributes:
        frame: the input frame (uint8 H x W x 3; resized if it came in at the wrong size), or
            with ``output="av"`` the input PyAV frame.
        cam_map: float32 map in [0, 1] at the model's input size, after smoothing.
        overlay: uint8 picture, the heat map blended on the frame (H x 2W x 3 side by side), or
            with ``output="av"`` a PyAV frame of it carrying the input frame's timestamp.
        outputs: the model outputs for this frame (batch axis removed); on frames skipped by
            ``every``, those of the last explained frame.
    """

    frame: np.ndarray | av.VideoFrame
    cam_map: np.ndarray
    overlay: np.ndarray | av.VideoFrame
    outputs: list[np.ndarray]


@dataclass
class FrameInfo:
    """What happened to one frame (for the summary).

    Attributes:
        index: position in the input, from 0.
        explained: the map was computed on this frame (``False``: reused, see ``every``).
        source: index of the frame whose map and outputs this frame shows.
        target_class: the explained class, when the target is a class (else ``None``).
        resized_from: the (height, width) the frame came in at, when it had to be resized.
        detection: the followed detection, with :class:`~camcore.video.follow.FollowDetection`.
        record: the explained class and the top-k predictions (:func:`camcore.tasks.basic.prediction_record`).
        time: when the input frame is shown, in seconds (from a PyAV frame or a :class:`TimedFrame`).
        missing: why the task found no target in this frame (a detection it lacks); the frame
            then shows the last explained frame's map (``source``), or no map before the first.
    """

    index: int
    explained: bool
    source: int
    target_class: int | None = None
    resized_from: tuple[int, int] | None = None
    detection: dict[str, Any] | None = None
    record: dict[str, Any] = field(default_factory=dict)
    time: float | None = None
    missing: str | None = None


@dataclass
class _Item:
    info: FrameInfo
    frame: np.ndarray
    x: np.ndarray | None = None
    #: the input frame as given when it was not an array (a PyAV frame, kept for ``output="av"``)
    original: Any = None
    target: Target | None = None
    raw: np.ndarray | None = None
    outputs: list[np.ndarray] = field(default_factory=list)
    #: the map's (height, width), for a frame left without one
    hw: tuple[int, int] | None = None


@dataclass
class _Stop:
    """End of stream (``error`` None) or a failure, after ``count`` frames."""

    count: int
    error: BaseException | None = None


class _CancelledError(Exception):
    """The consumer went away; a stage unwinds."""


class VideoPipeline:
    """Explain a stream of frames with a CAM; reusable, one stream at a time.

    Args:
        cam: a CAM object (``camcore.GradCAM(...)`` or another ``BaseCAM``).
        preprocess: frame -> model input; default :class:`Preprocess` at the model's input size
            with ImageNet statistics.
        targets: ``None`` (each frame's top-1 class; with ``task``, the task's target chosen from
            all of each frame's outputs, e.g. ``--detection 1`` of a detector with separate boxes
            and scores), a class index, a ``Target``, or an object with ``for_frame(index)`` such
            as :class:`~camcore.video.follow.FollowDetection`. A frame in which the task finds no
            target (a detection it lacks) does not stop the video: it shows the last map (none
            before the first) and :attr:`FrameInfo.missing` says why.
        batch: frames per inference run, at most (batches fill when decoding runs ahead).
        every: explain every ``every``-th frame; the frames in between reuse the last map.
        smooth, normalize, range_decay: temporal smoothing, see :class:`TemporalSmoother`.
        colormap, alpha: the overlay's colour map and heat weight.
        channels: channel order of the frames, ``"bgr"`` (OpenCV) or ``"rgb"`` (PyAV, PIL).
        side_by_side: the overlay is the frame and the blend side by side (H x 2W).
        workers: CAM worker threads; default: the core count when ``cam.threads == 1``, else 1.
        in_flight: frames in the pipeline at most; default from ``batch``, ``workers``, ``every``.
        overlay_threads: threads of each overlay call (1: the pipeline already runs in parallel).
        top_k: predictions kept per frame in :attr:`FrameInfo.record`.
        class_names: the model's class names, for the records.
        task: the records' task (:class:`~camcore.tasks.TaskChoice`; default: a classifier's);
            with ``targets=None`` it also chooses each frame's target.
        output: ``"av"``: the overlay (and the frame) of each result as a PyAV ``VideoFrame``, with the
            input frame's timestamp, ready to encode; the input frames must then be PyAV frames.

    Example:
        >>> cam = camcore.GradCAM("model.onnx", threads=1)
        >>> pipe = VideoPipeline(cam, smooth=0.6)
        >>> for frame, cam_map, picture, outputs in pipe.run(frames):
        ...     writer.write(picture)
    """

    def __init__(
        self,
        cam: BaseCAM,
        *,
        preprocess: Callable[..., np.ndarray] | None = None,
        targets: int | Target | FrameTargets | None = None,
        batch: int = 4,
        every: int = 1,
        smooth: float = 0.5,
        normalize: Normalization = "running",
        range_decay: float = 0.99,
        colormap: str = "jet",
        alpha: float = 0.5,
        channels: Channels = "bgr",
        side_by_side: bool = False,
        workers: int | None = None,
        in_flight: int | None = None,
        overlay_threads: int = 1,
        top_k: int = 5,
        class_names: list[str] | None = None,
        output: Literal["numpy", "av"] = "numpy",
        task: TaskChoice | None = None,
    ) -> None:
        for name, value in (("batch", batch), ("every", every), ("overlay_threads", overlay_threads)):
            if value < 1:
                raise CamcoreError(f"{name} must be >= 1, got {value}")
        if not 0.0 <= alpha <= 1.0:
            raise CamcoreError(f"alpha must be in [0, 1], got {alpha}")
        if channels not in ("bgr", "rgb"):
            raise CamcoreError(f"channels must be 'bgr' or 'rgb', got {channels!r}")
        TemporalSmoother(smooth, normalize, range_decay)  # validates the arguments
        if isinstance(workers, bool) or (workers is not None and workers < 1):
            raise CamcoreError(f"workers must be >= 1, got {workers}")
        self.cam = cam
        self.preprocess = preprocess or Preprocess(model_input_size(cam.engine),
                                                   nhwc=cam.engine.input_layout == "NHWC")  # fmt: skip
        self.targets = as_frame_targets(targets)
        self.batch, self.every = batch, every
        self.smooth, self.normalize, self.range_decay = smooth, normalize, range_decay
        self.colormap, self.alpha, self.channels = colormap, alpha, channels
        self.side_by_side = side_by_side
        if workers is None:
            workers = (os.cpu_count() or 1) if cam.engine.threads == 1 else 1
        self.workers = workers
        self.in_flight = in_flight or 2 * batch * workers + every + 8
        self.overlay_threads = overlay_threads
        if output not in ("numpy", "av"):
            raise CamcoreError(f"output must be 'numpy' or 'av', got {output!r}")
        self.top_k, self.class_names, self.output = top_k, class_names, output
        self.task = task
        self.by_task = task is not None and targets is None

    # ------------------------------------------------------------------ public
    def run(self, frames: Iterable[np.ndarray]) -> Iterator[FrameResult]:
        """Yield one :class:`FrameResult` per frame, lazily and in order."""
        for result, _ in self.stream(frames):
            yield result

    def stream(self, frames: Iterable[np.ndarray]) -> Iterator[tuple[FrameResult, FrameInfo]]:
        """Like :meth:`run`, with each frame's :class:`FrameInfo`.

        Closing the generator (or leaving a ``for`` loop over it) stops the stages; an exception
        raised by ``frames`` (``KeyboardInterrupt`` included) comes out after the frames before it.
        """
        run = _Run(self, frames)
        try:
            yield from run.results()
        finally:
            run.shutdown()

    # ------------------------------------------------------------------ helpers for _Run
    def replicas(self) -> list[BatchExplainer]:
        """One explainer per worker, each on a fork of the CAM (shared compiled sessions)."""
        target = self.task if self.by_task else None
        return [BatchExplainer(self.cam.fork(), target, batch_size=self.batch, top_k=self.top_k, scaled=False,
                               class_names=self.class_names, task=self.task) for _ in range(self.workers)]  # fmt: skip

    def explain_batch(self, explainer: BatchExplainer, items: list[_Item]) -> None:
        """Fill ``raw`` (non-negative, unscaled maps at the model's input size) and ``outputs`` of ``items``."""
        batch = [Item(str(it.info.index), it.frame, it.x) for it in items]  # type: ignore[arg-type]
        done: list[Explained | Missed] = list(
            explainer.explain_found(batch) if self.by_task else explainer.explain(batch, [it.target for it in items]))
        for it, result in zip(items, done):
            it.outputs = result.outputs
            if isinstance(result, Missed):
                it.info.missing = result.error
                it.hw = spatial_size(it.x[None], self.cam.engine.input_layout)  # type: ignore[index]
                continue
            it.raw = result.map
            it.info.target_class = result.record.get("explained_class")
            it.info.record = result.record
            it.info.detection = getattr(it.target, "detection", None)


class _Run:
    """The threads and queues of one :meth:`VideoPipeline.stream` call."""

    def __init__(self, pipe: VideoPipeline, frames: Iterable[np.ndarray]) -> None:
        self.pipe = pipe
        self.frames = frames
        self.stop = threading.Event()
        self.slots = threading.Semaphore(pipe.in_flight)
        self.decoded: queue.Queue[_Item | _Stop] = queue.Queue()
        self.batches: queue.Queue[list[_Item] | _Stop] = queue.Queue(maxsize=pipe.workers)
        self.done: queue.Queue[_Item | _Stop] = queue.Queue()
        self.out: queue.Queue[tuple[FrameResult, FrameInfo] | _Stop] = queue.Queue()
        stages: list[tuple[str, Callable[..., None], tuple[Any, ...]]] = [
            ("decode", self._decode, ()),
            ("preprocess", self._preprocess, ()),
            ("post", self._post, ()),
        ]
        stages += [(f"cam{i}", self._work, (rep,)) for i, rep in enumerate(pipe.replicas())]
        self.threads = [
            threading.Thread(target=self._guard, args=(fn, *args), name=f"camcore-video-{name}", daemon=True)
            for name, fn, args in stages
        ]
        for t in self.threads:
            t.start()

    # ------------------------------------------------------------------ consumer side
    def results(self) -> Iterator[tuple[FrameResult, FrameInfo]]:
        while True:
            item = self.out.get()
            if isinstance(item, _Stop):
                if item.error is not None:
                    raise item.error
                return
            self.slots.release()
            yield item

    def shutdown(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=5.0)
            if t.is_alive():
                log.warning("stage %s did not stop within 5 s", t.name)

    # ------------------------------------------------------------------ plumbing
    def _guard(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except _CancelledError:
            pass
        except BaseException as exc:  # any stage failure ends the stream with that error
            self.out.put(_Stop(-1, exc))
            self.stop.set()

    def _get(self, q: queue.Queue[Any]) -> Any:
        while True:
            try:
                return q.get(timeout=_POLL)
            except queue.Empty:
                if self.stop.is_set():
                    raise _CancelledError from None

    def _put(self, q: queue.Queue[Any], item: Any) -> None:
        while True:
            try:
                q.put(item, timeout=_POLL)
                return
            except queue.Full:
                if self.stop.is_set():
                    raise _CancelledError from None

    # ------------------------------------------------------------------ stages
    def _decode(self) -> None:
        """Iterate the source; fix the size and channels of odd frames."""
        size: tuple[int, int] | None = None
        count = 0
        iterator = iter(self.frames)
        try:
            while True:
                while not self.slots.acquire(timeout=_POLL):
                    if self.stop.is_set():
                        raise _CancelledError
                try:
                    frame = next(iterator)
                except StopIteration:
                    self._put(self.decoded, _Stop(count))
                    return
                except BaseException as exc:  # the source failed or was interrupted
                    self._put(self.decoded, _Stop(count, exc))
                    return
                if self.stop.is_set():
                    raise _CancelledError
                frame, shown_at, original = _as_image(frame, count, self.pipe.channels)
                info = FrameInfo(index=count, explained=count % self.pipe.every == 0, source=count, time=shown_at)
                if size is None:
                    size = frame.shape[:2]
                elif frame.shape[:2] != size:
                    info.resized_from = (int(frame.shape[0]), int(frame.shape[1]))
                    log.warning(
                        "frame %d is %dx%d, not %dx%d like the first frame: resized",
                        count, frame.shape[1], frame.shape[0], size[1], size[0],
                    )  # fmt: skip
                    frame = cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)
                self._put(self.decoded, _Item(info, frame, original=original))
                count += 1
        finally:
            close = getattr(iterator, "close", None)
            if close is not None and self.stop.is_set():
                try:
                    close()
                except Exception:  # closing a half-consumed source must not mask the real error
                    log.debug("closing the frame source failed", exc_info=True)

    def _preprocess(self) -> None:
        """Preprocess explained frames into batches; pass skipped frames straight on."""
        pipe = self.pipe
        pending: list[_Item] = []

        def flush() -> None:
            if pending:
                self._put(self.batches, list(pending))
                pending.clear()

        while True:
            try:
                item = self.decoded.get_nowait()
            except queue.Empty:
                flush()  # nothing waiting: do not hold a partial batch back
                item = self._get(self.decoded)
            if isinstance(item, _Stop):
                flush()
                for _ in range(pipe.workers):
                    self._put(self.batches, _Stop(item.count))
                self._put(self.done, item)
                return
            if not item.info.explained:
                self._put(self.done, item)
                continue
            item.x = pipe.preprocess(item.frame, channels=pipe.channels)
            item.target = pipe.targets.for_frame(item.info.index)
            pending.append(item)
            if len(pending) >= pipe.batch:
                flush()

    def _work(self, explainer: BatchExplainer) -> None:
        """Run the CAM on batches."""
        while True:
            batch = self._get(self.batches)
            if isinstance(batch, _Stop):
                return
            self.pipe.explain_batch(explainer, batch)
            for it in batch:
                it.x = None
                self._put(self.done, it)

    def _post(self) -> None:
        """Restore order, smooth, overlay."""
        pipe = self.pipe
        smoother = TemporalSmoother(pipe.smooth, pipe.normalize, pipe.range_decay)
        pending: dict[int, _Item] = {}
        end: _Stop | None = None
        next_index = 0
        last: _Item | None = None
        while True:
            got = self._get(self.done)
            if isinstance(got, _Stop):
                end = got
            else:
                pending[got.info.index] = got
            while next_index in pending:
                item = pending.pop(next_index)
                missing = item.info.missing is not None
                picture = None
                if item.info.explained and not missing:
                    assert item.raw is not None
                    cam_map = smoother.update(item.raw)
                    item.raw = None
                    last = item
                elif last is None or smoother.current is None:
                    if not missing:  # cannot happen: frame 0 is explained
                        raise CamcoreError(f"frame {next_index} has no earlier map to reuse")
                    item.info.explained = False  # no map yet: the frame as it is
                    cam_map = np.zeros(item.hw or item.frame.shape[:2], np.float32)
                    picture = np.concatenate([item.frame] * 2, axis=1) if pipe.side_by_side else item.frame.copy()
                else:
                    cam_map = smoother.current
                    item.info.source = last.info.index
                    if missing:  # its own outputs; the map of the last explained frame
                        item.info.explained = False
                    else:
                        item.outputs = last.outputs
                        item.info.target_class = last.info.target_class
                        item.info.detection = last.info.detection
                        item.info.record = last.info.record
                if picture is None:
                    picture = self._overlay(item.frame, cam_map)
                result = FrameResult(item.frame, cam_map, picture, item.outputs)
                if pipe.output == "av":
                    result = _as_av(result, item, pipe.channels)
                self._put(self.out, (result, item.info))
                next_index += 1
            if end is not None and next_index >= end.count:
                self._put(self.out, end)
                return

    def _overlay(self, frame: np.ndarray, cam_map: np.ndarray) -> np.ndarray:
        pipe = self.pipe
        opts: dict[str, Any] = {"alpha": pipe.alpha, "colormap": pipe.colormap, "rgb": pipe.channels == "rgb"}
        if not pipe.side_by_side:
            return draw_overlay(frame, cam_map, threads=pipe.overlay_threads, **opts)
        h, w = frame.shape[:2]
        both = np.empty((h, 2 * w, 3), np.uint8)
        both[:, :w] = frame
        draw_overlay(frame, cam_map, out=both[:, w:], threads=pipe.overlay_threads, **opts)
        return both


def _as_av(result: FrameResult, item: _Item, channels: Channels) -> FrameResult:
    """The result with PyAV frames: the overlay carries the input frame's timestamp."""
    import av

    original = item.original
    if original is None:
        raise CamcoreError(f"frame {item.info.index} is not a PyAV frame: output='av' needs PyAV input frames")
    overlay = cast("np.ndarray", result.overlay)
    picture = av.VideoFrame.from_ndarray(overlay, format="bgr24" if channels == "bgr" else "rgb24")
    picture.pts, picture.time_base = original.pts, original.time_base
    return FrameResult(original, result.cam_map, picture, result.outputs)


def _as_image(frame: Any, index: int, channels: Channels) -> tuple[np.ndarray, float | None, Any]:
    """(uint8 H x W x 3 array in ``channels`` order, shown-at time, the PyAV frame or None) of an
    input frame: an array (grey expanded, an alpha channel dropped), a :class:`TimedFrame`, or a
    PyAV ``VideoFrame`` (converted, turned upright by its display rotation, its time kept)."""
    if isinstance(frame, TimedFrame):
        return _as_bgr_like(frame.image, index), frame.time, None
    if hasattr(frame, "to_ndarray") and hasattr(frame, "time"):  # av.VideoFrame
        from camcore.video.pyav import upright

        image = upright(frame.to_ndarray(format="bgr24" if channels == "bgr" else "rgb24"), frame.rotation or 0)
        return image, frame.time, frame
    return _as_bgr_like(frame, index), None, None


def _as_bgr_like(frame: Any, index: int) -> np.ndarray:
    """A uint8 H x W x 3 array: grey is expanded, an alpha channel dropped."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        raise CamcoreError(f"frame {index} must be uint8, got {frame.dtype}")
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return np.ascontiguousarray(frame[..., :3])
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] == 0 or frame.shape[1] == 0:
        raise CamcoreError(f"frame {index} must be H x W x 3, got shape {frame.shape}")
    return frame


def explain_frames(
    frames: Iterable[np.ndarray],
    cam: BaseCAM,
    **options: Any,
) -> Iterator[FrameResult]:
    """Explain frames lazily: yields ``(frame, cam_map, overlay, outputs)`` per frame, in order.

    ``options`` are those of :class:`VideoPipeline` (``targets``, ``batch``, ``every``,
    ``smooth``, ``normalize``, ``colormap``, ``alpha``, ``channels``, ``preprocess``, ...). The
    frames are read in a background thread, a bounded number ahead of what you consumed.

    Example (OpenCV in, OpenCV out)::

        import cv2, camcore
        from camcore.video import explain_frames, read_frames

        cam = camcore.GradCAM("resnet18.onnx", threads=1)   # workers overlap single-threaded runs
        cap = cv2.VideoCapture("traffic.mp4")
        fps, size = cap.get(cv2.CAP_PROP_FPS), (int(cap.get(3)), int(cap.get(4)))
        out = cv2.VideoWriter("explained.mp4", cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        for frame, cam_map, picture, outputs in explain_frames(read_frames(cap), cam, smooth=0.6):
            out.write(picture)                                # BGR in, BGR out
        out.release()

    With PyAV (``frame.to_ndarray(format="rgb24")``) pass ``channels="rgb"``.
    """
    return VideoPipeline(cam, **options).run(frames)
