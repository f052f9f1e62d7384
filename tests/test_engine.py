"""The standalone engine: built on its own, shared by CAMs, forked for threads, pickled to
workers; its input checks; an NHWC image input gives maps at the input's true size."""

from __future__ import annotations

import pickle
import threading

import numpy as np
import onnx
import pytest

import camcore
from camcore.engine import Engine
from camcore.errors import CamcoreError, InputError, ModelError
from camcore.targets import ClassifierOutputTarget
from tests.models import tiny_classifier, tiny_nhwc_classifier


def _x(seed: int, shape: tuple[int, ...] = (2, 3, 8, 8)) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_engine_run_returns_a_typed_result() -> None:
    model, w = tiny_classifier()
    engine = Engine(model)
    x = _x(0)
    res = engine.run({"x": x}, [ClassifierOutputTarget(0), ClassifierOutputTarget(4)], layers=["feat"])
    assert res.outputs[0].shape == (2, 5) and res.activations["feat"].shape == (2, 4, 8, 8)
    # d logit_k / d feat = fc_w[k] / 64 everywhere (a global average pool, then a linear head)
    want = np.broadcast_to((w["fc_w"][[0, 4]] / 64)[:, :, None, None], (2, 4, 8, 8))
    np.testing.assert_allclose(res.gradients["feat"], want, rtol=1e-6)
    assert engine.output_index == 0 and engine.input_names == ["x"] and engine.input_layout == "NCHW"


def test_cams_share_one_engine_and_its_sessions() -> None:
    model, _ = tiny_classifier()
    engine = Engine(model, threads=1)
    a, b = camcore.GradCAM(engine, ["feat"]), camcore.HiResCAM(engine, ["feat"])
    x = _x(1)
    a(x), b(x)
    assert len([k for k, _ in engine.sessions() if k == "augmented"]) == 1  # same layers, seed, signature
    with pytest.raises(CamcoreError, match="threads belong to the engine"):
        camcore.GradCAM(engine, ["feat"], threads=2)


