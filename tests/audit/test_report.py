"""The audit report: one self-contained HTML file (no external reference, no script), findings
first, hostile names escaped, missing images tolerated, bounded size at 100,000 samples."""

from __future__ import annotations

import json
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa
import pytest

from camcore.audit.analysis import AuditContext, Rules, summarize
from camcore.audit.report import TEMPLATE, write_report
from camcore.scenes import CLASS_NAMES
from tests.audit.synth import Spec, big_table, make_table

CTX = AuditContext(class_names=list(CLASS_NAMES), class_names_source="labels", groups=["site", "camera"],
                   model_path="/models/demo.onnx")  # fmt: skip
HOSTILE = '<script>alert("x")</script>&"'


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the text of <style> blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.style = ""
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.style += data


def _parse(text: str) -> _Tags:
    p = _Tags()
    p.feed(text)
    return p


def assert_self_contained(text: str) -> None:
    """No way out of the file: no http(s) URL, no <script>, <link>, <iframe>, <object>, <embed>,
    <base>; every src/srcset/poster a data: URI; every href an in-page anchor; no CSS url() or
    @import but data:."""
    low = text.lower()
    assert "http://" not in low and "https://" not in low and "//cdn" not in low
    parsed = _parse(text)
    names = {t for t, _ in parsed.tags}
    assert not names & {"script", "link", "iframe", "object", "embed", "base", "frame", "audio", "video", "source"}
    for tag, attrs in parsed.tags:
        for key in ("src", "srcset", "poster", "data", "action", "background"):
            if attrs.get(key) is not None:
                assert attrs[key].startswith("data:"), (tag, key, attrs[key][:60])
        if attrs.get("href") is not None:
            assert attrs["href"].startswith("#"), (tag, attrs["href"])
        assert not any(k.startswith("on") for k in attrs), (tag, attrs)
    assert "@import" not in parsed.style and "url(" not in parsed.style


@pytest.fixture(scope="module")
def shortcut_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    folder = tmp_path_factory.mktemp("report")
    table = make_table(Spec(n=300, seed=2, shortcut="star", marked_rate=0.08, site_b_error=0.3), folder / "img")
    summary = summarize(table, CTX)
    path = write_report(folder / "report.html", table, summary)
    return path.read_text(encoding="utf-8"), summary


def test_report_is_self_contained(shortcut_report: tuple[str, dict]) -> None:
    text, _ = shortcut_report
    assert_self_contained(text)
    assert text.count('src="data:image/jpeg;base64,') >= 20


def test_self_containment_check_catches_a_leak(shortcut_report: tuple[str, dict]) -> None:
    text, _ = shortcut_report
    for leak in ['<img src="x.png">', '<link rel="stylesheet" href="a.css">', '<script src="a.js"></script>',
                 "<style>body{background:url(a.png)}</style>", '<a href="https://example.org">x</a>']:  # fmt: skip
        with pytest.raises(AssertionError):
            assert_self_contained(text.replace("</main>", leak + "</main>"))


def test_report_opens_with_the_findings(shortcut_report: tuple[str, dict]) -> None:
    text, summary = shortcut_report
    kinds = [f["kind"] for f in summary["flags"]]
    assert "cluster" in kinds and "group" in kinds
    first = text.index('id="findings"')
    assert first < text.index('id="classes"') < text.index('id="groups"') < text.index('id="failed"')
    for flag in summary["flags"]:
        message = flag["message"].replace("'", "&#39;").replace('"', "&#34;")
        assert first < text.index(message) < text.index('id="classes"')
    star = text.index(">star</h3>")
    assert text.index(">circle</h3>") > star  # the flagged class comes first


def test_clean_report_says_no_findings(tmp_path: Path) -> None:
    table = make_table(Spec(n=120, seed=1))
    summary = summarize(table, CTX)
    assert summary["flags"] == []
    text = write_report(tmp_path / "r.html", table, summary).read_text()
    assert "No findings." in text
    assert_self_contained(text)


def test_hostile_names_are_escaped(tmp_path: Path) -> None:
    table = make_table(Spec(n=120, seed=8, shortcut="star", shortcut_rate=1.0))
    hostile = {"star": HOSTILE}

    def swap(col: str) -> pa.Array:
        return pa.array([hostile.get(v, v) for v in table.column(col).to_pylist()], pa.string())

    for col in ("label", "prediction", "explained"):
        table = table.set_column(table.schema.get_field_index(col), col, swap(col))
    ids = [f"{i}{HOSTILE}" if i.startswith("star") else i for i in table.column("id").to_pylist()]
    table = table.set_column(0, "id", pa.array(ids, pa.string()))
    err = [HOSTILE if i == 3 else None for i in range(table.num_rows)]
    table = table.set_column(table.schema.get_field_index("error"), "error", pa.array(err, pa.string()))
    ctx = replace(CTX, class_names=[hostile.get(c, c) for c in CLASS_NAMES])
    summary = summarize(table, ctx)
    assert any(f.get("class") == HOSTILE for f in summary["flags"])
    text = write_report(tmp_path / "r.html", table, summary).read_text()
    assert "<script" not in text and 'alert("x")' not in text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in text
    assert_self_contained(text)


def test_missing_images_are_tolerated(tmp_path: Path) -> None:
    table = make_table(Spec(n=80, seed=9))  # paths point nowhere
    text = write_report(tmp_path / "r.html", table, summarize(table, CTX)).read_text()
    assert "(image missing)" in text
    assert_self_contained(text)


def test_report_size_is_bounded_at_100k_samples(tmp_path: Path) -> None:
    table = big_table(100_000, n_classes=40)
    cheap = Rules(n_permutations=50, max_cluster_samples=150, max_test_rows=2000)
    names = [f"class_{i}" for i in range(40)]
    summary = summarize(table, AuditContext(names, "labels", groups=["site"], rules=cheap))
    assert summary["counts"]["samples"] == 100_000
    path = write_report(tmp_path / "r.html", table, summary)
    size = path.stat().st_size
    text = path.read_text()
    assert size < 6_000_000, size
    assert text.count("<img") <= 1200
    assert "no pictures (only the first 20 classes are drawn)" in text
    assert_self_contained(text)
    json.dumps(summary)


def test_the_template_ships_in_the_package() -> None:
    import camcore

    package = Path(camcore.__file__).parent
    assert TEMPLATE.is_file() and package in TEMPLATE.parents
    # scikit-build-core's wheel.packages copies the package folder whole (as the demo model's data/)
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert 'wheel.packages = ["src/camcore"]' in text
