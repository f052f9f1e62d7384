"""``camcore demo --audit``: the bundled shortcut model is caught, and nothing clean is accused.

Three small audits (250 generated 96 x 96 scenes each):

* the shortcut model on the demo's mixed data (half the stars marked, 30% site B):
  the planted class, and only it, gets a shortcut flag (``off_object`` or ``cluster``),
  site B gets a ``group`` flag and the no-effect ``camera`` column none;
* the shortcut model on clean data from the same generator (no mark): no shortcut flag;
* the clean demo classifier on the mixed data: no shortcut flag.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from camcore.cli import main
from camcore.demo import AUDIT_META, AUDIT_MODEL, DEMO_MODEL, format_audit_report, load_audit_meta, run_audit_demo
from camcore.preprocess import read_model_metadata
from camcore.scenes import CLASS_NAMES

N = 250


def test_the_audit_model_and_its_metadata() -> None:
    meta = load_audit_meta()
    assert meta["class_names"] == list(CLASS_NAMES) and meta["planted_class"] in CLASS_NAMES
    assert AUDIT_MODEL.stat().st_size < 300_000
    proto = onnx.load(str(AUDIT_MODEL))
    assert read_model_metadata(proto).class_names == list(CLASS_NAMES)  # the names travel in the model
    assert meta["target_layer"] in {out for node in proto.graph.node for out in node.output}
    figures = meta["figures"]
    # it learned the shortcut: the mark makes a star, and a star without it is mostly missed
    assert figures["planted_recall_with_mark"] > 0.9 > figures["planted_recall_without_mark"]
    assert figures["others_accuracy_without_mark"] > 0.9
    assert AUDIT_META.is_file()


def test_demo_audit_flags_the_planted_class_and_site_b(tmp_path: Path) -> None:
    printed = format_audit_report(run_audit_demo(tmp_path, n=N, progress=False))
    report = tmp_path / "audit" / "report.html"
    assert str(report) in printed and report.is_file()
    summary = json.loads((tmp_path / "audit" / "summary.json").read_text())
    planted = load_audit_meta()["planted_class"]
    shortcut = {f["class"] for f in summary["flags"] if f["kind"] in ("off_object", "cluster")}
    assert shortcut == {planted}, summary["flags"]
    groups = {(f["column"], f["value"]) for f in summary["flags"] if f["kind"] == "group"}
    assert ("site", "B") in groups, summary["flags"]
    assert not any(column == "camera" for column, _ in groups), summary["flags"]
    assert f"the planted shortcut is found: {planted!r} is flagged; no other class is" in printed


def test_clean_data_raises_no_shortcut_flag(tmp_path: Path) -> None:
    report = run_audit_demo(tmp_path, n=N, seed=99, planted=False, progress=False)
    assert report.shortcut_classes() == [], report.flags


def test_the_clean_model_raises_no_shortcut_flag(tmp_path: Path) -> None:
    report = run_audit_demo(tmp_path, n=N, model=DEMO_MODEL, progress=False)
    assert report.shortcut_classes() == [], report.flags


def test_camcore_demo_audit_prints_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--audit", "-n", "60", "--seed", "5", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "camcore demo --audit: 60 fresh scenes (seed 5)" in printed
    assert f"report:   {tmp_path / 'audit' / 'report.html'}" in printed
    assert (tmp_path / "audit" / "report.html").is_file() and (tmp_path / "data" / "manifest.csv").is_file()
