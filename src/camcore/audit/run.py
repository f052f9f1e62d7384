"""``camcore.audit.run``: explain a whole labelled dataset into ``samples.parquet``, summary.json
and report.html.

The order of work:

1. **Check everything** before any inference: DATA (:func:`~camcore.audit.dataset.load_dataset`),
   ``--out`` (never an input, never inside a folder DATA), the model, layers, method, task and
   preprocessing, the class names (``--classes``, else the model's metadata, else the sorted
   distinct labels when their count equals the outputs, else indices) and every label against
   them. A problem is one line (:class:`CamcoreError`).
2. **Rows**: the samples not stored yet go through the engine (``local``:
   :func:`~camcore.audit.local.run_local`; ``ray``: ``camcore.audit.ray_engine``), each row
   made by :class:`~camcore.audit.worker.AuditWorker` and stored as parts of
   ``samples.parquet`` (:class:`~camcore.audit.store.SampleStore`: resumable, provenance
   checked).
3. **Analysis**: the weight-randomisation sanity check, ``summarize`` and the report of
   :mod:`camcore.audit.analysis` / :mod:`camcore.audit.report`; summary.json written atomically.

Example:
    >>> table, summary = camcore.audit.run("model.onnx", "val/", "audit-out")   # doctest: +SKIP
    >>> summary["counts"], [f["kind"] for f in summary["flags"]]                # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa

from camcore.audit.dataset import Dataset, check_labels, load_dataset
from camcore.audit.store import PARTS, SampleStore, load_samples
from camcore.audit.worker import AuditConfig, AuditWorker, file_sha256
from camcore.errors import CamcoreError

__all__ = ["ENGINES", "OUTPUTS", "parse_classes", "resolve_class_names", "run"]

ENGINES = ("local", "ray")
#: what an audit writes into its folder
OUTPUTS = (PARTS, "summary.json", "report.html")
#: samples the weight-randomisation check explains twice
SANITY_SAMPLES = 8


def parse_classes(text: str) -> list[str]:
    """``--classes``: a text file with one name per line (blank lines skipped), or names
    separated by commas.

    Raises:
        CamcoreError: no names, or a name given twice.
    """
    path = Path(text)
    if path.is_file():
        try:
            names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise CamcoreError(f"cannot read --classes file {text!r}: {exc}") from None
        where = f"--classes file {text!r}"
    else:
        names = [n.strip() for n in text.split(",")]
        where = "--classes"
        if any(not n for n in names):
            raise CamcoreError(f"--classes {text!r} has an empty name: names separated by commas, or a file with one "
                               "name per line")  # fmt: skip
    if not names:
        raise CamcoreError(f"{where} lists no class names")
    dup = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if dup is not None:
        raise CamcoreError(f"{where} names {dup!r} twice: each class once, in the model's output order")
    return names


def resolve_class_names(given: Sequence[str] | None, metadata: Sequence[str] | None, labels: Sequence[str],
                        outputs: int | None) -> tuple[list[str] | None, str]:  # fmt: skip
    """The class names and where they came from: ``"--classes"``, ``"model metadata"``,
    ``"labels"`` (the sorted distinct labels, when their count equals the outputs: the
    ImageFolder convention) or ``"indices"`` (None).

    Raises:
        CamcoreError: ``--classes`` or the metadata's names do not match the number of outputs.
    """
    if given is not None:
        if outputs is not None and len(given) != outputs:
            raise CamcoreError(f"--classes gives {len(given)} names but the model has {outputs} outputs: one name "
                               "per output, in output order")  # fmt: skip
        return list(given), "--classes"
    if metadata:
        if outputs is not None and len(metadata) != outputs:
            raise CamcoreError(f"the model's metadata lists {len(metadata)} class names but the model has {outputs} "
                               "outputs: pass --classes")  # fmt: skip
        return list(metadata), "model metadata"
    if labels and outputs is not None and len(labels) == outputs:
        return sorted(labels), "labels"
    return None, "indices"


def _check_out(out: Path, model: str | Path, data: Dataset) -> Path:
    """``--out``: not DATA, not inside a folder DATA, and none of its outputs an input (the
    manifest, an image or a mask: compared as absolute paths, without a file system call each)."""
    from camcore.files import output_folder

    resolved = out.resolve()
    if data.kind == "folder" and (resolved == data.root or data.root in resolved.parents):
        raise CamcoreError(f"--out {str(out)!r} lies inside DATA {str(data.source)!r}, where it would become a class "
                           "folder: choose a folder outside DATA")  # fmt: skip
    mine = [os.path.join(str(base), name) for base in {str(resolved), os.path.abspath(out)} for name in OUTPUTS]
    inputs = [str(Path(model).resolve()), str(data.source.resolve())]
    if data.kind == "manifest":
        inputs += [os.path.abspath(s.path) for s in data.samples]
        inputs += [os.path.abspath(s.mask) for s in data.samples if s.mask is not None]
    clash = next((p for p in inputs if any(p == m or p.startswith(m + os.sep) for m in mine)), None)
    if clash is not None:
        raise CamcoreError(f"--out {str(out)!r} would overwrite the input {clash!r}: choose another --out, camcore "
                           "never overwrites its input")  # fmt: skip
    return output_folder(out, [model, data.source], "--out")


def run(
    model: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    layers: Sequence[str] | str | None = None,
    method: str = "gradcam",
    task: str | None = None,
    size: tuple[int, int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    bgr: bool = False,
    nhwc: bool | None = None,
    batch_size: int = 16,
    classes: Sequence[str] | str | None = None,
    groups: Sequence[str] | str = (),
    engine: str = "local",
    restart: bool = False,
    progress: bool = True,
    output: str | None = None,
    providers: Sequence[str] | None = None,
    threads: int | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
    note: Any = None,
) -> tuple[pa.Table, dict[str, Any]]:
    """Audit ``model`` on ``data`` into the folder ``out``: returns the rows (sorted by id) and
    the summary (also written to ``out/summary.json``).

    Args:
        model: the .onnx classifier.
        data: a folder of class sub-folders, or a CSV/Parquet manifest (:mod:`camcore.audit.dataset`).
        out: the output folder (created; a rerun resumes it).
        layers, method, task, output, providers: as for ``camcore explain``.
        size, mean, std, bgr, nhwc: the preprocessing (default: the model's input size, layout and
            metadata, else ImageNet's statistics).
        batch_size: images per model run.
        classes: class names (a list, a comma-separated string or a file with one per line).
        groups: the manifest's group columns (a list or ``"col1,col2"``).
        engine: ``"local"`` or ``"ray"``.
        restart: discard stored rows of another model, layer, method or preprocessing.
        progress: show a progress bar (on a terminal).
        threads: onnxruntime intra-op threads per worker (default: 1 on the CPU, onnxruntime's on a GPU).
        workers: inference threads (default: the cores on the CPU, 1 on a GPU).
        ray_address: the Ray cluster (``engine="ray"``; default: a local Ray).
        note: called with one-line notes for the user (default: none).

    Raises:
        CamcoreError: any bad input, before any inference (one line).
        KeyboardInterrupt: after the rows done are stored (rerun to resume).
    """
    import camcore
    from camcore.arguments import preprocessing
    from camcore.cam import cam_class
    from camcore.preprocess import read_model_metadata
    from camcore.runtime import select_providers

    say = note or (lambda line: None)
    if engine not in ENGINES:
        raise CamcoreError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    if engine == "ray":
        _ray_engine()  # missing: said before any work
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise CamcoreError(f"batch size must be a whole number >= 1, got {batch_size!r}")
    if isinstance(groups, str):
        groups = [g.strip() for g in groups.split(",") if g.strip()]
    given = parse_classes(classes) if isinstance(classes, str) else (None if classes is None else list(classes))
    model = str(model)
    if not Path(model).is_file():
        what = "is a folder" if Path(model).is_dir() else "does not exist"
        raise CamcoreError(f"model {model!r} {what}: give the .onnx file (camcore audit MODEL DATA --out DIR)")
    dataset = load_dataset(data, groups)
    out_dir = _check_out(Path(out), model, dataset)

    on_gpu = select_providers(providers).providers[0] != "CPUExecutionProvider"
    if threads is None and not on_gpu:
        threads = 1

    def build(name: str | None) -> Any:
        return cam_class(method)(model, layers, output=name, providers=providers, threads=threads)

    cam = build(output)
    options = SimpleNamespace(size=size, mean=None if mean is None else list(mean),
                              std=None if std is None else list(std), bgr=bgr, nhwc=nhwc is True,
                              nchw=nhwc is False)  # fmt: skip
    pre, pre_note = preprocessing(options, cam.engine, model)  # type: ignore[arg-type]
    cam, choice = _task(cam, task, output is not None, pre, build)
    outputs = cam.engine.class_count() if choice.task.name == "classify" else None
    metadata = read_model_metadata(cam.engine.model, model).class_names
    names, names_source = resolve_class_names(given, metadata, dataset.labels, outputs)
    if names is not None:
        check_labels(dataset.samples, names, names_source)
    elif dataset.labels:
        raise CamcoreError(f"the samples are labelled ({', '.join(dataset.labels[:5])}, ...) but the class names are "
                           f"unknown ({len(dataset.labels)} labels, {outputs} outputs, no names in the model's "
                           "metadata): pass --classes")  # fmt: skip

    provenance = {
        "model_sha256": file_sha256(model),
        "layer": ",".join(cam.target_layers),
        "method": cam.method.key,
        "camcore_version": camcore.__version__,
        "output": cam.engine.output,
        "task": choice.task.name,
        "input_size": None if pre.size is None else list(pre.size),
        "mean": [float(v) for v in pre.mean],
        "std": [float(v) for v in pre.std],
        "bgr": pre.bgr,
        "nhwc": pre.nhwc,
        "class_names": names,
        "groups": list(dataset.groups),
        "map_side": 32,
    }
    config = AuditConfig(
        model=str(Path(model).resolve()), method=cam.method.key, layers=tuple(cam.target_layers),
        output=cam.engine.output, task=choice.task.name, size=pre.size,
        mean=(float(pre.mean[0]), float(pre.mean[1]), float(pre.mean[2])),
        std=(float(pre.std[0]), float(pre.std[1]), float(pre.std[2])), bgr=pre.bgr, nhwc=pre.nhwc,
        batch_size=batch_size, class_names=None if names is None else tuple(names), groups=tuple(dataset.groups),
        provenance=provenance, threads=threads, providers=None if providers is None else tuple(providers),
    )  # fmt: skip
    worker = AuditWorker(config, cam)

    t0 = time.perf_counter()
    with SampleStore(out_dir, worker.schema, restart=restart) as store:  # the last check: now the work starts
        say(pre_note)
        done = store.done_ids()
        todo = [s for s in dataset.samples if s.id not in done]
        if done:
            say(f"resuming: {len(dataset.samples) - len(todo)} of {len(dataset.samples)} samples already in "
                f"{out_dir / PARTS}")  # fmt: skip
        engine_summary = _rows(engine, worker, todo, store, progress, workers, ray_address)
    engine_summary["seconds_total"] = round(time.perf_counter() - t0, 3)

    table = load_samples(out_dir)
    wanted = {s.id for s in dataset.samples}
    if len(wanted) != table.num_rows or not set(table.column("id").to_pylist()) <= wanted:
        import pyarrow.compute as pc

        stored = table.num_rows
        table = table.filter(pc.is_in(table.column("id"), pa.array(sorted(wanted), pa.string())))
        say(f"{stored - table.num_rows} stored row(s) are of samples no longer in DATA: left out of the summary")
    summary = _analyse(table, worker, dataset, names, names_source, provenance, model, choice.task.name, out_dir)
    summary["engine"] = engine_summary
    text = json.dumps(summary, indent=2, allow_nan=False)
    from camcore.files import atomic_write

    atomic_write(out_dir / "summary.json", lambda tmp: tmp.write_text(text))
    return table, summary


def _task(cam: Any, task: str | None, explicit: bool, pre: Any, build: Any) -> tuple[Any, Any]:
    """The task of the run (``--task`` or read from the outputs' shapes) and the CAM on the output
    it explains (a detector's scores next to its boxes: another output than the first)."""
    from camcore.tasks import TaskOptions
    from camcore.tasks.registry import choose_task_for

    return choose_task_for(cam, task, TaskOptions(), explicit_output=explicit, input_hw=pre.size, nhwc=pre.nhwc,
                           rebuild=build)  # fmt: skip


def _ray_engine() -> Any:
    """``camcore.audit.ray_engine`` (imported when asked for: Ray is an optional extra).

    Raises:
        CamcoreError: the module or Ray is missing (one line, with the fix).
    """
    try:
        return importlib.import_module("camcore.audit.ray_engine")
    except ModuleNotFoundError as exc:
        if exc.name != "camcore.audit.ray_engine":
            raise CamcoreError(f"--engine ray needs {exc.name!r}: pip install 'camcore[ray]'") from None
        raise CamcoreError("--engine ray is not available in this camcore yet (camcore.audit.ray_engine is "
                           "missing): use --engine local") from None  # fmt: skip


def _rows(engine: str, worker: AuditWorker, todo: list[Any], store: SampleStore, progress: bool,
          workers: int | None, ray_address: str | None) -> dict[str, Any]:  # fmt: skip
    """Run the engine over ``todo`` into ``store``, with a progress bar; the engine's figures."""
    from camcore.arguments import progress as progress_bar

    bar = progress_bar(len(todo), "camcore audit", "img") if progress and todo else None
    on_rows = None if bar is None else (lambda table: bar.update(table.num_rows))
    try:
        if engine == "local":
            from camcore.audit.local import run_local

            return run_local(worker, todo, store, workers=workers, on_rows=on_rows).summary()
        ray_engine = _ray_engine()
        return dict(ray_engine.run_ray(worker.config, todo, store, address=ray_address, on_rows=on_rows))
    finally:
        if bar is not None:
            bar.close()


def _sanity(table: pa.Table, worker: AuditWorker, dataset: Dataset, task: str) -> dict[str, Any] | None:
    """The weight-randomisation check (:func:`camcore.audit.analysis.sanity_check`) on the first
    explained samples (by id), each explaining the class its row explained; None when no sample
    was explained or the task is not a classifier's."""
    import numpy as np

    from camcore.audit.analysis import sanity_check
    from camcore.targets import ClassifierOutputTarget

    if task != "classify":
        return None
    ok = table.filter(table.column("error").is_null())
    if ok.num_rows == 0:
        return None
    ok = ok.slice(0, SANITY_SAMPLES)
    by_id = {s.id: s for s in dataset.samples}
    prepared = [worker.prepare(by_id[i]) for i in ok.column("id").to_pylist()]
    inputs = {j: p.x for j, p in enumerate(prepared) if p.x is not None}
    if not inputs:
        return None
    shape = next(iter(inputs.values())).shape
    keep = [j for j, x in inputs.items() if x.shape == shape]  # one batch: the inputs of the first one's size
    x = np.stack([inputs[j] for j in keep])
    explained = ok.column("explained_index").to_pylist()
    targets = [ClassifierOutputTarget(int(explained[j])) for j in keep]
    return sanity_check(worker.cam, x, targets, n=len(keep))


def _analyse(table: pa.Table, worker: AuditWorker, dataset: Dataset, names: list[str] | None, names_source: str,
             provenance: dict[str, Any], model: str, task: str, out_dir: Path) -> dict[str, Any]:  # fmt: skip
    """summary.json's content (:func:`camcore.audit.analysis.summarize`, with the sanity check) and
    the report (:func:`camcore.audit.report.write_report`), whose path it records."""
    from camcore.audit.analysis import AuditContext, summarize
    from camcore.audit.report import write_report

    if names is None:  # indices: as many as the model's outputs, else as the predictions reach
        count = worker.cam.engine.class_count()
        if count is None:
            seen = [i for i in table.column("prediction_index").to_pylist() if i is not None]
            count = max(seen, default=-1) + 1
        names = [str(i) for i in range(count)]
    context = AuditContext(
        class_names=names,
        class_names_source=names_source,
        groups=list(dataset.groups),
        provenance={k: provenance[k] for k in ("model_sha256", "layer", "method", "camcore_version")},
        model_path=str(Path(model).resolve()),
        task=task,
        sanity=_sanity(table, worker, dataset, task),
    )
    summary = summarize(table, context)
    report = write_report(out_dir / "report.html", table, summary)
    summary["report"] = str(report)
    return summary