def test_fork_shares_compiled_sessions_and_runs_in_threads() -> None:
    model, _ = tiny_classifier()
    cam = camcore.GradCAM(model, ["feat"], threads=1)
    xs = [_x(i) for i in range(6)]
    want = [cam(x) for x in xs]
    forks = [cam.fork() for _ in range(3)]
    assert all(f.engine is not cam.engine for f in forks)
    assert {id(s) for f in forks for _, s in f.engine.sessions()} == {id(s) for _, s in cam.engine.sessions()}
    got: dict[int, np.ndarray] = {}

    def work(k: int) -> None:
        for i in range(k, len(xs), len(forks)):
            got[i] = forks[k](xs[i])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(forks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(len(xs)):
        np.testing.assert_array_equal(got[i], want[i])


def test_a_cam_pickles_to_a_worker_and_gives_the_same_maps() -> None:
    model, _ = tiny_classifier()
    cam = camcore.LayerCAM(model, ["feat"], batch_size=4)
    x = _x(2)
    want = cam(x)
    copy = pickle.loads(pickle.dumps(cam))
    assert copy.engine.sessions() == [] and copy.target_layers == ["feat"] and copy.batch_size == 4
    np.testing.assert_array_equal(copy(x), want)
    scored = pickle.loads(pickle.dumps(camcore.ScoreCAM(model, ["feat"], top_k=2)))
    assert scored.options["top_k"] == 2


def test_nhwc_input_gives_maps_at_its_height_and_width() -> None:
    """A (N, 10, 8, 3) input: the map is (N, 10, 8), equal to the NCHW model's on the same image,
    and test-time augmentation flips the width axis of the NHWC input."""
    nhwc, _ = tiny_nhwc_classifier(height=10, width=8)
    nchw, _ = tiny_classifier()
    nchw.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 10
    x = _x(3, (2, 3, 10, 8))
    a, b = camcore.GradCAM(nhwc, ["feat"]), camcore.GradCAM(nchw, ["feat"])
    assert a.engine.input_layout == "NHWC"
    got = a(x.transpose(0, 2, 3, 1))
    assert got.shape == (2, 10, 8)
    np.testing.assert_allclose(got, b(x), atol=1e-6)
    np.testing.assert_allclose(a(x.transpose(0, 2, 3, 1), aug_smooth=True), b(x, aug_smooth=True), atol=1e-6)
    np.testing.assert_allclose(a.unscaled(x.transpose(0, 2, 3, 1)), b.unscaled(x), atol=1e-6)


def test_feeds_are_checked_in_one_line() -> None:
    model, _ = tiny_classifier()
    engine = Engine(model)
    cases = [
        (_x(0).astype(np.float64), "must be float32"),
        (_x(0)[:, :2], "needs size 3 on axis 1"),
        (np.full((1, 3, 8, 8), np.nan, np.float32), "NaN or Inf"),
        (np.zeros((0, 3, 8, 8), np.float32), "is empty"),
        ({"y": _x(0)}, "'y' is not a model input"),
    ]
    for value, message in cases:
        with pytest.raises(InputError, match=message):
            engine.feeds(value)


def test_unknown_providers_and_threads_fail_before_any_work() -> None:
    model, _ = tiny_classifier()
    with pytest.raises(CamcoreError, match="not available"):
        Engine(model, providers=["NoSuchExecutionProvider"])
    for bad in (0, 1.5, True):
        with pytest.raises(CamcoreError, match="threads must be an integer >= 1"):
            Engine(model, threads=bad)  # type: ignore[arg-type]
    assert Engine(model, threads=np.int64(2)).threads == 2  # numpy integers are integers


def test_in_memory_external_data_needs_a_base_folder(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its ``location`` is never read relative to the working directory."""
    model, _ = tiny_classifier()
    x = _x(4)
    want = camcore.GradCAM(model, ["feat"])(x)
    saved = onnx.ModelProto()
    saved.CopyFrom(model)  # onnx.save moves the weights out of the proto it saves
    onnx.save(saved, str(tmp_path / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)  # fmt: skip
    proto = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    monkeypatch.chdir(tmp_path)  # the weights sit in the working directory: still refused
    with pytest.raises(ModelError, match="base_dir"):
        Engine(proto)
    np.testing.assert_allclose(camcore.GradCAM(proto, ["feat"], base_dir=tmp_path)(x), want, atol=1e-7)
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(ModelError, match="cannot read the model's external data"):
        Engine(proto, base_dir=tmp_path / "elsewhere")


# ---------------------------------------------------------------------- -1, 0, unnamed and symbolic dims
def _with_dims(model: onnx.ModelProto, dims: list[int | str | None]) -> onnx.ModelProto:
    """The model with its input's dims written as given: a name, a number (-1 and 0 as some
    exporters write a dynamic dim) or None (neither value nor name)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for d, v in zip(out.graph.input[0].type.tensor_type.shape.dim, dims):
        d.Clear()
        if isinstance(v, int):
            d.dim_value = v
        elif isinstance(v, str):
            d.dim_param = v
    return out


@pytest.mark.parametrize("batch", ["N", None, -1, 0])
@pytest.mark.parametrize("spatial", [("H", "W"), (None, None), (-1, 0)])
def test_feeds_of_any_size_are_accepted_where_the_model_is_dynamic(batch, spatial) -> None:
    model, _ = tiny_classifier(dynamic_spatial=True)
    engine = Engine(_with_dims(model, [batch, 3, *spatial]))
    assert engine.info["x"].shape is not None and not isinstance(engine.info["x"].shape[0], int)
    for shape in [(1, 3, 8, 8), (3, 3, 12, 6)]:
        res = engine.run(engine.feeds(_x(0, shape)), None, layers=["feat"])
        assert res.gradients["feat"].shape == (shape[0], 4, *shape[2:])
    one_line = r"^input 'x' needs size 3 on axis 1 \(shape \[.*\]\), got shape \(1, 2, 8, 8\)$"
    with pytest.raises(InputError, match=one_line):
        engine.feeds(_x(0, (1, 2, 8, 8)))  # the one fixed dim is still checked, in one line


def test_a_minus_one_batch_with_a_fixed_size_checks_the_size_only() -> None:
    """PaddleOCR's classifier: (-1, 3, 48, 192); any batch, the size it was exported at."""
    model, _ = tiny_classifier()
    engine = Engine(_with_dims(model, [-1, 3, 8, 8]))
    assert engine.info["x"].shape == (None, 3, 8, 8)
    assert engine.outputs_of(engine.feeds(_x(0, (5, 3, 8, 8)))).shape == (5, 5)
    wrong = r"needs size 8 on axis 2 \(shape \[None, 3, 8, 8\]\), got shape \(1, 3, 9, 8\)"
    with pytest.raises(InputError, match=wrong):
        engine.feeds(_x(0, (1, 3, 9, 8)))


def test_a_rule_that_needs_a_static_batch_gets_it_per_call() -> None:
    """A Slice along the batch needs its size: the dynamic-batch build raises a ShapeError, so
    the engine compiles once per batch size, the batch fixed from the feeds."""
    from camcore.graph import augment

    model, w = tiny_classifier()
    graph = model.graph
    next(n for n in graph.node if n.op_type == "GlobalAveragePool").input[0] = "kept"
    graph.initializer.extend([onnx.numpy_helper.from_array(np.array([v], np.int64), k)
                              for k, v in (("zero", 0), ("end", 2**63 - 1))])  # fmt: skip
    graph.node.insert(2, onnx.helper.make_node("Slice", ["feat", "zero", "end", "zero"], ["kept"], name="all_rows"))
    with pytest.raises(CamcoreError, match="Slice node 'all_rows' needs static dims \\[0\\]"):
        augment(model, ["feat"])
    engine = Engine(model)
    for n in (2, 3, 2):
        res = engine.run(engine.feeds(_x(n, (n, 3, 8, 8))), [ClassifierOutputTarget(1)], layers=["feat"])
        np.testing.assert_allclose(res.gradients["feat"], np.broadcast_to((w["fc_w"][1] / 64)[None, :, None, None],
                                                                          (n, 4, 8, 8)), rtol=1e-6)  # fmt: skip
    assert len([k for k, _ in engine.sessions() if k == "augmented"]) == 2  # batch 2 and 3


def _count_runs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The feeds of every onnxruntime run from now on, by name."""
    from camcore.runtime import Session

    fed: list[list[str]] = []
    run = Session.run

    def counted(self: Session, feeds, outputs=None):  # type: ignore[no-untyped-def]
        fed.append(sorted(feeds))
        return run(self, feeds, outputs)

    monkeypatch.setattr(Session, "run", counted)
    return fed


def test_targets_chosen_from_a_forward_run_reuse_it_for_several_layers(monkeypatch: pytest.MonkeyPatch) -> None:
    """A task that chose its targets from the call's forward run (a detection's score) gets its
    gradients from the model cut at the layers, not from a second run of the whole network; the
    cut at the root layer ("feat" feeds "feat2") gives the whole model's gradients."""
    from camcore.targets import DetectionBoxTarget, RegressionOutputTarget
    from tests.detector_models import tiny_detector

    engine = Engine(tiny_detector(size=(16, 16)))
    feeds = {"x": _x(3, (2, 3, 16, 16))}
    layers = ["feat2", "feat"]
    # candidates 64-79 come from the second level ("feat2", computed from "feat"), 0-63 from "feat" itself
    for targets in ([RegressionOutputTarget((5, 70)), RegressionOutputTarget((4, 7))],
                    [DetectionBoxTarget(1, box_index=72, layout="channels_first")]):  # fmt: skip
        whole = engine.run(feeds, targets, layers=layers)  # the linear seed: the whole augmented model
        fed = _count_runs(monkeypatch)
        with engine.call():
            engine.forward(feeds, layers)  # the task's run, choosing the targets
            cut = engine.run(feeds, targets, layers=layers)
        assert sum("x" in f for f in fed) == 1, f"the network ran more than once: {fed}"
        assert fed[-1] == ["camcore_seed", "feat"]
        for k in layers:
            assert np.abs(whole.gradients[k][0]).max() > 1e-3, f"{k}: no gradient to compare"
            np.testing.assert_allclose(cut.gradients[k], whole.gradients[k], rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(cut.activations[k], whole.activations[k])
        monkeypatch.undo()
