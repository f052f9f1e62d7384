"""The audit on Ray Data: the same rows as the one-machine engine, on a local Ray or a cluster.

::

    samples (driver) ──► ray.data.from_arrow(blocks of samples_table)
                          │
                          ▼ map_batches(_AuditActor, batch_format="pyarrow")
                    actors x A (one AuditWorker each: one onnxruntime session whose intra-op
                          │     threads match the actor's CPUs; decode, inference, statistics)
                          ▼
    driver: iter_batches ──► samples.parquet parts (SampleStore: atomic, resumable)

The rows are written by the driver through the same :class:`~camcore.audit.store.SampleStore`
as the local engine, so a killed Ray audit resumes like a local one (either engine may finish
what the other began: the provenance is the same). The model's bytes travel through Ray's
object store, so cluster nodes need not share the model's path; the images are read where the
actor runs, so their paths must be readable on every node (a shared or mounted file system).

Example:
    >>> from camcore.audit.ray_engine import run_ray                                 # doctest: +SKIP
    >>> run_ray(worker.config, samples, store, address=None)   # a local Ray on this machine's cores
    {'engine': 'ray', 'actors': 2, 'cpus_per_actor': 1, 'rows': 64, ...}
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray  # the [ray] extra; camcore.audit.run turns its absence into a one-line error
import ray.data

from camcore.audit.dataset import Sample
from camcore.audit.store import SampleStore
from camcore.audit.worker import AuditConfig, AuditWorker, file_sha256, samples_table
from camcore.errors import CamcoreError

__all__ = ["run_ray"]

#: blocks of samples per actor: enough for Ray to balance the actors' load
BLOCKS_PER_ACTOR = 4


class _AuditActor:
    """One Ray actor: an :class:`AuditWorker` on the model, written to a local file when the
    configured path is not readable on this node."""

    def __init__(self, config: AuditConfig, model_bytes: list[Any], model_sha256: str) -> None:
        model = config.model
        if not _is_model(model, model_sha256):
            folder = Path(tempfile.gettempdir()) / "camcore-ray-models"
            folder.mkdir(parents=True, exist_ok=True)
            model = str(folder / f"{model_sha256}.onnx")
            if not _is_model(model, model_sha256):
                data = ray.get(model_bytes[0])  # a nested reference: fetched only when needed
                tmp = f"{model}.{os.getpid()}.tmp"
                Path(tmp).write_bytes(data)
                os.replace(tmp, model)
        self.worker = AuditWorker(replace(config, model=model))

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.worker(batch)


def _is_model(path: str, sha256: str) -> bool:
    try:
        return file_sha256(path) == sha256
    except OSError:
        return False


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A one-line error when ``address`` (``host:port`` or ``ray://host:port``) does not answer:
    Ray itself would retry for minutes. ``auto`` and other forms are left to Ray."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise CamcoreError(f"no Ray cluster answers at --ray-address {address!r} ({exc.strerror or exc}): start one "
                           "with `ray start --head` there, or leave --ray-address out for a local Ray") from None


@contextlib.contextmanager
def _connected(address: str | None, cpus: int) -> Iterator[dict[str, Any]]:
    """Ray, started locally with ``cpus`` CPUs or joined at ``address``; shut down at the end
    only when this call started it. Yields the cluster's resources."""
    started = False
    if address is not None:
        _check_reachable(address)
    if not ray.is_initialized():
        # Ray's start-up notes are not the user's business
        logging.getLogger("ray").setLevel(logging.ERROR)
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                   "logging_level": logging.ERROR, "configure_logging": True}  # fmt: skip
        if address is None:
            options["num_cpus"] = cpus
        else:
            options["address"] = address
        try:
            ray.init(**options)
        except Exception as exc:
            where = f"the Ray cluster at {address!r}" if address else "a local Ray"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            fix = "check --ray-address (e.g. ray://host:10001 or host:6379)" if address else "use --engine local"
            raise CamcoreError(f"cannot start {where}: {first[:200]}; {fix}") from None
        started = True
    try:
        yield dict(ray.cluster_resources())
    finally:
        if started:
            ray.shutdown()


