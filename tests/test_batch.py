"""The batch service: batches of equal shape, a bad input isolated, targets and records."""

from __future__ import annotations

import numpy as np
import pytest

import camcore
from camcore.batch import BatchExplainer, Explained, Failed, Item, Names, TargetChoice
from camcore.errors import CamcoreError
from camcore.runtime import Session
from camcore.targets import ClassifierOutputTarget
from camcore.tasks.basic import prediction_record, top_k
from tests.models import tiny_classifier


def _item(key: str, seed: int, size: int = 8) -> Item:
    x = np.random.default_rng(seed).standard_normal((3, size, size)).astype(np.float32)
    return Item(key, np.zeros((size, size, 3), np.uint8), x)


@pytest.fixture
def cam() -> camcore.BaseCAM:
    return camcore.GradCAM(tiny_classifier(dynamic_spatial=True)[0], ["feat"], threads=1)


def test_batches_group_equal_shapes_and_keep_every_result(cam, monkeypatch: pytest.MonkeyPatch) -> None:
    rows: list[int] = []
    run = Session.run
    monkeypatch.setattr(Session, "run", lambda self, feeds, outputs=None: rows.append(len(next(iter(feeds.values()))))
                        or run(self, feeds, outputs))  # fmt: skip
    items = [_item("a", 0), _item("b", 1, 10), _item("c", 2), _item("d", 3), _item("e", 4, 10)]
    explainer = BatchExplainer(cam, TargetChoice.parse(cam.engine, "class", None), batch_size=2)
    done = list(explainer.run(items))
    assert sorted(d.key for d in done) == list("abcde") and all(isinstance(d, Explained) for d in done)
    assert sorted(rows) == [1, 2, 2]  # (a, c), (b, e), then d alone at the end
    for d in done:
        want = cam(d.item.x[None])[0]
        np.testing.assert_allclose(d.map, want, atol=1e-6)
        assert d.record["explained_class"] == int(np.argmax(d.outputs[0]))
        assert [e["class"] for e in d.record["top_k"]] == list(np.argsort(-d.outputs[0], kind="stable")[:5])


def test_a_bad_input_fails_alone(cam) -> None:
    bad = _item("bad", 5)
    bad.x[0, 0, 0] = np.nan
    explainer = BatchExplainer(cam, TargetChoice.parse(cam.engine, "class", None), batch_size=4)
    done = {d.key: d for d in explainer.run([_item("a", 0), bad, _item("c", 2), Failed("unread", "cannot decode")])}
    assert isinstance(done["bad"], Failed) and "NaN" in done["bad"].error
    assert isinstance(done["a"], Explained) and isinstance(done["c"], Explained)
    assert done["unread"].error == "cannot decode"


def test_explicit_and_top1_targets_in_one_batch(cam) -> None:
    explainer = BatchExplainer(cam, None, batch_size=4)
    items = [_item("a", 0), _item("b", 1), _item("c", 2)]
    done = explainer.explain(items, [None, ClassifierOutputTarget(3), None])
    assert [d.key for d in done] == ["a", "b", "c"] and done[1].record["explained_class"] == 3
    np.testing.assert_allclose(done[1].map, cam(items[1].x[None], [ClassifierOutputTarget(3)])[0], atol=1e-6)
    np.testing.assert_allclose(done[2].map, cam(items[2].x[None])[0], atol=1e-6)


def test_target_choice_is_checked_against_the_model(cam) -> None:
    for name, index, message in (("class", 5, "out of range for 5 classes"), ("binary", None, "single-logit"),
                                 ("raw", 1, "takes no --target"), ("regression", None, "one value per image"),
                                 ("softmax", -1, "out of range"), ("nope", None, "unknown target type")):  # fmt: skip
        with pytest.raises(CamcoreError, match=message):
            TargetChoice.parse(cam.engine, name, index)
    softmax = TargetChoice.parse(cam.engine, "softmax", None)
    feeds = {"x": np.stack([_item("a", 0).x])}
    (target,) = softmax.targets(cam.engine, feeds)
    assert target is not None and target.class_index is None  # softmax of the top-1 class
    assert target.category == int(np.argmax(cam.engine.outputs_of(feeds)[0]))


def test_records_and_names() -> None:
    row = np.array([0.5, 3.0, -1.0, 2.0])
    got = top_k(row, 2)
    p = np.exp(row) / np.exp(row).sum()
    assert [g["class"] for g in got] == [1, 3] and abs(got[0]["probability"] - p[1]) < 1e-12
    assert top_k(row, 0) == []
    rec = prediction_record(row, None, 1, ["a", "b", "c", "d"])
    assert rec["explained_class"] == 1 and rec["explained_name"] == "b" and rec["top_k"][0]["name"] == "b"
    assert prediction_record(row, ClassifierOutputTarget(2), 0)["explained_class"] == 2
    names = Names()
    assert [names(p) for p in ("x/cat.jpg", "y/cat.png", "cat", "dog.jpg")] == ["cat", "cat_2", "cat_3", "dog"]
