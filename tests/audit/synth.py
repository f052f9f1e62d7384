"""Synthetic audit tables: scenes from :mod:`camcore.scenes` with maps synthesised, not computed.

A clean map is an object-centred Gaussian (sigma a third of the object's size) over low-frequency
noise, scaled to [0, 1] as a CAM is; a shortcut map is a Gaussian on a fixed spot near the top-left
corner (jittered by 2 px), where a planted mark would sit. Rows follow the audit contract's schema
(:func:`camcore.audit.worker.row_schema`) and their statistics come from
:mod:`camcore.audit.stats`, so the analysis sees what a real audit gives it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa

from camcore.audit.stats import STAT_COLUMNS, batch_statistics, box_region, compact_map
from camcore.audit.worker import row_schema
from camcore.scenes import CLASS_NAMES, OBJECT_SIZE_RANGE, Scene, draw_object, generate_batch

SIZE = 96
SPOT = (10.0, 10.0)  # where the planted mark's maps peak, px
PROVENANCE = {"model_sha256": "0" * 64, "layer": "conv", "method": "gradcam", "camcore_version": "test"}


@dataclass(frozen=True)
class Spec:
    """What to plant. ``shortcut``: the class whose maps go to the spot for a share ``shortcut_rate``
    of its samples; ``marked_rate``: the share of other classes' samples carrying the mark
    (predicted as the shortcut class, maps on the spot). ``site_b_error``: the error rate of group
    site=B (site A errs at ``base_error``). ``aligned``: every class's maps on the centre."""

    n: int = 600
    seed: int = 0
    shortcut: str | None = None
    shortcut_rate: float = 0.6
    marked_rate: float = 0.0
    base_error: float = 0.02
    site_b_error: float = 0.02
    regions: bool = True
    noise: float = 0.15
    #: every map on the image centre (+-2 px), whatever the class: an aligned dataset (faces, scans)
    aligned: bool = False
    #: share of site B's maps lost in noise (off the object, nowhere in particular): a camera the
    #: model cannot read, which is no shortcut
    site_b_lost: float = 0.0
    #: the class every mistake predicts (None: a random other class), as a washed-out camera's
    #: images all get called one class
    wrong_to: str | None = None
    #: lost maps peak in the top-left corner, though flat (zero padding's mark on an unreadable image)
    lost_corner: bool = False
    #: lost maps gather on the bottom-left edge (a blurred camera's frame edge is all the model sees)
    lost_edge: bool = False
    #: with a value, a third site "C" (a third of the samples) erring at this rate
    site_c_error: float | None = None


def _gauss(cx: float, cy: float, sigma: float, size: int = SIZE) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    return np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))


def _noise(rng: np.random.Generator, amount: float, size: int = SIZE) -> np.ndarray:
    coarse = rng.random((6, 6)).astype(np.float32)
    return amount * cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def _scaled(m: np.ndarray) -> np.ndarray:
    m = np.maximum(m, 0)
    lo, hi = m.min(), m.max()
    return ((m - lo) / (hi - lo)).astype(np.float32) if hi > lo else np.zeros_like(m, np.float32)