def _quiet_ray_data() -> None:
    """No Ray Data progress bars or INFO lines: camcore's own bar reports progress."""
    context = ray.data.DataContext.get_current()  # after Ray Data configured its loggers
    for name in ("ray.data", "ray"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for name in ("enable_progress_bars", "enable_operator_progress_bars", "enable_rich_progress_bars"):
        if hasattr(context, name):
            setattr(context, name, False)
    if hasattr(context, "print_on_execution_start"):
        context.print_on_execution_start = False


def run_ray(
    config: AuditConfig,
    samples: Sequence[Sample],
    store: SampleStore,
    *,
    address: str | None = None,
    actors: int | None = None,
    cpus_per_actor: int = 1,
    flush_rows: int | None = None,
    on_rows: Callable[[pa.Table], None] | None = None,
) -> dict[str, Any]:
    """Explain ``samples`` on Ray Data and append their rows to ``store``.

    Args:
        config: the worker configuration (its ``threads`` is replaced by ``cpus_per_actor``).
        samples: the samples to do (those not stored yet).
        address: a Ray cluster's address (None: start a local Ray on this machine's cores, or use
            the Ray this process has already initialised).
        actors: concurrent actors (default: the cluster's CPUs // ``cpus_per_actor``).
        cpus_per_actor: the CPUs each actor reserves, and its session's intra-op threads.
        flush_rows: rows per stored part (default: as the local engine: a 16th of the samples,
            within [batch size, 1024]).
        on_rows: called on the driver with each batch of finished rows (progress).

    Returns:
        The engine's figures for summary.json.

    Raises:
        CamcoreError: Ray cannot be started or reached (one line).
        KeyboardInterrupt: after the rows received are stored (rerun to resume).
    """
    if cpus_per_actor < 1:
        raise CamcoreError(f"cpus per actor must be >= 1, got {cpus_per_actor}")
    t0 = time.perf_counter()
    figures: dict[str, Any] = {"engine": "ray", "address": address or "local", "rows": 0, "errors": 0}
    if not samples:
        return figures | {"seconds": 0.0}
    config = replace(config, threads=cpus_per_actor)
    model_bytes = Path(config.model).read_bytes()
    sha256 = hashlib.sha256(model_bytes).hexdigest()
    flush_rows = flush_rows or max(config.batch_size, min(1024, len(samples) // 16))
    # Ray's deprecation notes about its own settings are not the user's business
    with warnings.catch_warnings(), _connected(address, os.cpu_count() or 1) as resources:
        warnings.simplefilter("ignore")
        _quiet_ray_data()
        cpus = int(resources.get("CPU", 1))
        actors = actors or max(1, cpus // cpus_per_actor)
        table = samples_table(samples, config.groups)
        blocks = max(1, min(len(samples) // config.batch_size or 1, actors * BLOCKS_PER_ACTOR))
        step = -(-len(samples) // blocks)
        dataset = ray.data.from_arrow([table.slice(i, step) for i in range(0, len(samples), step)])
        options: dict[str, Any] = {
            "fn_constructor_args": (config, [ray.put(model_bytes)], sha256), "batch_size": config.batch_size,
            "batch_format": "pyarrow", "compute": ray.data.ActorPoolStrategy(size=min(actors, blocks)),
            "num_cpus": cpus_per_actor,
        }  # fmt: skip
        try:  # no actor restarts: a lost actor fails the run, which resumes (and Ray's C++ core stays quiet);
            # max_restarts is a deprecated "remote arg" since Ray 2.5x
            rows = dataset.map_batches(_AuditActor, **options, max_restarts=0)
        except TypeError:  # a Ray without remote args
            rows = dataset.map_batches(_AuditActor, **options)
        pending: list[pa.Table] = []

        def flush() -> None:
            if pending:
                store.append(pa.concat_tables(pending))
                pending.clear()

        try:
            for done in rows.iter_batches(batch_size=None, batch_format="pyarrow"):
                batch = (done if isinstance(done, pa.Table) else pa.table(done)).select(store.schema.names)
                batch = batch.cast(store.schema)
                pending.append(batch)
                figures["rows"] += batch.num_rows
                figures["errors"] += batch.num_rows - batch.column("error").null_count
                if on_rows is not None:
                    on_rows(batch)
                if sum(t.num_rows for t in pending) >= flush_rows:
                    flush()
        except ray.exceptions.RayError as exc:
            flush()
            first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise CamcoreError(f"the Ray audit failed ({figures['rows']} rows stored; rerun to resume): "
                               f"{first[:300]}") from None  # fmt: skip
        finally:
            flush()
    seconds = time.perf_counter() - t0
    return figures | {"actors": actors, "cpus_per_actor": cpus_per_actor, "seconds": round(seconds, 3),
                      "images_per_second": round(figures["rows"] / seconds, 2) if seconds > 0 else None}  # fmt: skip
