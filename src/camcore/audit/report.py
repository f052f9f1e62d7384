"""The audit's report: one self-contained HTML file (``DIR/report.html``).

Rendered with Jinja2 (autoescape on: a class name, a path or an error message is text, never
markup) from ``templates/report.html.j2``. Everything is inside the file: the pictures are JPEG
``data:`` URIs, the style is inline, there is no script and no reference to anything outside, so
the file opens offline and can be mailed.

It opens with the findings (``summary["flags"]``), each with pictures: the class's or cluster's
mean map, and overlays of its members. Then, per class: the mean map over the mean image, the
strategy clusters with their members' overlays, the class's subgroup table, the most confident
mistakes and the most atypical maps; then the subgroup tests and the failed samples.

Bounded at any dataset size: at most ``max_classes`` classes get pictures (flagged classes
first, then the least accurate), at most ``thumbs`` overlays per cluster, ``worst`` mistakes per
class, ``max_rows`` rows per table and ``max_images`` pictures in all; everything else stays in
``samples.parquet``. Thumbnails are ``thumb`` pixels on the long side. The overlays need the
images: they are read from the ``path`` column (or through ``images``); a missing or unreadable
file gives the map alone, marked "image missing".

Example:
    >>> write_report("audit/report.html", table, summary)   # doctest: +SKIP
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import jinja2
import numpy as np
import pyarrow as pa

from camcore.audit.analysis import SHORTCUT_KINDS, read_rows
from camcore.files import atomic_write
from camcore.postprocess import colorize, overlay

__all__ = ["TEMPLATE", "write_report"]

#: The template, shipped in the package.
TEMPLATE = Path(__file__).with_name("templates") / "report.html.j2"

ImageReader = Callable[[str], "np.ndarray | None"]


def _read_rgb(path: str) -> np.ndarray | None:
    """The image at ``path`` as RGB uint8, or None when it cannot be read."""
    try:
        data = np.fromfile(path, np.uint8)
    except (OSError, ValueError):
        return None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _jpeg(rgb: np.ndarray, quality: int = 78) -> str:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 RGB image
        raise ValueError("JPEG encoding failed")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


class _Pictures:
    """Thumbnails and overlays as data URIs, within a budget of ``max_images`` pictures."""

    def __init__(self, rows: Any, reader: ImageReader, paths: np.ndarray, thumb: int, max_images: int) -> None:
        self.rows, self.reader, self.paths = rows, reader, paths
        self.thumb, self.left = thumb, max_images
        self.index = {str(k): i for i, k in enumerate(rows.ids)}
        self._cache: dict[int, np.ndarray | None] = {}
        self.skipped = 0

    def _take(self) -> bool:
        if self.left <= 0:
            self.skipped += 1
            return False
        self.left -= 1
        return True

    def image(self, i: int) -> np.ndarray | None:
        """Row ``i``'s image as a thumbnail (long side ``thumb``), or None."""
        if i not in self._cache:
            path = self.paths[i]
            img = self.reader(str(path)) if path is not None else None
            if img is not None and img.ndim == 3 and img.shape[2] >= 3 and img.size:
                img = np.ascontiguousarray(img[..., :3], np.uint8)
                h, w = img.shape[:2]
                s = self.thumb / max(h, w)
                size = (max(1, round(w * s)), max(1, round(h * s)))
                img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
            else:
                img = None
            self._cache[i] = img
        return self._cache[i]

    def sample(self, sid: str, caption: str) -> dict[str, Any] | None:
        """One sample's overlay (or its map alone when the image is missing)."""
        i = self.index.get(sid)
        if i is None or not self._take():
            return None
        cam = self.rows.maps_of(i)
        img = self.image(i)
        missing = img is None
        pic = colorize(cv2.resize(cam, (self.thumb, self.thumb)), "jet") if img is None else overlay(img, cam, 0.45)
        rows = self.rows
        return {
            "src": _jpeg(pic),
            "id": sid,
            "caption": caption,
            "missing": missing,
            "title": f"{sid}: label {rows.label[i]}, predicted {rows.prediction[i]} ({_pct(rows.confidence[i])})",
        }

    def mean(self, members: np.ndarray, mean_map: np.ndarray, limit: int = 32) -> str | None:
        """The mean map over the mean image of up to ``limit`` members (the map alone without images)."""
        if not self._take():
            return None
        side = self.thumb
        imgs = [self.image(int(i)) for i in members[:limit]]
        imgs = [cv2.resize(m, (side, side), interpolation=cv2.INTER_AREA) for m in imgs if m is not None]
        cam = np.ascontiguousarray(mean_map, np.float32)
        if not imgs:
            return _jpeg(colorize(cv2.resize(cam, (side, side)), "jet"))
        base = np.mean(np.asarray(imgs, np.float32), axis=0).round().astype(np.uint8)
        return _jpeg(overlay(base, cam, 0.75, alpha_from_cam=True))