def _objects(n: int, seed: int) -> list[Scene]:
    """Scenes without their background (a black image): the objects placed as
    :func:`camcore.scenes.generate_scene` places them (class, size, position, angle), masks and
    boxes exact. Ten times faster than whole scenes, for tables whose images nobody looks at."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        label = int(rng.integers(len(CLASS_NAMES)))
        r = rng.uniform(*OBJECT_SIZE_RANGE) / 2.0
        cx, cy = rng.uniform(r + 1.0, SIZE - r - 1.0, 2)
        cover = np.zeros((SIZE, SIZE), np.uint8)
        draw_object(cover, label, cx, cy, r, rng.uniform(0, 2 * np.pi), (255, 255, 255))
        mask = cover > 0
        ys, xs = np.nonzero(mask)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        out.append(Scene(np.zeros((SIZE, SIZE, 3), np.uint8), label, box, mask))
    return out


def make_table(spec: Spec, image_dir: Path | None = None) -> pa.Table:
    """The table of ``spec.n`` synthetic samples; with ``image_dir``, whole scenes are drawn,
    written there as PNG and ``path`` points at them (else only the objects are placed)."""
    rng = np.random.default_rng(spec.seed + 1000)
    scenes = generate_batch(spec.n, spec.seed, SIZE) if image_dir is not None else _objects(spec.n, spec.seed)
    names = list(CLASS_NAMES)
    rows: dict[str, list] = {k: [] for k in row_schema(["site", "camera"], PROVENANCE).names}
    maps, regions = [], []
    for i, sc in enumerate(scenes):
        label = sc.class_name
        site = "B" if rng.random() < 0.5 else "A"
        if spec.site_c_error is not None:
            site = "ABC"[int(rng.integers(3))]
        camera = "x" if rng.random() < 0.5 else "y"
        x0, y0, x1, y1 = sc.box
        cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0)
        on_spot = False
        pred = label
        if spec.shortcut is not None:
            if label == spec.shortcut:
                on_spot = rng.random() < spec.shortcut_rate
            elif rng.random() < spec.marked_rate:
                on_spot, pred = True, spec.shortcut
        err = {"B": spec.site_b_error, "C": spec.site_c_error}.get(site) or spec.base_error
        if pred == label and rng.random() < err:
            pred = names[(names.index(label) + 1 + int(rng.integers(len(names) - 1))) % len(names)]
            if spec.wrong_to is not None and label != spec.wrong_to:
                pred = spec.wrong_to
        if spec.aligned:
            m = _gauss(SIZE / 2 + rng.uniform(-2, 2), SIZE / 2 + rng.uniform(-2, 2), 8.0)
        elif site == "B" and rng.random() < spec.site_b_lost:  # noise, and a faint blob anywhere
            m = 0.3 * _gauss(*rng.uniform(8, SIZE - 8, 2), rng.uniform(6, 16)) + _noise(rng, 1.0)
            if spec.lost_edge:  # energy on the frame's bottom-left edge
                m = _gauss(2 + rng.uniform(-2, 2), SIZE - 3 + rng.uniform(-2, 2), 6.0)
            if spec.lost_corner:  # flat, but its highest pixel in the corner
                m = 0.5 + 0.02 * _noise(rng, 1.0)
                m[:3, :3] = 1.0
        elif on_spot:
            jx, jy = rng.uniform(-2, 2, 2)
            m = _gauss(SPOT[0] + jx, SPOT[1] + jy, 5.0)
        else:
            m = _gauss(cx + rng.normal(0, 2), cy + rng.normal(0, 2), side / 3)
        maps.append(_scaled(m + _noise(rng, spec.noise)))
        regions.append(box_region(sc.box, (SIZE, SIZE), (SIZE, SIZE)) if spec.regions else None)
        sid = f"{label}/{i:05d}.png"
        path = str(image_dir / sid) if image_dir is not None else f"/nonexistent/{sid}"
        if image_dir is not None:
            (image_dir / label).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(path, cv2.cvtColor(sc.image, cv2.COLOR_RGB2BGR))
        conf = float(rng.uniform(0.5, 1.0))
        rows["id"].append(sid)
        rows["path"].append(path)
        rows["label"].append(label)
        rows["site"].append(site)
        rows["camera"].append(camera)
        rows["prediction"].append(pred)
        rows["prediction_index"].append(names.index(pred))
        rows["confidence"].append(conf)
        rows["top_k_classes"].append([pred])
        rows["top_k_scores"].append([conf])
        rows["correct"].append(pred == label)
        rows["explained"].append(pred)
        rows["explained_index"].append(names.index(pred))
        rows["error"].append(None)
        for k, v in PROVENANCE.items():
            rows[k].append(v)
    stats = batch_statistics(np.stack(maps), regions)
    for c in STAT_COLUMNS:
        rows[c] = [None if np.isnan(v) else float(v) for v in stats.values[c]]
    rows["pointing_hit"] = [None if h < 0 else bool(h) for h in stats.pointing_hit]
    small = [compact_map(m) for m in maps]
    rows["map"] = [s.reshape(-1).tolist() for s in small]
    rows["map_height"] = [s.shape[0] for s in small]
    rows["map_width"] = [s.shape[1] for s in small]
    return pa.Table.from_pydict(rows, schema=row_schema(["site", "camera"], PROVENANCE))


def big_table(n: int, n_classes: int = 5, seed: int = 0) -> pa.Table:
    """A large table built fast (no scenes): random object boxes, Gaussian maps drawn from a small
    bank, the stats columns random but valid. For size and speed checks only."""
    rng = np.random.default_rng(seed)
    names = [f"class_{i}" for i in range(n_classes)]
    bank = np.stack([compact_map(_scaled(_gauss(x, y, 8.0) + _noise(rng, 0.1)))
                     for x in np.linspace(15, 80, 8) for y in np.linspace(15, 80, 8)])  # fmt: skip
    pick = rng.integers(len(bank), size=n)
    label = rng.integers(n_classes, size=n)
    pred = np.where(rng.random(n) < 0.9, label, rng.integers(n_classes, size=n))
    flat = pa.array(bank[pick].reshape(-1))
    maps = pa.ListArray.from_arrays(pa.array(np.arange(0, n * 1024 + 1, 1024, dtype=np.int32)), flat)
    schema = row_schema(["site"], PROVENANCE)
    lab = np.asarray(names, dtype=object)[label]
    prd = np.asarray(names, dtype=object)[pred]
    cols = {
        "id": pa.array([f"img/{i:07d}.png" for i in range(n)]),
        "path": pa.array([f"/nonexistent/{i:07d}.png" for i in range(n)]),
        "label": pa.array(lab),
        "site": pa.array(np.where(rng.random(n) < 0.5, "A", "B")),
        "prediction": pa.array(prd),
        "prediction_index": pa.array(pred.astype(np.int32)),
        "confidence": pa.array(rng.uniform(0.3, 1, n).astype(np.float32)),
        "top_k_classes": pa.array([[p] for p in prd], pa.list_(pa.string())),
        "top_k_scores": pa.array([[0.5]] * n, pa.list_(pa.float32())),
        "correct": pa.array(label == pred),
        "explained": pa.array(prd),
        "explained_index": pa.array(pred.astype(np.int32)),
        "map": maps,
        "map_height": pa.array(np.full(n, 32, np.int16)),
        "map_width": pa.array(np.full(n, 32, np.int16)),
        "pointing_hit": pa.array(rng.random(n) < 0.9),
        "error": pa.array([None] * n, pa.string()),
    }
    for c in STAT_COLUMNS:
        cols[c] = pa.array(rng.uniform(0.0, 0.3 if c == "region_area" else 1.0, n).astype(np.float32))
    for k, v in PROVENANCE.items():
        cols[k] = pa.array([v] * n)
    return pa.Table.from_pydict({f.name: cols[f.name] for f in schema}, schema=schema)
