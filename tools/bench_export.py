"""Benchmark: the exported CAM model (``camcore.export_cam_model``) against plain inference of the original.

For every model (the demo classifier, the ResNet-18 of ``tests/golden`` at its 96x96, and any ONNX
file or folder given on the command line, e.g. a 224x224 ResNet-18 from ``tools/torch_models.py``),
exported at its default layer (the last stage) with ``--method`` and timed at each batch size on:

  * onnxruntime: both models in sessions built exactly as camcore builds its own
    (``camcore.runtime.Session``: same providers, threads, log level and optimisation level),
    timed on the raw ``InferenceSession.run``;
  * OpenVINO (when the ``openvino`` wheel is importable): both compiled for CPU with f32
    inference precision and the same thread setting, timed on ``InferRequest.infer``.

The exported model is fed its image input only (``class`` keeps its default, -1 = top-1), so it
returns the prediction and the map in one run, against the prediction alone. Every figure is a
median over alternating blocks (see ``bench_gradcam.py``), and ``A/A`` times the plain model
against itself (a second session) as the noise floor of the machine; goal: export / plain <= 1.10 at batch 1.
``--profile`` adds onnxruntime's per-node profile of both models at batch 1: the time per op type
in each, and the export's slowest nodes that the plain model does not have; and OpenVINO's
kernel time of both (``PERF_COUNT``), against which its wall time shows its per-inference overhead.

    python tools/bench_export.py [MODEL.onnx | FOLDER ...] [--no-repo] [--method gradcam]
                                 [--repeats 60] [--batches 1] [--threads N] [--profile]
    # a 224x224 ResNet-18 (needs torch):
    /work/xcenv/bin/python -c "import sys; sys.path.insert(0, 'tools'); from pathlib import Path; \\
        from torch_models import export_classifier; export_classifier('resnet18', Path('/tmp/resnet18.onnx'))"
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from bench_gradcam import _block_medians
from bench_reach import Case, _input_of, _path_cases

ROOT = Path(__file__).resolve().parents[1]


def _repo_cases() -> list[Case]:
    from camcore.demo import DEMO_MODEL

    sys.path.insert(0, str(ROOT))
    from tests.golden_models import load_manifest, rebuild_model

    golden = ROOT / "tests" / "golden" / "resnet18.onnx"
    cases = [Case("demo", "camcore.demo.DEMO_MODEL", str(DEMO_MODEL))]
    if golden.exists():  # stored without weights: put back from their recipes
        model = rebuild_model(onnx.load(str(golden)), load_manifest("resnet18"))
        cases.append(Case("resnet18", "golden: torchvision, legacy exporter", model))
    return cases


def _openvino() -> Any:
    try:
        import openvino
    except ImportError:
        return None
    return openvino


def _ov_request(ov: Any, path: str, threads: int | None, feeds: dict[str, np.ndarray],
                perf_count: bool = False) -> tuple[Any, dict[str, np.ndarray]]:  # fmt: skip
    """An OpenVINO CPU infer request (f32) on ``path`` and the feeds it takes (a ``class`` that
    OpenVINO folded to its default is not one)."""
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
    if perf_count:
        config["PERF_COUNT"] = True
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(path, "CPU", config)
    names = {name for port in compiled.inputs for name in port.get_names()}
    return compiled.create_infer_request(), {k: v for k, v in feeds.items() if k in names}


def _ov_infer(ov: Any, path: str, threads: int | None, feeds: dict[str, np.ndarray]) -> Callable[[], object]:
    request, fed = _ov_request(ov, path, threads, feeds)
    return lambda: request.infer(fed)


def _feeds_for(session: ort.InferenceSession, name: str, x: np.ndarray) -> dict[str, np.ndarray]:
    """The image, and -1 (top-1) for a ``class`` input the session requires."""
    feeds = {name: x}
    if any(i.name == "class" for i in session.get_inputs()):
        feeds["class"] = np.full(x.shape[0], -1, np.int64)
    return feeds


def _op_profile(path: str, feeds: dict[str, np.ndarray], threads: int | None, runs: int = 30) -> dict[str, dict]:
    """The median milliseconds of each node over ``runs`` (onnxruntime's profiler), by node name, with its op type."""
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = os.path.join(tmp, "ort")
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        for _ in range(3):
            session.run(None, feeds)
        session.end_profiling()  # drop the warm-up runs
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        for _ in range(runs):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    durations: dict[str, list[float]] = defaultdict(list)
    ops: dict[str, str] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            name = e["name"][: -len("_kernel_time")]
            ops[name] = e.get("args", {}).get("op_name", "?")
            durations[name].append(e["dur"] / 1e3)
    # the median run of each node: a run that the shared machine preempted does not count
    return {k: {"op": ops[k], "ms": statistics.median(v)} for k, v in durations.items()}


def _print_profile(name: str, plain: dict[str, dict], export: dict[str, dict]) -> None:
    by_op: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for i, profile in enumerate((plain, export)):
        for node in profile.values():
            by_op[node["op"]][i] += node["ms"]
    total = [sum(v[i] for v in by_op.values()) for i in range(2)]
    print(f"\n{name}: onnxruntime kernel time (sum of per-node medians), plain {total[0]:.3f} ms, ", end="")
    print(f"export {total[1]:.3f} ms")
    print("| op type | plain ms | export ms | extra ms |\n|---|---|---|---|")
    for op, (p, e) in sorted(by_op.items(), key=lambda kv: kv[1][0] - kv[1][1])[:12]:
        print(f"| {op} | {p:.3f} | {e:.3f} | {e - p:+.3f} |")
    extra = sorted(((v["ms"], k, v["op"]) for k, v in export.items() if k not in plain), reverse=True)
    added = sum(ms for ms, _, _ in extra)
    shared = sum(v["ms"] for k, v in export.items() if k in plain)
    print(f"\nnodes only in the export: {len(extra)}, {added:.3f} ms = {added / shared:.3f} of the nodes both have")
    print(f"({shared:.3f} ms, in the same runs): export / plain ~ {1 + added / shared:.3f} in kernel time alone")
    print("its slowest ones:")
    for ms, node, op in extra[:10]:
        print(f"  {ms:.3f} ms  {op}  {node}")


def _ov_profile(ov: Any, path: str, threads: int | None, feeds: dict[str, np.ndarray], runs: int = 30) -> float:
    """OpenVINO's kernel milliseconds per run (``PERF_COUNT``), summed over its nodes."""
    request, fed = _ov_request(ov, path, threads, feeds, perf_count=True)
    totals = []
    for i in range(runs + 3):
        request.infer(fed)
        if i >= 3:
            totals.append(sum(p.real_time.total_seconds() for p in request.profiling_info) * 1e3)
    return statistics.median(totals)


def _bench(case: Case, args: argparse.Namespace, tmp: Path, ov: Any) -> None:
    import camcore
    from camcore.runtime import Session

    proto = case.model if isinstance(case.model, onnx.ModelProto) else onnx.load(case.model)
    plain_path = str(tmp / f"{case.name}.onnx")
    onnx.save(proto, plain_path)
    export_path = str(tmp / f"{case.name}_cam.onnx")
    try:
        layers = camcore.GradCAM(proto, None).target_layers  # the default: the last stage
        camcore.export_cam_model(plain_path, export_path, layers=layers, method=args.method)
    except camcore.CamcoreError as exc:
        print(f"| {case.name} | skipped: {str(exc).splitlines()[0][:120]} |")
        return
    layer = ", ".join(layers)
    plain = Session(plain_path, threads=args.threads).session
    export = Session(export_path, threads=args.threads).session
    plain_again = Session(plain_path, threads=args.threads).session  # the noise floor: plain against itself
    for n in args.batches:
        name, x = _input_of(proto, n, args.size)
        plain_feeds, export_feeds = {name: x}, _feeds_for(export, name, x)
        fns: dict[str, Callable[[], object]] = {
            "ort plain": lambda f=plain_feeds: plain.run(None, f),
            "ort export": lambda f=export_feeds: export.run(None, f),
            "ort plain again": lambda f=plain_feeds: plain_again.run(None, f),
        }
        if ov is not None:
            fns["ov plain"] = _ov_infer(ov, plain_path, args.threads, plain_feeds)
            fns["ov export"] = _ov_infer(ov, export_path, args.threads, export_feeds)
            fns["ov plain again"] = _ov_infer(ov, plain_path, args.threads, plain_feeds)
        t = _block_medians(fns, args.repeats, rounds=args.rounds)
        for runtime in ("ort", "ov"):
            if f"{runtime} plain" not in t:
                continue
            p, e, again = t[f"{runtime} plain"], t[f"{runtime} export"], t[f"{runtime} plain again"]
            label = "onnxruntime" if runtime == "ort" else "OpenVINO"
            cells = [case.name, str(tuple(x.shape)), label, f"{p:.2f}", f"{e:.2f}", f"{e / p:.3f}x"]
            cells += [f"{again / p:.3f}x", f"`{layer}`"]
            print("| " + " | ".join(cells) + " |", flush=True)
        if args.profile and n == args.batches[0]:
            _print_profile(
                case.name,
                _op_profile(plain_path, plain_feeds, args.threads),
                _op_profile(export_path, export_feeds, args.threads),
            )
            if ov is not None:
                p, e = (
                    _ov_profile(ov, path, args.threads, f)
                    for path, f in [(plain_path, plain_feeds), (export_path, export_feeds)]
                )
                print(
                    f"OpenVINO kernel time (PERF_COUNT, median run): plain {p:.3f} ms, export {e:.3f} ms = {e / p:.3f}x"
                )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", type=Path, nargs="*", help="ONNX files or folders of them (absent ones are skipped)")
    ap.add_argument("--no-repo", action="store_true", help="leave out the repository's models")
    ap.add_argument("--method", default="gradcam")
    ap.add_argument("--repeats", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=10, help="alternating blocks per model (repeats are split over them)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1])
    ap.add_argument("--threads", type=int, default=None, help="threads per runtime (default: each runtime's own)")
    ap.add_argument("--size", type=int, default=224, help="height and width where the input's are dynamic")
    ap.add_argument("--profile", action="store_true", help="onnxruntime's per-node profile of both models")
    args = ap.parse_args()

    import camcore

    ov = _openvino()
    cases = [] if args.no_repo else _repo_cases()
    cases += list(_path_cases(args.models))
    print("# bench_export")
    print(f"machine: {platform.machine()} cpus={os.cpu_count()} threads={args.threads or 'each runtime default'}")
    versions = f"onnxruntime {ort.__version__}, OpenVINO {ov.__version__ if ov else 'absent'}"
    print(f"{versions}, camcore {camcore.__version__}, numpy {np.__version__}")
    print(f"method {args.method}; median of {args.repeats} runs per model in {args.rounds} alternating blocks;")
    print("A/A: the plain model timed again in a second session, against the first (the noise floor)\n")
    columns = ["model", "input", "runtime", "plain ms", "export ms", "export / plain", "A/A", "layer"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            _bench(case, args, Path(tmp), ov)


if __name__ == "__main__":
    main()