def _normalised_mean(maps: np.ndarray) -> np.ndarray:
    """The mean of (N, h, w) maps scaled to max 1."""
    m = maps.mean(axis=0)
    return m / max(float(m.max()), 1e-6)


def _pct(x: Any) -> str:
    return "-" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{float(x):.0%}"


def _fmt(x: Any) -> str:
    """A figure for a table cell."""
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float) and x == 0.0:
        return "0"
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) < 1e-3 and x != 0 else f"{x:.3f}".rstrip("0").rstrip(".") if x % 1 else f"{x:.0f}"
    if isinstance(x, (list, tuple)):
        return ", ".join(_fmt(v) for v in x)
    return str(x)


def _p(name: str, value: Any) -> str:
    """A figure, p-values of 0 (below the 6 decimals kept) shown as such."""
    if name.startswith("p_") and value == 0:
        return "< 1e-6"
    return _fmt(value)


def _evidence(flag: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A flag's figures as (name, value) rows, nested dicts flattened."""
    out = []
    for k, v in flag.items():
        if k in ("kind", "message", "class", "column", "value", "members"):
            continue
        if isinstance(v, Mapping):
            for k2, v2 in v.items():
                if isinstance(v2, Mapping):
                    out.append((f"{k}.{k2}", "; ".join(f"{a} {_fmt(b)}" for a, b in v2.items())))
                else:
                    out.append((f"{k}.{k2}", _p(k2, v2)))
        else:
            out.append((k, _p(k, v)))
    return out


def _class_order(summary: Mapping[str, Any]) -> list[str]:
    flagged = [f.get("class") for f in summary.get("flags", []) if f.get("class") is not None]
    classes = summary.get("classes", {})

    def worst_first(c: str) -> tuple[bool, float]:
        acc = classes[c].get("accuracy")
        return (acc is None, acc or 0.0)

    rest = sorted((c for c in classes if c not in flagged), key=worst_first)
    return list(dict.fromkeys([c for c in flagged if c in classes] + rest))


def _render(context: dict[str, Any]) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE.parent)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = _pct
    env.filters["fmt"] = _fmt
    return env.get_template(TEMPLATE.name).render(**context)


