"""The one-machine audit: decode + preprocess, batched augmented inference and statistics as
overlapping stages, rows stored as they come.

::

    samples ──► [feeder] ──► decode pool (D threads: read, decode, preprocess, region)
                   │ chunks of whole model batches (CHUNK_ROWS), at most `in_flight` ahead
                   ▼
               [inference] x W (one AuditWorker fork each: one shared session, its own call
                   │        state; the model run, the maps, the statistics, the rows)
                   ▼
               caller's thread: parts of samples.parquet (every `flush_rows` rows or
               `flush_seconds`), the progress bar, Ctrl-C / SIGTERM

OpenCV, onnxruntime and numpy's large operations release the GIL, so the stages overlap on
several cores. On the CPU the fastest set-up is W = cores workers sharing one single-threaded
session (as the video pipeline found: no intra-op pool spinning against the decoders); on a
GPU one worker feeds it. A chunk's futures travel in order, so chunks are explained in input
order and memory stays bounded by ``in_flight`` chunks.

The caller's thread only waits with a timeout, so Ctrl-C and SIGTERM (as
:func:`camcore.files.terminate_as_interrupt` delivers it) arrive promptly: the rows done are
stored as a last part, the threads stop after their current batch, and the interrupt goes on.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import cv2
import pyarrow as pa

from camcore.audit.dataset import Sample
from camcore.audit.store import SampleStore
from camcore.audit.worker import AuditWorker, Prepared

__all__ = ["LocalRun", "run_local"]

_POLL = 0.1
#: rows per chunk in a run of at least 8 such chunks per thread (rounded down to whole model batches;
#: a shorter run keeps one batch per chunk: its parts come sooner): the row stage's costs per
#: call (the statistics' numpy calls, the Arrow columns, a hand-over between threads) spread over
#: more rows; 16-image chunks cost the demo model 7% more CPU time per image than 64
CHUNK_ROWS = 64
#: ... and at most this many input pixels a chunk (64 images of 128 x 128), so that bigger inputs keep
#: chunks of one batch and the memory of the 2W + 2 chunks in flight stays near what it was
CHUNK_PIXELS = 64 * 128 * 128
#: failed samples named on stderr, at most (the rest are in the table)
SHOWN_ERRORS = 10


@dataclass
class LocalRun:
    """What a local run did: rows stored, errors, wall time and per-stage busy seconds."""

    rows: int = 0
    errors: int = 0
    seconds: float = 0.0
    workers: int = 1
    decoders: int = 1
    busy: dict[str, float] = field(default_factory=lambda: {"decode": 0.0, "inference": 0.0})

    def summary(self) -> dict[str, Any]:
        """The run's figures for summary.json."""
        rate = self.rows / self.seconds if self.seconds > 0 else None
        return {"engine": "local", "rows": self.rows, "errors": self.errors, "seconds": round(self.seconds, 3),
                "images_per_second": None if rate is None else round(rate, 2), "workers": self.workers,
                "decoders": self.decoders, "busy_seconds": {k: round(v, 3) for k, v in self.busy.items()}}  # fmt: skip


