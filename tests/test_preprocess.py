"""camcore.preprocess: Preprocess against a numpy reference, sizes, model metadata."""

from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto

from camcore.errors import CamcoreError
from camcore.graph.shapes import TensorInfo
from camcore.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocess,
    model_input_size,
    parse_size,
    read_model_metadata,
)

#: every channel different, so that a statistic applied to the wrong channel shows
MEAN = (0.1, 0.5, 0.9)
STD = (0.2, 0.3, 0.45)


def _frame(seed: int, h: int = 12, w: int = 10) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _reference(frame, channels, size=None, mean=MEAN, std=STD, bgr=False, nhwc=False) -> np.ndarray:
    """Resize (OpenCV bilinear), to RGB, to [0, 1], normalise per RGB channel, to the model's
    channel order and layout; in float64."""
    if size is not None and frame.shape[:2] != size:
        frame = cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    rgb = frame[..., ::-1] if channels == "bgr" else frame
    x = (rgb.astype(np.float64) / 255 - np.asarray(mean)) / np.asarray(std)
    if bgr:
        x = x[..., ::-1]
    return x if nhwc else x.transpose(2, 0, 1)


@pytest.mark.parametrize("channels", ["bgr", "rgb"])
@pytest.mark.parametrize("bgr", [False, True])
@pytest.mark.parametrize("nhwc", [False, True])
def test_matches_numpy_reference(channels: str, bgr: bool, nhwc: bool) -> None:
    frame = _frame(1)
    got = Preprocess(None, MEAN, STD, bgr=bgr, nhwc=nhwc)(frame, channels=channels)  # type: ignore[arg-type]
    want = _reference(frame, channels, bgr=bgr, nhwc=nhwc)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    assert got.shape == ((12, 10, 3) if nhwc else (3, 12, 10))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_each_channel_gets_its_own_statistics() -> None:
    """A grey frame of value v: channel c of the input is (v/255 - mean_c) / std_c, in the
    model's channel order."""
    grey = np.full((2, 3, 3), 51, np.uint8)  # 0.2
    rgb_model = Preprocess(None, MEAN, STD)(grey)
    bgr_model = Preprocess(None, MEAN, STD, bgr=True)(grey)
    want_rgb = [(0.2 - m) / s for m, s in zip(MEAN, STD)]
    np.testing.assert_allclose(rgb_model[:, 0, 0], want_rgb, rtol=1e-5)
    np.testing.assert_allclose(bgr_model[:, 0, 0], want_rgb[::-1], rtol=1e-5)
    # a pure red pixel, given as BGR or RGB, lands in the model's red channel
    red_bgr = np.zeros((1, 1, 3), np.uint8)
    red_bgr[..., 2] = 255
    for pre, red_axis in ((Preprocess(None, MEAN, STD), 0), (Preprocess(None, MEAN, STD, bgr=True), 2)):
        for frame, channels in ((red_bgr, "bgr"), (red_bgr[..., ::-1].copy(), "rgb")):
            x = pre(frame, channels=channels)[:, 0, 0]  # type: ignore[arg-type]
            assert x[red_axis] == pytest.approx((1.0 - MEAN[0]) / STD[0], rel=1e-5)  # red's statistics


def test_resizes_to_the_model_size() -> None:
    frame = _frame(2, 40, 50)
    pre = Preprocess((24, 32), MEAN, STD)
    got = pre(frame, channels="bgr")
    assert got.shape == (3, 24, 32) and pre.input_hw == (24, 32)
    np.testing.assert_allclose(got, _reference(frame, "bgr", size=(24, 32)), rtol=1e-5, atol=1e-5)
    same = _frame(3, 24, 32)
    np.testing.assert_allclose(pre(same, channels="rgb"), _reference(same, "rgb"), rtol=1e-5, atol=1e-5)
    assert Preprocess().input_hw is None


