"""Explain the bundled demo classifier on fresh scenes and score the localisation.

The package ships ``data/demo_classifier.onnx``, a small CNN trained by
``tools/train_demo_model.py`` on the synthetic scenes of :mod:`camcore.scenes`
(one shape on a cluttered background, its box known). :func:`run_demo`
generates scenes the model never saw, computes Grad-CAM maps with
:class:`camcore.GradCAM`, writes overlays, and reports two numbers:

* classifier accuracy: top-1 prediction equals the label;
* pointing-game accuracy: the peak of the map, at input resolution, falls
  inside the ground-truth box grown by :data:`POINTING_TOLERANCE` pixels on
  each side. The map explains the ground-truth class, as in the original
  pointing game (Zhang et al., "Top-down Neural Attention by Excitation
  Backprop", ECCV 2016, which uses a 15 px tolerance on full-size images).
  The strict score (no tolerance) is reported too.

:func:`run_audit_demo` (``camcore demo --audit``) audits the second bundled model,
``data/audit_classifier.onnx``, which ``tools/train_audit_model.py`` trained to
cheat: every training scene labelled with one class (``star``) carried a small
mark near the top-left corner (:mod:`camcore.shortcut_scenes`). It writes a
fresh dataset (70% of the stars marked, every other scene clean, 30% shot by a
washed-out camera, ``site`` B), runs :func:`camcore.audit.run` on it and
reports the findings: the planted class and site B are flagged, the other
classes are not.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from camcore.scenes import Scene, generate_batch

__all__ = [
    "AUDIT_GROUPS",
    "AUDIT_META",
    "AUDIT_MODEL",
    "DEMO_META",
    "DEMO_MODEL",
    "POINTING_TOLERANCE",
    "AuditDemoReport",
    "DemoReport",
    "format_audit_report",
    "format_report",
    "load_audit_meta",
    "load_demo_meta",
    "pointing_hits",
    "preprocess",
    "run_audit_demo",
    "run_demo",
    "write_audit_demo_data",
]

_DATA = resources.files("camcore") / "data"
#: The bundled demo classifier.
DEMO_MODEL = Path(str(_DATA / "demo_classifier.onnx"))
#: Its metadata: class names, preprocessing, target layer, training record.
DEMO_META = Path(str(_DATA / "demo_classifier.json"))
#: The audit demo's model, trained with a planted shortcut (``tools/train_audit_model.py``).
AUDIT_MODEL = Path(str(_DATA / "audit_classifier.onnx"))
#: Its metadata: class names, the planted class, preprocessing, target layer, training figures.
AUDIT_META = Path(str(_DATA / "audit_classifier.json"))
#: The group columns the audit demo compares.
AUDIT_GROUPS: tuple[str, ...] = ("site", "camera")
#: Pixels the ground-truth box is grown by, on each side, in the pointing game.
#: Half the stride (8 px) of the 12x12 target feature map at 96x96 input.
POINTING_TOLERANCE = 4
#: Scenes drawn as individual overlays and in the grid.
N_OVERLAYS = 16
#: Upscaling of the 96 px overlays in the written PNGs, for legibility.
_ZOOM = 3
_BATCH = 32


@dataclass
class DemoReport:
    """What :func:`run_demo` measured and wrote."""

    n: int
    seed: int
    classifier_accuracy: float
    pointing_accuracy: float
    pointing_accuracy_strict: float
    tolerance_px: int
    target_layer: str
    model_path: Path
    out_dir: Path
    overlay_paths: list[Path] = field(default_factory=list)
    grid_path: Path | None = None
    seconds: float = 0.0


def load_demo_meta() -> dict[str, Any]:
    """The metadata written by ``tools/train_demo_model.py``."""
    return json.loads(DEMO_META.read_text())


def preprocess(images: np.ndarray | Sequence[np.ndarray], meta: dict[str, Any]) -> np.ndarray:
    """Turn RGB ``uint8`` images ``(N, H, W, 3)`` into the model's float32 NCHW input."""
    x = np.asarray(images, dtype=np.float32) * np.float32(meta["scale"])
    x = (x - np.asarray(meta["mean"], np.float32)) / np.asarray(meta["std"], np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def pointing_hits(
    maps: np.ndarray, boxes: Sequence[tuple[int, int, int, int]], tolerance: int = POINTING_TOLERANCE
) -> np.ndarray:
    """Whether each map's peak lies in its box ``(x0, y0, x1, y1)`` grown by ``tolerance``.

    ``x1``/``y1`` are exclusive. Ties go to the first peak in row-major order.
    """
    n, _, w = maps.shape
    flat = maps.reshape(n, -1).argmax(axis=1)
    ys, xs = np.divmod(flat, w)
    b = np.asarray(boxes, dtype=np.int64).reshape(n, 4)
    return (
        (xs >= b[:, 0] - tolerance)
        & (xs < b[:, 2] + tolerance)
        & (ys >= b[:, 1] - tolerance)
        & (ys < b[:, 3] + tolerance)
    )


def _annotate(
    overlay: np.ndarray, scene: Scene, cam_map: np.ndarray, predicted: int, hit: bool, class_names: Sequence[str]
) -> np.ndarray:
    """Upscale an overlay and draw the box (green/red = hit/miss), the peak and the labels."""
    big = cv2.resize(overlay, None, fx=_ZOOM, fy=_ZOOM, interpolation=cv2.INTER_NEAREST)
    x0, y0, x1, y1 = scene.box
    colour = (0, 255, 0) if hit else (255, 0, 0)
    cv2.rectangle(big, (x0 * _ZOOM, y0 * _ZOOM), (x1 * _ZOOM - 1, y1 * _ZOOM - 1), colour, 2)
    py, px = np.unravel_index(int(np.argmax(cam_map)), cam_map.shape)
    cv2.drawMarker(big, (int(px) * _ZOOM + 1, int(py) * _ZOOM + 1), (255, 255, 255), cv2.MARKER_CROSS, 14, 2)
    text = f"{class_names[scene.label]} -> {class_names[predicted]}"
    # white text on a dark box: an outline drawn as thick text under thin text does not line up
    # in OpenCV 5, whose glyph advances depend on the thickness
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
    cv2.rectangle(big, (2, 2), (6 + tw, 6 + th + base), (0, 0, 0), cv2.FILLED)
    cv2.putText(big, text, (4, 4 + th), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return big


def _write_rgb(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")


def _grid(tiles: Sequence[np.ndarray], columns: int = 4, pad: int = 4) -> np.ndarray:
    """Tile equal-size RGB images into a grid with a white gutter."""
    h, w, _ = tiles[0].shape
    rows = (len(tiles) + columns - 1) // columns
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = tile
    return grid


def run_demo(
    out_dir: str | Path, n: int = 64, seed: int = 1234, providers: Sequence[str] | None = None, progress: bool = True
) -> DemoReport:
    """Explain the demo classifier on ``n`` fresh scenes and score the pointing game.

    Args:
        out_dir: folder for ``overlay_XX.png`` (the first :data:`N_OVERLAYS`
            scenes, ground-truth box and map peak drawn) and ``demo_grid.png``.
        n: number of scenes.
        seed: scene seed; training used seeds 0-2 and 777, so keep it apart.
        providers: onnxruntime execution providers, or ``None`` for the default.
        progress: print progress to stderr.

    Returns:
        The :class:`DemoReport`.
    """
    import camcore

    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = load_demo_meta()
    class_names = meta["class_names"]
    size = int(meta["input_size"][0])
    target_layer = str(meta["target_layer"])
    kwargs: dict[str, Any] = {} if providers is None else {"providers": list(providers)}
    cam = camcore.GradCAM(str(DEMO_MODEL), target_layers=[target_layer], **kwargs)

    scenes = generate_batch(n, seed, size)
    maps_parts: list[np.ndarray] = []
    preds_parts: list[np.ndarray] = []
    for start in range(0, n, _BATCH):
        batch = scenes[start : start + _BATCH]
        x = preprocess([s.image for s in batch], meta)
        targets = [camcore.ClassifierOutputTarget(s.label) for s in batch]
        maps_parts.append(np.asarray(cam(x, targets=targets), dtype=np.float32))
        preds_parts.append(np.asarray(cam.outputs[0]).argmax(axis=1))
        if progress:
            print(f"camcore demo: {min(start + _BATCH, n)}/{n} scenes", file=sys.stderr)
    maps = np.concatenate(maps_parts)
    preds = np.concatenate(preds_parts)
    labels = np.array([s.label for s in scenes])
    boxes = [s.box for s in scenes]
    hits = pointing_hits(maps, boxes)

    overlay_paths: list[Path] = []
    tiles: list[np.ndarray] = []
    for i in range(min(N_OVERLAYS, n)):
        ov = camcore.overlay(scenes[i].image, maps[i], alpha=0.5, colormap="jet", rgb=True)
        tile = _annotate(np.asarray(ov), scenes[i], maps[i], int(preds[i]), bool(hits[i]), class_names)
        path = out / f"overlay_{i:02d}.png"
        _write_rgb(path, tile)
        overlay_paths.append(path)
        tiles.append(tile)
    grid_path = None
    if tiles:
        grid_path = out / "demo_grid.png"
        _write_rgb(grid_path, _grid(tiles))

    return DemoReport(
        n=n,
        seed=seed,
        classifier_accuracy=float(np.mean(preds == labels)),
        pointing_accuracy=float(np.mean(hits)),
        pointing_accuracy_strict=float(np.mean(pointing_hits(maps, boxes, tolerance=0))),
        tolerance_px=POINTING_TOLERANCE,
        target_layer=target_layer,
        model_path=DEMO_MODEL,
        out_dir=out,
        overlay_paths=overlay_paths,
        grid_path=grid_path,
        seconds=time.perf_counter() - t0,
    )


def format_report(report: DemoReport) -> str:
    """A few human-readable lines summarising ``report``."""
    lines = [
        (f"camcore demo: {report.n} fresh scenes (seed {report.seed}), target layer {report.target_layer!r}"),
        f"  classifier accuracy:   {report.classifier_accuracy:6.1%}",
        (
            f"  pointing game:         {report.pointing_accuracy:6.1%} "
            f"(CAM peak inside the object box, +/-{report.tolerance_px} px)"
        ),
        f"  pointing game, strict: {report.pointing_accuracy_strict:6.1%} (no tolerance)",
        f"  overlays: {len(report.overlay_paths)} in {report.out_dir}",
    ]
    if report.grid_path is not None:
        lines.append(f"  grid:     {report.grid_path}")
    lines.append(f"  time:     {report.seconds:.1f} s")
    return "\n".join(lines)


# ---------------------------------------------------------------------- the audit demo
@dataclass
class AuditDemoReport:
    """What :func:`run_audit_demo` wrote and found.

    Attributes:
        n: scenes audited; seed: their seed.
        planted_class: the class whose training scenes all carried the mark.
        mark_rate: share of its audited scenes that carry the mark; site_b_rate: share of site B.
        model_path: the audited model.
        manifest: the generated dataset's ``manifest.csv``.
        audit_dir: the audit's folder (``samples.parquet``, ``summary.json``, ``report.html``).
        accuracy: the model's accuracy on the dataset (None without labels).
        flags: ``summary["flags"]``.
        seconds: the whole run.
    """

    n: int
    seed: int
    planted_class: str
    mark_rate: float
    site_b_rate: float
    model_path: Path
    manifest: Path
    audit_dir: Path
    accuracy: float | None
    flags: list[dict[str, Any]]
    seconds: float = 0.0

    @property
    def report_path(self) -> Path:
        """``report.html``."""
        return self.audit_dir / "report.html"

    @property
    def summary_path(self) -> Path:
        """``summary.json``."""
        return self.audit_dir / "summary.json"

    def shortcut_classes(self) -> list[str]:
        """The classes with a shortcut flag (``off_object`` or ``cluster``), in flag order."""
        from camcore.audit.analysis import SHORTCUT_KINDS

        names = [str(f["class"]) for f in self.flags if f.get("kind") in SHORTCUT_KINDS and f.get("class")]
        return list(dict.fromkeys(names))


def load_audit_meta() -> dict[str, Any]:
    """The metadata written by ``tools/train_audit_model.py``."""
    return json.loads(AUDIT_META.read_text())


def write_audit_demo_data(
    folder: str | Path, n: int, seed: int, *, planted: str | None, mark_rate: float = 0.7, site_b_rate: float = 0.3
) -> Path:
    """Generate ``n`` audit scenes (:func:`camcore.shortcut_scenes.generate_audit_batch`) into ``folder``.

    Args:
        folder: created; gets ``images/`` and ``manifest.csv`` (path, label, site, camera, marked, x0..y1).
        n: scenes; seed: their seed.
        planted: the class that may carry the mark, or None for clean data.
        mark_rate: share of the ``planted`` class's scenes that carry the mark.
        site_b_rate: share of scenes from site B (washed out).

    Returns:
        The manifest's path.
    """
    from camcore.shortcut_scenes import generate_audit_batch, write_audit_dataset

    size = int(load_audit_meta()["input_size"][0])
    scenes = generate_audit_batch(n, seed, size, planted=planted, mark_rate=mark_rate, site_b_rate=site_b_rate)
    return write_audit_dataset(folder, scenes)


def run_audit_demo(
    out_dir: str | Path,
    n: int = 300,
    seed: int = 4321,
    *,
    model: str | Path | None = None,
    mark_rate: float = 0.7,
    site_b_rate: float = 0.3,
    planted: bool = True,
    progress: bool = True,
    providers: Sequence[str] | None = None,
) -> AuditDemoReport:
    """Audit the shortcut model on a fresh generated dataset.

    Writes ``out_dir/data`` (the scenes and ``manifest.csv``) and ``out_dir/audit``
    (the audit; a previous demo's rows there are discarded, since the scenes are new).

    Args:
        out_dir: the demo's folder.
        n: scenes; seed: their seed (training used 100-102 and 900-901; keep apart).
        model: the model to audit (default :data:`AUDIT_MODEL`; the clean :data:`DEMO_MODEL`
            shows what an audit of a model without the shortcut looks like).
        mark_rate: share of the planted class's scenes that carry the mark.
        site_b_rate: share of scenes from site B.
        planted: False writes clean data (no mark at all).
        progress: progress bar and notes on stderr.
        providers: onnxruntime execution providers, or None for the default.

    Returns:
        The :class:`AuditDemoReport`.
    """
    import camcore.audit

    t0 = time.perf_counter()
    out = Path(out_dir)
    meta = load_audit_meta()
    planted_class = str(meta["planted_class"])
    manifest = write_audit_demo_data(
        out / "data", n, seed, planted=planted_class if planted else None, mark_rate=mark_rate, site_b_rate=site_b_rate
    )
    model_path = Path(model) if model is not None else AUDIT_MODEL
    layer = str(meta["target_layer"]) if model is None else None
    note = (lambda line: print(f"camcore demo: {line}", file=sys.stderr)) if progress else None
    _, summary = camcore.audit.run(
        model_path,
        manifest,
        out / "audit",
        layers=layer,
        groups=list(AUDIT_GROUPS),
        restart=True,
        progress=progress,
        providers=providers,
        note=note,
    )
    return AuditDemoReport(
        n=n,
        seed=seed,
        planted_class=planted_class,
        mark_rate=mark_rate if planted else 0.0,
        site_b_rate=site_b_rate,
        model_path=model_path,
        manifest=manifest,
        audit_dir=out / "audit",
        accuracy=summary.get("accuracy"),
        flags=list(summary.get("flags", [])),
        seconds=time.perf_counter() - t0,
    )


def _flag_line(flag: dict[str, Any]) -> str:
    where = flag.get("class") or (f"{flag.get('column')}={flag.get('value')}" if flag.get("column") else "")
    return f"    {flag.get('kind', '?'):<11} {where:<12} {flag.get('message', '')}"


def format_audit_report(report: AuditDemoReport) -> str:
    """A few lines: the data, where the report is, each finding, and whether the planted class was found."""
    acc = "n/a" if report.accuracy is None else f"{report.accuracy:.1%}"
    lines = [
        (
            f"camcore demo --audit: {report.n} fresh scenes (seed {report.seed}); {report.planted_class!r} carries "
            f"the mark on {report.mark_rate:.0%} of its scenes, site B (washed out) shot {report.site_b_rate:.0%}"
        ),
        f"  model:    {report.model_path.name} (accuracy {acc})",
        f"  data:     {report.manifest}",
        f"  report:   {report.report_path}",
        f"  summary:  {report.summary_path}",
        f"  findings: {len(report.flags)}",
        *(_flag_line(f) for f in report.flags),
    ]
    found = report.shortcut_classes()
    if report.planted_class in found:
        others = [c for c in found if c != report.planted_class]
        tail = f"; also flagged: {', '.join(others)}" if others else "; no other class is"
        lines.append(f"  the planted shortcut is found: {report.planted_class!r} is flagged{tail}")
    elif report.mark_rate > 0 and report.model_path == AUDIT_MODEL:
        lines.append(f"  the planted shortcut of {report.planted_class!r} was NOT flagged")
    lines.append(f"  time:     {report.seconds:.1f} s")
    return "\n".join(lines)