def build_context(
    table: pa.Table,
    summary: Mapping[str, Any],
    images: ImageReader | None = None,
    *,
    max_classes: int = 20,
    thumbs: int = 6,
    worst: int = 12,
    max_rows: int = 50,
    max_images: int = 1200,
    thumb: int = 96,
) -> dict[str, Any]:
    """The template's variables (see :func:`write_report`)."""
    groups = list(summary.get("groups", {}))
    rows = read_rows(table, groups)
    paths = np.asarray(table.column("path").to_pylist() if "path" in table.column_names else [None] * len(rows.ids))
    pics = _Pictures(rows, images or _read_rgb, paths, thumb, max_images)
    classes = summary.get("classes", {})
    order = _class_order(summary)
    anchors = {name: f"class-{i}" for i, name in enumerate(order)}

    def members_of(name: str) -> np.ndarray:
        return np.nonzero(rows.ok & (rows.explained == name))[0]

    def strip(ids: Sequence[str], caption: Callable[[str], str], count: int) -> list[dict[str, Any]]:
        out = []
        for sid in list(ids)[:count]:
            p = pics.sample(sid, caption(sid))
            if p is not None:
                out.append(p)
        return out

    def conf_caption(sid: str) -> str:
        i = pics.index.get(sid)
        if i is None:
            return sid
        return f"{rows.label[i]} → {rows.prediction[i]} {_pct(rows.confidence[i])}"

    findings = []
    for flag in summary.get("flags", []):
        name = flag.get("class")
        pictures, mean_pic, mean_label, second, second_label = [], None, "", None, ""
        if name in classes:
            info = classes[name]
            cluster = next((c for c in info.get("clusters", []) if c.get("id") == flag.get("cluster")), None)
            if cluster is not None:
                idx = np.asarray([pics.index[s] for s in cluster["members"] if s in pics.index])
                mean_pic = pics.mean(idx, np.asarray(cluster["mean_map"]))
                mean_label = f"cluster {cluster['id']} mean map"
                pictures = strip(cluster["members"], conf_caption, thumbs)
            elif flag.get("members"):
                idx = np.asarray([pics.index[s] for s in flag["members"] if s in pics.index], np.int64)
                if len(idx):
                    mean_pic = pics.mean(idx, _normalised_mean(rows.maps_of(idx[:5000])))
                mean_label = "mean map of these maps"
                pictures = strip(flag["members"], conf_caption, thumbs)
            else:
                mean_pic = pics.mean(members_of(name), np.asarray(info["mean_map"]))
                mean_label = "class mean map"
                ex = info["exemplars"]
                pictures = strip(ex["most_confident_wrong"][:2] + ex["most_atypical"], conf_caption, thumbs)
        elif flag.get("kind") == "group" and flag.get("column") in rows.groups:
            sel = rows.ok & (rows.groups[flag["column"]] == flag["value"])
            idx = np.nonzero(sel)[0]
            rest = np.nonzero(rows.ok & ~sel)[0]
            if len(idx):
                mean_pic = pics.mean(idx, _normalised_mean(rows.maps_of(idx[:5000])))
                mean_label = f"mean map of {flag['column']} = {flag['value']}"
            if len(rest):
                second = pics.mean(rest, _normalised_mean(rows.maps_of(rest[:5000])))
                second_label = "mean map of the rest"
            if len(idx):
                wrong = idx[rows.correct[idx] == 0]
                wrong = wrong[np.argsort(-np.nan_to_num(rows.confidence[wrong]), kind="stable")]
                pictures = strip([str(rows.ids[i]) for i in wrong], conf_caption, thumbs)
        findings.append(
            {
                "kind": flag.get("kind", ""),
                "shortcut": flag.get("kind") in SHORTCUT_KINDS,
                "message": flag.get("message", ""),
                "anchor": anchors.get(name) if name is not None else None,
                "evidence": _evidence(flag),
                "mean": mean_pic,
                "mean_label": mean_label,
                "second": second,
                "second_label": second_label,
                "pictures": pictures,
            }
        )

    class_views = []
    for name in order[:max_classes]:
        info = classes[name]
        mem = members_of(name)
        ex = info.get("exemplars", {})
        clusters = []
        for c in info.get("clusters", [])[:6]:
            idx = np.asarray([pics.index[s] for s in c["members"] if s in pics.index], np.int64)
            clusters.append(
                {
                    "id": c["id"],
                    "size": c["size"],
                    "share": c["share"],
                    "region_energy_mean": c.get("region_energy_mean"),
                    "peak_dispersion": c.get("peak_dispersion"),
                    "mean": pics.mean(idx, np.asarray(c["mean_map"])),
                    "pictures": strip(c["members"], conf_caption, thumbs),
                }
            )
        group_tables = []
        for col, values in info.get("groups", {}).items():
            group_tables.append(
                {"column": col, "rows": list(values.items())[:max_rows], "more": len(values) > max_rows}
            )
        class_views.append(
            {
                "name": name,
                "anchor": anchors[name],
                "info": info,
                "flagged": any(f.get("class") == name for f in summary.get("flags", [])),
                "mean": pics.mean(mem, np.asarray(info["mean_map"])),
                "clusters": clusters,
                "more_clusters": max(0, len(info.get("clusters", [])) - 6),
                "groups": group_tables,
                "wrong": strip(ex.get("most_confident_wrong", []), conf_caption, worst),
                "atypical": strip(ex.get("most_atypical", []), conf_caption, thumbs),
            }
        )
    hidden = [
        {"name": n, "samples": classes[n].get("samples"), "accuracy": classes[n].get("accuracy")}
        for n in order[max_classes:]
    ]

    group_views = []
    for col in groups:
        values = summary["groups"][col]
        view_rows = []
        for v, s in list(values.items())[:max_rows]:
            tests = s.get("tests", {})
            significant = any(t.get("significant") for t in tests.values())
            view_rows.append({"value": v, "s": s, "tests": tests, "significant": significant})
        group_views.append({"column": col, "rows": view_rows, "more": max(0, len(values) - max_rows)})

    failed = [(str(rows.ids[i]), str(rows.errors[i])) for i in np.nonzero(rows.errors != None)[0][:max_rows]]  # noqa: E711
    counts = summary.get("counts", {})
    return {
        "summary": summary,
        "title": f"camcore audit: {Path(str(summary.get('model', {}).get('path') or 'model')).name}",
        "counts": counts,
        "findings": findings,
        "shortcut_findings": sum(f["shortcut"] for f in findings),
        "classes": class_views,
        "hidden_classes": hidden,
        "group_views": group_views,
        "group_meta": summary.get("group_tests"),
        "failed": failed,
        "more_failed": max(0, int(counts.get("errors", 0)) - len(failed)),
        "sanity": summary.get("sanity"),
        "rules": summary.get("rules", {}),
        "skipped_pictures": pics.skipped,
    }