def test_imagenet_defaults() -> None:
    frame = _frame(4)
    np.testing.assert_allclose(
        Preprocess()(frame, channels="rgb"),
        _reference(frame, "rgb", mean=IMAGENET_MEAN, std=IMAGENET_STD),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mean": (0.1, 0.2)}, "mean and std need 3 values each"),
        ({"std": (0.1, 0.0, 0.2)}, "std must be finite and non-zero"),
        ({"mean": (0.1, float("nan"), 0.2)}, "mean finite"),
    ],
)
def test_bad_statistics(kwargs: dict, message: str) -> None:
    with pytest.raises(CamcoreError, match=message):
        Preprocess(**kwargs)


@pytest.mark.parametrize("shape", [(8, 8), (8, 8, 4), (0, 8, 3), (8, 0, 3)])
def test_bad_frames(shape: tuple[int, ...]) -> None:
    with pytest.raises(CamcoreError, match="must be H x W x 3"):
        Preprocess()(np.zeros(shape, np.uint8))


def test_parse_size() -> None:
    assert parse_size("224x224") == (224, 224)
    assert parse_size("480X640") == (480, 640)  # height x width
    for bad in ("224", "axb", "2x3x4", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="must look like 224x224"):
            parse_size(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="must be positive"):
        parse_size("0x5")


def _engine(shape, layout: str = "NCHW") -> SimpleNamespace:
    return SimpleNamespace(input_names=["img"], info={"img": TensorInfo(TensorProto.FLOAT, shape)}, input_layout=layout)


def test_model_input_size() -> None:
    assert model_input_size(_engine(("N", 3, 224, 200))) == (224, 200)
    assert model_input_size(_engine(("N", 224, 200, 3), "NHWC")) == (224, 200)
    assert model_input_size(_engine(("N", 224, 200, 3)), nhwc=True) == (224, 200)
    assert model_input_size(SimpleNamespace(engine=_engine((1, 3, 64, 48)))) == (64, 48)  # a CAM: its engine
    assert model_input_size(_engine(("N", 3, "H", "W"))) is None
    with pytest.raises(CamcoreError, match="4-D model input; 'img' is"):
        model_input_size(_engine(("N", 3, 224)))


def _with_props(**props: str) -> onnx.ModelProto:
    model = onnx.ModelProto()
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    return model


def test_metadata_from_the_model() -> None:
    meta = read_model_metadata(
        _with_props(mean="[0.5, 0.4, 0.3]", std="0.25", color="bgr", layout="NHWC", class_names='["cat", "dog"]')
    )
    assert meta.mean == (0.5, 0.4, 0.3) and meta.std == (0.25, 0.25, 0.25)
    assert meta.bgr is True and meta.nhwc is True
    assert meta.class_names == ["cat", "dog"] and meta.source == "the model's metadata"
    empty = read_model_metadata(onnx.ModelProto())
    assert (empty.mean, empty.std, empty.bgr, empty.nhwc, empty.class_names, empty.source) == (
        None, None, None, None, None, "",
    )  # fmt: skip


def test_ultralytics_metadata() -> None:
    meta = read_model_metadata(_with_props(author="Ultralytics", names="{0: 'person', 2: 'car', 1: 'bike'}"))
    assert meta.class_names == ["person", "bike", "car"]
    assert meta.mean == (0.0, 0.0, 0.0) and meta.std == (1.0, 1.0, 1.0)  # [0, 1] pixels


def test_sidecar_json_and_scale(tmp_path) -> None:
    path = tmp_path / "net.onnx"
    (tmp_path / "net.json").write_text(
        json.dumps({"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375], "scale": 1.0, "color": "RGB"})
    )
    meta = read_model_metadata(_with_props(layout="nchw"), path)
    # mean and std given for raw pixels (scale 1) are brought to [0, 1] pixels
    np.testing.assert_allclose(meta.mean, IMAGENET_MEAN, rtol=1e-6)
    np.testing.assert_allclose(meta.std, IMAGENET_STD, rtol=1e-3)
    assert meta.bgr is False and meta.nhwc is False
    assert meta.source == "the model's metadata and net.json"
    assert read_model_metadata(onnx.ModelProto(), tmp_path / "other.onnx").source == ""