class _Stop:
    """End of the inference stream (``error`` None) or a failure."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


def run_local(
    worker: AuditWorker,
    samples: Sequence[Sample],
    store: SampleStore,
    *,
    workers: int | None = None,
    decoders: int | None = None,
    flush_rows: int | None = None,
    flush_seconds: float = 10.0,
    on_rows: Callable[[pa.Table], None] | None = None,
) -> LocalRun:
    """Explain ``samples`` with forks of ``worker`` and append their rows to ``store``.

    Args:
        worker: the configured worker (its session's threads set: 1 for CPU workers).
        samples: the samples to do (those not stored yet).
        workers: inference threads (default: the cores for a single-threaded CPU session, else 1).
        decoders: decode + preprocess threads (default: the cores).
        flush_rows: rows per part (default: a 16th of the samples, within [batch size, 1024]).
        flush_seconds: a part is also written when this long has passed since the last.
        on_rows: called in the caller's thread with every finished chunk's rows (progress).

    While it runs, OpenCV and numpy's BLAS use one thread each (:func:`_one_thread_each`): the
    pipeline already runs a thread per core in each stage, and their own pools would only
    spin against it.

    Raises:
        KeyboardInterrupt: after the rows done are stored.
    """
    with _one_thread_each():
        return _run_local(worker, samples, store, workers=workers, decoders=decoders, flush_rows=flush_rows,
                          flush_seconds=flush_seconds, on_rows=on_rows)  # fmt: skip


@contextlib.contextmanager
def _one_thread_each() -> Iterator[None]:
    """OpenCV's and numpy's BLAS thread pools limited to one thread, restored on exit."""
    from camcore.blas import serial_blas

    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with serial_blas():
            yield
    finally:
        cv2.setNumThreads(before)


def _run_local(
    worker: AuditWorker,
    samples: Sequence[Sample],
    store: SampleStore,
    *,
    workers: int | None,
    decoders: int | None,
    flush_rows: int | None,
    flush_seconds: float,
    on_rows: Callable[[pa.Table], None] | None,
) -> LocalRun:
    cores = os.cpu_count() or 1
    on_cpu = _on_cpu(worker)
    if workers is None:
        workers = cores if on_cpu and worker.config.threads == 1 else 1
    decoders = decoders or cores
    size = worker.config.batch_size
    hw = worker.config.size
    if hw is not None and len(samples) >= 8 * workers * CHUNK_ROWS:  # a long run: chunks of whole batches
        size *= max(1, min(CHUNK_ROWS, CHUNK_PIXELS // (hw[0] * hw[1])) // size)
    flush_rows = flush_rows or max(size, min(1024, len(samples) // 16))
    report = LocalRun(workers=workers, decoders=decoders)
    t0 = time.perf_counter()
    if not samples:
        return report
    chunks = [list(samples[i : i + size]) for i in range(0, len(samples), size)]
    stop = threading.Event()
    # 2W + 2 chunks: W being explained, the rest decoding or decoded (fewer starve the inference threads: with
    # W + 1, a single chunk decodes at a time while each thread takes one every ~1.7 decode times)
    in_flight = threading.Semaphore(2 * workers + 2)
    work: queue.Queue[Future[list[Prepared]] | _Stop] = queue.Queue()
    done: queue.Queue[pa.Table | _Stop] = queue.Queue()
    lock = threading.Lock()

    def prepare(chunk: list[Sample]) -> list[Prepared]:
        t = time.perf_counter()
        out = [worker.prepare(s) for s in chunk]
        with lock:
            report.busy["decode"] += time.perf_counter() - t
        return out

    pool = ThreadPoolExecutor(decoders, thread_name_prefix="camcore-audit-decode")

    def feed() -> None:
        try:
            for chunk in chunks:
                while not in_flight.acquire(timeout=_POLL):
                    if stop.is_set():
                        return
                if stop.is_set():
                    return
                work.put(pool.submit(prepare, chunk))
        except BaseException as exc:  # pragma: no cover - a pool shut down under us
            done.put(_Stop(exc))
        finally:
            for _ in range(workers):
                work.put(_Stop())

    def infer(w: AuditWorker) -> None:
        try:
            while not stop.is_set():
                item = work.get()
                if isinstance(item, _Stop):
                    break
                prepared = item.result()
                t = time.perf_counter()
                table = w.rows(prepared)
                with lock:
                    report.busy["inference"] += time.perf_counter() - t
                in_flight.release()
                done.put(table)
        except BaseException as exc:
            done.put(_Stop(exc))
            stop.set()
            return
        done.put(_Stop())

    threads = [threading.Thread(target=feed, name="camcore-audit-feed", daemon=True)]
    threads += [threading.Thread(target=infer, args=(worker if i == 0 else worker.fork(),),
                                 name=f"camcore-audit-infer-{i}", daemon=True) for i in range(workers)]  # fmt: skip
    pending: list[pa.Table] = []
    last = time.perf_counter()

    def flush() -> None:
        nonlocal last
        if pending:
            table = pa.concat_tables(pending)
            pending.clear()
            store.append(table)
        last = time.perf_counter()

    shown = 0
    try:
        for t in threads:
            t.start()
        finished = 0
        while finished < workers:
            try:
                got = done.get(timeout=_POLL)
            except queue.Empty:
                if pending and time.perf_counter() - last >= flush_seconds:
                    flush()
                continue
            if isinstance(got, _Stop):
                if got.error is not None:
                    raise got.error
                finished += 1
                continue
            pending.append(got)
            report.rows += got.num_rows
            errors = [e for e in got.column("error").to_pylist() if e is not None]
            report.errors += len(errors)
            for e in errors[: max(0, SHOWN_ERRORS - shown)]:
                _note(f"camcore: sample failed: {e}")
            shown += len(errors)
            if on_rows is not None:
                on_rows(got)
            if sum(p.num_rows for p in pending) >= flush_rows or time.perf_counter() - last >= flush_seconds:
                flush()
        flush()
    finally:
        stop.set()
        try:
            flush()  # the rows done, before the interrupt goes on
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            for t in threads:
                t.join(timeout=30)
            report.seconds = time.perf_counter() - t0
    if shown > SHOWN_ERRORS:
        _note(f"camcore: ... and {shown - SHOWN_ERRORS} more failed samples (the error column of samples.parquet)")
    return report


def _on_cpu(worker: AuditWorker) -> bool:
    from camcore.runtime import select_providers

    providers = worker.cam.engine.providers
    return select_providers(providers).providers[0] == "CPUExecutionProvider"


def _note(line: str) -> None:
    try:
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)
    except ImportError:  # pragma: no cover
        print(line, file=sys.stderr)