def write_report(
    path: str | Path,
    table: pa.Table,
    summary: Mapping[str, Any],
    images: ImageReader | None = None,
    *,
    max_classes: int = 20,
    thumbs: int = 6,
    worst: int = 12,
    max_rows: int = 50,
    max_images: int = 1200,
    thumb: int = 96,
) -> Path:
    """Write the audit's self-contained HTML report to ``path`` (atomically) and return it.

    Args:
        path: the report file (``DIR/report.html``).
        table: the samples table (``camcore.audit.load_samples(DIR)``).
        summary: :func:`camcore.audit.analysis.summarize`'s dict.
        images: reads a row's ``path`` into an RGB uint8 image, or returns None (default: OpenCV
            reads the file; a missing or unreadable one gives None).
        max_classes: classes shown with pictures (flagged first, then the least accurate); the
            others are listed in one table.
        thumbs: overlays per strategy cluster and per finding.
        worst: most confident mistakes shown per class.
        max_rows: rows per table (subgroup values, failed samples).
        max_images: pictures in all; beyond, pictures are left out (and counted in the report).
        thumb: thumbnail long side, pixels.

    Returns:
        ``Path(path)``.
    """
    context = build_context(table, summary, images, max_classes=max_classes, thumbs=thumbs, worst=worst,
                            max_rows=max_rows, max_images=max_images, thumb=thumb)  # fmt: skip
    text = _render(context)
    target = Path(path)
    atomic_write(target, lambda p: p.write_text(text, encoding="utf-8"))
    return target
