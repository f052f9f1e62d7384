"""The audit's row function: samples in, one ``samples.parquet`` row per sample out.

:class:`AuditWorker` is built from a picklable :class:`AuditConfig` (the model path, method,
layers, task, preprocessing, class names, group columns, provenance and the onnxruntime
threads its one session gets). Calling it on samples decodes, preprocesses, runs the batched
augmented model (:class:`camcore.batch.BatchExplainer`), computes the map statistics
(:mod:`camcore.audit.stats`) and returns a ``pyarrow.Table`` of :func:`row_schema`, one row per
sample in input order. The same function serves the one-machine pipeline
(:mod:`camcore.audit.local`, which runs its stages :meth:`~AuditWorker.prepare` and
:meth:`~AuditWorker.rows` in overlapping threads) and the Ray engine (``map_batches``, one
worker per actor).

A bad sample (missing, unreadable, a region outside the image, an input the model refuses)
becomes a row with ``error`` set and nulls in the model and map columns; it never raises.
The rows are deterministic: onnxruntime's CPU kernels give each image the same result
whatever its batch (checked on the demo model), and nothing else depends on the batch.

Example:
    >>> worker = AuditWorker(config)                            # doctest: +SKIP
    >>> table = worker(samples_table(dataset.samples[:64], ()))  # doctest: +SKIP
    >>> table.column("prediction")                              # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa

from camcore.audit.dataset import Sample
from camcore.audit.stats import MAP_SIDE, STAT_COLUMNS, batch_statistics, box_region, compact_maps, mask_region
from camcore.errors import CamcoreError

__all__ = ["PROVENANCE_COLUMNS", "AuditConfig", "AuditWorker", "Prepared", "row_schema", "samples_table"]

#: the provenance columns, repeated on every row
PROVENANCE_COLUMNS = ("model_sha256", "layer", "method", "camcore_version")
TOP_K = 5


@dataclass(frozen=True)
class AuditConfig:
    """Everything a worker needs, picklable (plain values only).

    Attributes:
        model: the model's path (absolute, readable where the worker runs).
        method: the CAM method's registry key.
        layers: the target layers (tensor names; None: the default).
        output: the explained output (None: the first).
        task: the task's registry name (``classify``, ...); None: read from the output's shape.
        size: the model input's (height, width); None: each image at its own size.
        mean, std, bgr, nhwc: the preprocessing (:class:`camcore.preprocess.Preprocess`).
        batch_size: images per model run.
        class_names: the class names, by output index (None: indices).
        groups: the group columns copied into the rows.
        provenance: model_sha256, layer, method, camcore_version (columns) and the settings
            a resume compares (schema metadata ``camcore.provenance``).
        threads: intra-op threads of the worker's one onnxruntime session (None: onnxruntime's).
        providers: onnxruntime execution providers (None: CUDA if it works, else CPU).
        top_k: predictions per row.
        map_side: the stored map's long side.
    """

    model: str
    method: str = "gradcam"
    layers: tuple[str, ...] | None = None
    output: str | None = None
    task: str | None = None
    size: tuple[int, int] | None = None
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    bgr: bool = False
    nhwc: bool = False
    batch_size: int = 16
    class_names: tuple[str, ...] | None = None
    groups: tuple[str, ...] = ()
    provenance: Mapping[str, Any] = field(default_factory=dict)
    threads: int | None = 1
    providers: tuple[str, ...] | None = None
    top_k: int = TOP_K
    map_side: int = MAP_SIDE


def row_schema(groups: Sequence[str], provenance: Mapping[str, Any]) -> pa.Schema:
    """The schema of ``samples.parquet`` (see the audit contract), with its metadata:
    ``camcore.groups`` (JSON list) and ``camcore.provenance`` (JSON object)."""
    f32, i32, i16, s = pa.float32(), pa.int32(), pa.int16(), pa.string()
    fields = [pa.field("id", s, nullable=False), pa.field("path", s), pa.field("label", s)]
    fields += [pa.field(g, s) for g in groups]
    fields += [
        pa.field("prediction", s), pa.field("prediction_index", i32), pa.field("confidence", f32),
        pa.field("top_k_classes", pa.list_(s)), pa.field("top_k_scores", pa.list_(f32)),
        pa.field("correct", pa.bool_()), pa.field("explained", s), pa.field("explained_index", i32),
        pa.field("map", pa.list_(pa.uint8())), pa.field("map_height", i16), pa.field("map_width", i16),
    ]  # fmt: skip
    fields += [pa.field(c, f32) for c in STAT_COLUMNS]
    fields += [pa.field("pointing_hit", pa.bool_()), pa.field("error", s)]
    fields += [pa.field(c, s) for c in PROVENANCE_COLUMNS]
    meta = {"camcore.groups": json.dumps(list(groups)), "camcore.provenance": json.dumps(dict(provenance))}
    return pa.schema(fields, metadata=meta)


def samples_table(samples: Sequence[Sample], groups: Sequence[str]) -> pa.Table:
    """Samples as a table (id, path, label, the group columns, box, mask): the input of a worker
    on Ray, and what :meth:`AuditWorker.__call__` accepts besides a list of :class:`Sample`."""
    cols: dict[str, Any] = {
        "id": pa.array([s.id for s in samples], pa.string()),
        "path": pa.array([s.path for s in samples], pa.string()),
        "label": pa.array([s.label for s in samples], pa.string()),
    }
    for g in groups:
        cols[g] = pa.array([s.groups.get(g) for s in samples], pa.string())
    cols["box"] = pa.array([None if s.box is None else list(s.box) for s in samples], pa.list_(pa.float64()))
    cols["mask"] = pa.array([s.mask for s in samples], pa.string())
    return pa.table(cols)


def _as_samples(batch: Any, groups: Sequence[str]) -> list[Sample]:
    """A worker's input as samples: a list of :class:`Sample`, a :func:`samples_table` table or
    its columns as a dict of lists or arrays (Ray's ``numpy`` batches)."""
    if isinstance(batch, pa.Table):
        batch = batch.to_pydict()
    if isinstance(batch, Mapping):
        n = len(batch["id"])

        def col(name: str) -> list[Any]:
            value = batch.get(name)
            return [None] * n if value is None else list(value)

        ids, paths, labels, boxes, masks = col("id"), col("path"), col("label"), col("box"), col("mask")
        group_cols = {g: col(g) for g in groups}
        out = []
        for i in range(n):
            box = boxes[i]
            box = None if box is None or len(box) != 4 else tuple(float(v) for v in box)
            out.append(Sample(str(ids[i]), str(paths[i]), None if labels[i] is None else str(labels[i]),
                              {g: None if group_cols[g][i] is None else str(group_cols[g][i]) for g in groups},
                              box, None if masks[i] is None else str(masks[i])))  # fmt: skip
        return out
    return list(batch)


@dataclass
class Prepared:
    """A decoded sample: its model input (no batch axis) and region at the input's size, or the
    one-line reason it failed."""

    sample: Sample
    x: np.ndarray | None = None
    region: np.ndarray | None = None
    error: str | None = None


def _read(path: str, flags: int, what: str) -> np.ndarray:
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise CamcoreError(f"{what} {path!r} does not exist") from None
    except OSError as exc:
        raise CamcoreError(f"cannot read {what} {path!r}: {exc.strerror or exc}") from None
    img = cv2.imdecode(data, flags) if data.size else None
    if img is None or img.size == 0:
        raise CamcoreError(f"cannot decode {what} {path!r} (empty, or not an image OpenCV can read)")
    return img


class AuditWorker:
    """Explains samples into rows; one CAM (one onnxruntime session) per worker.

    Args:
        config: the :class:`AuditConfig`; a worker pickles as its config and rebuilds its CAM.
        cam: a CAM already built from ``config`` (its model, method, layers, output, providers,
            threads), to share instead of loading the model again.

    ``worker(samples) -> pyarrow.Table``: the rows of ``samples`` (a list of :class:`Sample`,
    a :func:`samples_table` table, or a dict of its columns), in input order.
    """

    def __init__(self, config: AuditConfig, cam: Any = None) -> None:
        from camcore.batch import BatchExplainer
        from camcore.cam import cam_class
        from camcore.preprocess import Preprocess
        from camcore.tasks import TaskOptions, choose_task

        self.config = config
        layers = None if config.layers is None else list(config.layers)
        providers = None if config.providers is None else list(config.providers)
        if cam is None:
            cam = cam_class(config.method)(config.model, layers, output=config.output, threads=config.threads,
                                           providers=providers)  # fmt: skip
        self.cam = cam
        self.preprocess = Preprocess(config.size, config.mean, config.std, bgr=config.bgr, nhwc=config.nhwc)
        self.choice = choose_task(self.cam.engine, config.task, TaskOptions(),
                                  explicit_output=config.output is not None, input_hw=config.size)  # fmt: skip
        self.explainer = BatchExplainer(self.cam, self.choice, batch_size=config.batch_size, top_k=0)
        self.schema = row_schema(config.groups, config.provenance)
        self.names = list(config.class_names) if config.class_names else None

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"])  # type: ignore[misc]

    def fork(self) -> AuditWorker:
        """A worker for another thread, sharing this one's compiled session."""
        from camcore.batch import BatchExplainer

        twin = object.__new__(AuditWorker)
        twin.__dict__.update(self.__dict__)
        twin.cam = self.cam.fork()
        twin.explainer = BatchExplainer(twin.cam, self.choice, batch_size=self.config.batch_size, top_k=0)
        return twin

    # ------------------------------------------------------------------ the row function
    def __call__(self, samples: Any) -> pa.Table:
        """The rows of ``samples``, in input order (:meth:`prepare` then :meth:`rows`, a batch at a time)."""
        todo = _as_samples(samples, self.config.groups)
        size = self.config.batch_size
        parts = [self.rows([self.prepare(s) for s in todo[i : i + size]]) for i in range(0, len(todo), size)]
        return pa.concat_tables(parts) if parts else self.schema.empty_table()

    # ------------------------------------------------------------------ stages
    def prepare(self, sample: Sample) -> Prepared:
        """Decode ``sample``, make its model input and its region (never raises)."""
        try:
            bgr = _read(sample.path, cv2.IMREAD_COLOR, "image")
            x = self.preprocess(bgr, channels="bgr")
            ih, iw = bgr.shape[:2]
            hw = (x.shape[0], x.shape[1]) if self.config.nhwc else (x.shape[1], x.shape[2])
            region = None
            if sample.box is not None:
                x0, y0, x1, y1 = sample.box
                if x1 > iw or y1 > ih:
                    raise CamcoreError(f"box {x0:g},{y0:g},{x1:g},{y1:g} reaches beyond the image ({iw}x{ih} "
                                       "pixels): give the box in this image's pixels")  # fmt: skip
                region = box_region(sample.box, (ih, iw), hw)
            elif sample.mask is not None:
                mask = _read(sample.mask, cv2.IMREAD_UNCHANGED, "mask")
                if mask.shape[:2] != (ih, iw):
                    raise CamcoreError(f"mask {sample.mask!r} is {mask.shape[1]}x{mask.shape[0]}, its image "
                                       f"{iw}x{ih}: a mask needs its image's size")  # fmt: skip
                if not np.any(mask):
                    raise CamcoreError(f"mask {sample.mask!r} has no object pixels (all zero)")
                region = mask_region(mask, hw)
            return Prepared(sample, x, region)
        except CamcoreError as exc:
            return Prepared(sample, error=str(exc))
        except Exception as exc:  # an OpenCV error on a strange file: the sample's, not the run's
            return Prepared(sample, error=f"cannot read {sample.path!r}: {type(exc).__name__}: {exc}"[:300])

    def rows(self, prepared: Sequence[Prepared]) -> pa.Table:
        """Explain the decoded samples (a failing batch is retried one by one, so only the
        culprit fails) and make their rows, in input order."""
        from camcore.batch import Explained, Item

        items = [Item(str(i), p.x, p.x) for i, p in enumerate(prepared) if p.x is not None and p.error is None]
        errors: dict[int, str] = {i: p.error or "not decoded" for i, p in enumerate(prepared)
                                  if p.x is None or p.error is not None}  # fmt: skip
        explained: dict[int, Explained] = {}
        if items:
            try:
                for done in self.explainer.run(items):
                    if isinstance(done, Explained):
                        explained[int(done.key)] = done
                    else:
                        errors[int(done.key)] = done.error
            except Exception as exc:  # not a CamcoreError: still the batch's, reported per sample
                for it in items:
                    errors.setdefault(int(it.key), f"{type(exc).__name__}: {exc}"[:300])
        return self._table(prepared, explained, errors)

    # ------------------------------------------------------------------ the table
    def _name(self, k: int | None) -> str | None:
        if k is None:
            return None
        return self.names[k] if self.names is not None and 0 <= k < len(self.names) else str(k)

    def _predictions(self, dones: Sequence[Any]) -> list[tuple[int | None, float | None, list[int], list[float]]]:
        """Per explained row: (prediction, confidence, top-k classes, their probabilities) of a
        classifier (softmax of the logits; a row that already sums to 1 in [0, 1] is taken as
        probabilities). The rows of a chunk at once: numpy's elementwise functions and its
        reductions along the last axis give each row the same values as alone."""
        if self.choice.task.name != "classify" or not dones:
            return [(None, None, [], [])] * len(dones)
        rows = [np.asarray(d.outputs[self.cam.engine.output_index], np.float64).reshape(-1) for d in dones]
        if len({r.size for r in rows}) != 1 or rows[0].size == 0:
            return [p for r in rows for p in self._predictions_of(r[None])]
        return self._predictions_of(np.stack(rows))

    def _predictions_of(self, r: np.ndarray) -> list[tuple[int | None, float | None, list[int], list[float]]]:
        """:meth:`_predictions` of the rows of ``r`` (B, C)."""
        if r.shape[1] == 0:
            return [(None, None, [], [])] * len(r)
        finite = np.isfinite(r).all(axis=1)
        already = (r.min(axis=1) >= 0) & (r.max(axis=1) <= 1) & (np.abs(r.sum(axis=1) - 1) < 1e-3) & (r.shape[1] > 1)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):  # a non-finite row: no prediction
            e = np.exp(r - r.max(axis=1, keepdims=True))
            probs = np.where(already[:, None], r, e / e.sum(axis=1, keepdims=True))
        order = np.argsort(-r, axis=1, kind="stable")[:, : self.config.top_k]
        top_p = np.take_along_axis(probs, order, axis=1)
        return [(int(o[0]), float(p[0]), o.tolist(), p.tolist()) if ok else (None, None, [], [])
                for ok, o, p in zip(finite, order, top_p)]  # fmt: skip

    def _table(self, prepared: Sequence[Prepared], explained: dict[int, Any], errors: dict[int, str]) -> pa.Table:
        n = len(prepared)
        cols: dict[str, list[Any]] = {name: [None] * n for name in self.schema.names}
        order = sorted(explained)
        numeric: dict[str, np.ndarray] = {c: np.full(n, np.nan) for c in STAT_COLUMNS}
        hits = np.full(n, -1, np.int8)
        lengths = np.zeros(n, np.int32)
        small: dict[int, np.ndarray] = {}
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i in order:  # a model of any input size: maps of several shapes in one chunk
            by_shape.setdefault(tuple(np.shape(explained[i].map)), []).append(i)
        for idx in by_shape.values():
            maps = np.stack([np.asarray(explained[i].map, np.float32) for i in idx])
            stats = batch_statistics(maps, [prepared[i].region for i in idx])
            for c in STAT_COLUMNS:
                numeric[c][idx] = stats.values[c]
            hits[idx] = stats.pointing_hit
            for i, m in zip(idx, compact_maps(maps, self.config.map_side)):
                small[i] = m
                cols["map_height"][i], cols["map_width"][i] = m.shape
                lengths[i] = m.size
        smalls = np.concatenate([small[i].reshape(-1) for i in order]) if order else np.zeros(0, np.uint8)
        predictions = dict(zip(order, self._predictions([explained[i] for i in order])))
        for c in PROVENANCE_COLUMNS:
            cols[c] = [self.config.provenance.get(c)] * n
        for i, p in enumerate(prepared):
            s = p.sample
            cols["id"][i], cols["path"][i], cols["label"][i] = s.id, s.path, s.label
            for g in self.config.groups:
                cols[g][i] = s.groups.get(g)
            if i not in explained:
                cols["error"][i] = errors.get(i, "not explained")
                continue
            done = explained[i]
            k, conf, top, probs = predictions[i]
            if k is not None:
                cols["prediction"][i], cols["prediction_index"][i], cols["confidence"][i] = self._name(k), k, conf
                cols["top_k_classes"][i], cols["top_k_scores"][i] = [self._name(c) for c in top], probs
                cols["correct"][i] = None if s.label is None else s.label == self._name(k)
            e = done.record.get("explained_class")
            e = None if e is None else int(e)
            cols["explained"][i], cols["explained_index"][i] = self._name(e), e
        arrays = []
        for f in self.schema:
            if f.name == "map":
                offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
                mask = pa.array(lengths == 0)
                arrays.append(pa.ListArray.from_arrays(pa.array(offsets), pa.array(smalls, pa.uint8()), mask=mask))
            elif f.name in numeric:
                v = numeric[f.name]
                arrays.append(pa.array(v.astype(np.float32), f.type, mask=np.isnan(v)))
            elif f.name == "pointing_hit":
                arrays.append(pa.array(hits == 1, f.type, mask=hits < 0))
            else:
                arrays.append(pa.array(cols[f.name], f.type))
        return pa.Table.from_arrays(arrays, schema=self.schema)


def file_sha256(path: str | Path) -> str:
    """The hex SHA-256 of a file's bytes (read in 1 MiB chunks)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
