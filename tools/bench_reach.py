"""Benchmark: the cost of a camcore Grad-CAM call against plain inference, one model per class.

For every model (the reach set ``tests/reach``, the torchvision goldens ``tests/golden``, the
demo model, the tiny YOLO-like detector of ``tests/detector_models.py``, and any ONNX file or
folder given on the command line, e.g. realistic-size exports), at batch 1 and 8:

  * plain: the original model in an onnxruntime session built exactly as camcore builds its
    own (``camcore.runtime.Session``: same providers, threads, log level and the default graph
    optimisation level), timed on the raw ``InferenceSession.run``;
  * ort: the raw onnxruntime runs one camcore call makes (the augmented model; for an
    output-dependent target such as a detection box, the forward pass and the differentiated
    cut), replayed with the same feeds: plain + the graph's extra compute;
  * engine: ``Engine.run`` alone (the runs plus the engine's bookkeeping);
  * camcore: the whole call ``camcore.GradCAM(model, None)(x, targets)`` at the default
    layer (the last stage), maps resized to the input.

``--breakdown`` also times the Python parts of a call on their own: the input checks
(``Engine.feeds``), the layer maps (arrange + the method) and the assembly (ReLU, scaling,
resize). Every figure is a median over alternating blocks (see ``bench_gradcam.py``).

    python tools/bench_reach.py [MODEL.onnx | FOLDER ...] [--no-repo] [--repeats 30]
                                [--batches 1 8] [--threads N] [--breakdown]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from bench_gradcam import _block_medians

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Case:
    """One model to time: a path or an in-memory model, and a label for its class."""

    name: str
    kind: str
    model: str | onnx.ModelProto


def _repo_cases() -> list[Case]:
    from camcore.demo import DEMO_MODEL

    cases = []
    manifest_path = ROOT / "tests" / "reach" / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    for path in sorted((ROOT / "tests" / "reach").glob("*.onnx")):
        entry = manifest.get(path.stem, {})
        kind = f"reach: {entry.get('exporter', '?').split('(')[0].strip()}"
        cases.append(Case(path.stem, kind, str(path)))
    sys.path.insert(0, str(ROOT))
    from tests.detector_models import tiny_detector
    from tests.golden_models import load_manifest, rebuild_model

    for path in sorted((ROOT / "tests" / "golden").glob("*.onnx")):
        # stored without weights: put back from their recipes
        model = rebuild_model(onnx.load(str(path)), load_manifest(path.stem))
        cases.append(Case(path.stem, "golden: torchvision, legacy exporter", model))
    cases.append(Case("demo", "camcore.demo.DEMO_MODEL", str(DEMO_MODEL)))

    cases.append(Case("tiny_detector", "YOLO-like head (tests/detector_models.py)", tiny_detector()))
    return cases


def _path_cases(paths: list[Path]) -> Iterator[Case]:
    for p in paths:
        files = sorted(p.glob("*.onnx")) if p.is_dir() else [p]
        for f in files:
            if f.exists():
                yield Case(f.stem, "given", str(f))
            else:
                print(f"skipped {f}: absent", file=sys.stderr)


def _input_of(model: onnx.ModelProto, batch: int, size: int) -> tuple[str, np.ndarray]:
    """The first graph input and a random array of its type for it (dynamic dims after the batch: ``size``)."""
    inits = {i.name for i in model.graph.initializer}
    first = next(i for i in model.graph.input if i.name not in inits)
    dims = [d.dim_value if d.dim_value > 0 else size for d in first.type.tensor_type.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(first.type.tensor_type.elem_type)
    x = np.random.default_rng(batch).standard_normal((batch, *dims[1:])).astype(dtype)
    return first.name, x


def _targets_for(cam: Any) -> list[Any] | None:
    """None (top-1 class, in the graph) for a classifier; a detection box for an (N, A, B) head."""
    import camcore

    shape = cam.engine.output_shape()
    if shape is not None and len(shape) == 3:
        rows, cols = shape[1], shape[2]
        wide = isinstance(rows, int) and (not isinstance(cols, int) or rows < cols)  # (4 + classes, boxes)
        layout = "channels_first" if wide else "boxes_first"
        return [camcore.DetectionBoxTarget(label=0, layout=layout)]
    return None


@contextmanager
def _recorded_runs(runs: list[tuple[Any, list[str], dict[str, np.ndarray]]]) -> Iterator[None]:
    """Record the raw onnxruntime runs made through :class:`camcore.runtime.Session`."""
    from camcore.runtime import Session

    original = Session.run

    def spy(self: Session, feeds: Any, outputs: Any = None) -> dict[str, np.ndarray]:
        names = list(outputs) if outputs is not None else self.output_names
        runs.append((self.session, names, dict(feeds)))
        return original(self, feeds, outputs)

    Session.run = spy  # type: ignore[method-assign]
    try:
        yield
    finally:
        Session.run = original  # type: ignore[method-assign]


def _python_parts(
    cam: Any, x: np.ndarray, feeds: dict[str, np.ndarray], targets: Any
) -> dict[str, Callable[[], object]]:
    """The Python parts of a call, each on its own: input checks, layer maps, assembly."""
    from camcore.maps import assemble

    call = cam.context(feeds)
    result = cam.engine.run(feeds, targets, layers=cam.target_layers)
    layer_maps = cam._layer_maps(call, feeds, targets, result, False)
    return {
        "feeds": lambda: cam.engine.feeds(x),
        "layer maps": lambda: cam._layer_maps(call, feeds, targets, result, False),
        "assemble": lambda: assemble(layer_maps, call.input_size),
    }


def _bench(case: Case, batches: list[int], repeats: int, threads: int | None, size: int, breakdown: bool) -> None:
    import camcore
    from camcore.runtime import Session

    try:
        cam = camcore.GradCAM(case.model, None, threads=threads)
    except camcore.CamcoreError as exc:
        print(f"| {case.name} | skipped: {str(exc).splitlines()[0][:120]} |")
        return
    proto = case.model if isinstance(case.model, onnx.ModelProto) else onnx.load(case.model)
    plain = Session(proto, threads=threads).session  # a proto: float16 models get camcore's session options
    targets = _targets_for(cam)
    engine = cam.engine
    for n in batches:
        name, x = _input_of(proto, n, size)
        feeds = engine.feeds(x)
        cam(x, targets)  # compile the sessions
        runs: list[tuple[Any, list[str], dict[str, np.ndarray]]] = []
        with _recorded_runs(runs):
            cam(x, targets)

        def replay(runs: list[tuple[Any, list[str], dict[str, np.ndarray]]] = runs) -> None:
            for session, names, f in runs:
                session.run(names, f)

        fns: dict[str, Callable[[], object]] = {
            "plain": lambda x=x, name=name: plain.run(None, {name: x}),
            "ort": replay,
            "engine": lambda feeds=feeds: engine.run(feeds, targets, layers=cam.target_layers),
            "camcore": lambda x=x: cam(x, targets),
        }
        if breakdown:
            fns.update(_python_parts(cam, x, feeds, targets))
        t = _block_medians(fns, repeats)
        cells = [case.name, f"{tuple(x.shape)}", str(n), f"{t['plain']:.2f}", f"{t['ort']:.2f}", f"{t['engine']:.2f}"]
        cells += [f"{t['camcore']:.2f}", f"{t['ort'] / t['plain']:.2f}x", f"{t['camcore'] / t['plain']:.2f}x"]
        if breakdown:
            python = t["camcore"] - t["ort"]
            cells += [f"{t['engine'] - t['ort']:.3f}", f"{t['feeds']:.3f}", f"{t['layer maps']:.3f}"]
            cells += [f"{t['assemble']:.3f}", f"{python:.3f}"]
        layers = ", ".join(f"`{k}`" for k in cam.target_layers)
        cells += [layers if n == batches[0] else ""]
        print("| " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", type=Path, nargs="*", help="ONNX files or folders of them (absent ones are skipped)")
    ap.add_argument("--no-repo", action="store_true", help="leave out the repository's models")
    ap.add_argument("--only", nargs="+", help="only the models with these names (file stems, 'demo', 'tiny_detector')")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: onnxruntime's, as camcore)")
    ap.add_argument("--size", type=int, default=224, help="height and width where the input's are dynamic")
    ap.add_argument("--breakdown", action="store_true", help="also time the Python parts of a call")
    args = ap.parse_args()

    import camcore

    cases = [] if args.no_repo else _repo_cases()
    cases += list(_path_cases(args.models))
    if args.only:
        cases = [c for c in cases if c.name in args.only]

    print("# bench_reach")
    print(f"machine: {platform.machine()} cpus={os.cpu_count()} threads={args.threads or 'onnxruntime default'}")
    print(f"onnxruntime {ort.__version__}, camcore {camcore.__version__}, numpy {np.__version__}")
    print(f"median of {args.repeats} calls per engine in 3 alternating blocks; GradCAM at the default layer\n")
    columns = ["model", "input", "batch", "plain ms", "ort ms", "engine ms", "camcore ms", "ort / plain"]
    columns += ["camcore / plain"]
    if args.breakdown:
        columns += ["engine - ort ms", "feeds ms", "layer maps ms", "assemble ms", "camcore - ort ms"]
    columns += ["layer"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for case in cases:
        _bench(case, args.batches, args.repeats, args.threads, args.size, args.breakdown)


if __name__ == "__main__":
    main()
