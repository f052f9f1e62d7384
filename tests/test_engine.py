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
