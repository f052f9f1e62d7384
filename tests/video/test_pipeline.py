"""The Python API: order, count, tracking, smoothing, frame skipping, odd frames, interruption."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import numpy as np
import onnx
import pytest

import camcore
from camcore.demo import pointing_hits
from camcore.errors import CamcoreError
from camcore.video import FollowDetection, Preprocess, TemporalSmoother, VideoPipeline, explain_frames
from tests.video.clips import Clip


def _numbered(n: int, size: tuple[int, int] = (48, 64)) -> list[np.ndarray]:
    frames = []
    for i in range(n):
        f = np.full((*size, 3), 40, np.uint8)
        f[0, 0] = (i, i // 2, 7)
        frames.append(f)
    return frames


def _video_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("camcore-video")]


@pytest.mark.parametrize(("batch", "workers", "every"), [(1, 1, 1), (3, 2, 1), (4, 2, 3)])
def test_yields_every_frame_in_order(
    cam: camcore.GradCAM, preprocess: Preprocess, batch: int, workers: int, every: int
) -> None:
    frames = _numbered(23)
    results = list(explain_frames(iter(frames), cam, preprocess=preprocess, batch=batch, workers=workers, every=every))
    assert len(results) == len(frames)
    for i, (frame, cam_map, overlay, outputs) in enumerate(results):
        assert frame is frames[i]
        assert cam_map.shape == (96, 96) and cam_map.dtype == np.float32
        assert cam_map.min() >= 0.0 and cam_map.max() <= 1.0
        assert overlay.shape == frame.shape and overlay.dtype == np.uint8
        assert outputs[0].shape == (5,)
    assert not _video_threads()


def test_map_peak_tracks_the_moving_object(clip: Clip, cam: camcore.GradCAM, preprocess: Preprocess) -> None:
    results = list(explain_frames(clip.frames, cam, preprocess=preprocess))
    maps = np.stack([r.cam_map for r in results])  # 96 x 96: half the frame's 192 x 192
    boxes = [tuple(v // 2 for v in box) for box in clip.boxes]
    hits = pointing_hits(maps, boxes)
    assert hits.mean() >= 0.9, hits
    assert np.mean([int(np.argmax(r.outputs[0])) == clip.label for r in results]) >= 0.9
    # the peak moves with the object: from the top left to the bottom right
    peaks = [np.unravel_index(int(np.argmax(m)), m.shape) for m in maps]
    assert peaks[-1][1] - peaks[0][1] > 40 and peaks[-1][0] - peaks[0][0] > 20


def test_unsmoothed_per_frame_maps_equal_gradcam(clip: Clip, cam: camcore.GradCAM, preprocess: Preprocess) -> None:
    frames = clip.frames[:6]
    got = [r.cam_map for r in explain_frames(frames, cam, preprocess=preprocess, smooth=0.0, normalize="frame")]
    want = cam(np.stack([preprocess(f) for f in frames]))
    np.testing.assert_allclose(np.stack(got), want, atol=2e-5)


def test_every_k_reuses_the_last_map(clip: Clip, cam: camcore.GradCAM, preprocess: Preprocess) -> None:
    pipe = VideoPipeline(cam, preprocess=preprocess, every=4, batch=2)
    pairs = list(pipe.stream(clip.frames[:10]))
    assert [info.explained for _, info in pairs] == [i % 4 == 0 for i in range(10)]
    assert [info.source for _, info in pairs] == [0, 0, 0, 0, 4, 4, 4, 4, 8, 8]
    assert pairs[3][0].cam_map is pairs[0][0].cam_map
    assert pairs[5][0].outputs is pairs[4][0].outputs
    assert not np.array_equal(pairs[4][0].cam_map, pairs[0][0].cam_map)


def test_smoothing_reduces_flicker(clip: Clip, cam: camcore.GradCAM, preprocess: Preprocess) -> None:
    rng = np.random.default_rng(0)
    still = clip.frames[20].astype(np.int16)  # a still scene; only the sensor noise changes
    frames = [np.clip(still + rng.normal(0, 12, still.shape), 0, 255).astype(np.uint8) for _ in range(12)]

    def flicker(**kw: object) -> float:
        maps = np.stack([r.cam_map for r in explain_frames(frames, cam, preprocess=preprocess, **kw)])
        return float(np.abs(np.diff(maps[4:], axis=0)).mean())

    assert flicker(smooth=0.8) < 0.5 * flicker(smooth=0.0, normalize="frame")


def test_temporal_smoother_relations() -> None:
    a = np.array([[0.0, 2.0], [1.0, 0.0]], np.float32)
    s = TemporalSmoother(smooth=0.0, normalize="running", decay=1.0)
    assert s.update(a).max() == 1.0
    np.testing.assert_allclose(s.update(a / 4), a / 8)  # weak frame stays dim, the range holds
    fixed = TemporalSmoother(smooth=0.0, normalize=(0.0, 4.0))
    np.testing.assert_allclose(fixed.update(a), a / 4)
    ema = TemporalSmoother(smooth=0.5, normalize=(0.0, 1.0))
    ema.update(np.zeros((2, 2), np.float32))
    np.testing.assert_allclose(ema.update(np.ones((2, 2), np.float32)), 0.5)
    with pytest.raises(CamcoreError):
        TemporalSmoother(smooth=1.0)
    with pytest.raises(CamcoreError):
        TemporalSmoother(normalize=(1.0, 1.0))


def test_wrong_size_frame_is_resized_and_logged(
    clip: Clip, cam: camcore.GradCAM, preprocess: Preprocess, caplog: pytest.LogCaptureFixture
) -> None:
    frames = list(clip.frames[:8])
    frames[5] = frames[5][:120, :150].copy()
    frames[6] = frames[6][..., 0].copy()  # grey
    with caplog.at_level(logging.WARNING, logger="camcore.video"):
        pairs = list(VideoPipeline(cam, preprocess=preprocess).stream(frames))
    assert len(pairs) == 8
    assert all(r.frame.shape == (192, 192, 3) for r, _ in pairs)
    assert pairs[5][1].resized_from == (120, 150)
    assert [i for i, (_, info) in enumerate(pairs) if info.resized_from] == [5]
    assert "frame 5 is 150x120" in caplog.text


def test_source_interrupt_comes_after_the_frames_before_it(
    clip: Clip, cam: camcore.GradCAM, preprocess: Preprocess
) -> None:
    def source() -> Iterator[np.ndarray]:
        yield from clip.frames[:7]
        raise KeyboardInterrupt

    seen = []
    with pytest.raises(KeyboardInterrupt):
        for result in explain_frames(source(), cam, preprocess=preprocess, batch=3):
            seen.append(result)
    assert len(seen) == 7
    assert not _video_threads()


def test_leaving_early_stops_the_stages(clip: Clip, cam: camcore.GradCAM, preprocess: Preprocess) -> None:
    def endless() -> Iterator[np.ndarray]:
        while True:
            yield from clip.frames

    gen = explain_frames(endless(), cam, preprocess=preprocess)
    for i, _ in enumerate(gen):
        if i == 5:
            break
    gen.close()
    assert not _video_threads()


def test_bad_frames_and_arguments(cam: camcore.GradCAM, preprocess: Preprocess) -> None:
    with pytest.raises(CamcoreError, match="uint8"):
        list(explain_frames([np.zeros((8, 8, 3), np.float32)], cam, preprocess=preprocess))
    with pytest.raises(CamcoreError, match="every"):
        VideoPipeline(cam, every=0)
    with pytest.raises(CamcoreError, match="alpha"):
        VideoPipeline(cam, alpha=2.0)


def test_rgb_frames_and_side_by_side(clip: Clip, cam: camcore.GradCAM, preprocess: Preprocess) -> None:
    bgr = clip.frames[:3]
    rgb = [f[..., ::-1].copy() for f in bgr]
    a = list(explain_frames(bgr, cam, preprocess=preprocess, side_by_side=True))
    b = list(explain_frames(rgb, cam, preprocess=preprocess, channels="rgb"))
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.cam_map, y.cam_map, atol=1e-6)
        assert x.overlay.shape == (192, 384, 3)
        np.testing.assert_array_equal(x.overlay[:, :192], x.frame)
        np.testing.assert_array_equal(x.overlay[:, 192:, ::-1], y.overlay)


def test_preprocess_matches_the_demo_convention(clip: Clip, preprocess: Preprocess) -> None:
    from camcore.demo import load_demo_meta
    from camcore.demo import preprocess as demo_preprocess

    small = np.ascontiguousarray(clip.frames[0][::2, ::2])  # already 96 x 96: no resize
    want = demo_preprocess(small[None, ..., ::-1], load_demo_meta())[0]
    np.testing.assert_allclose(preprocess(small, channels="bgr"), want, atol=1e-5)
    nhwc_bgr = Preprocess((96, 96), (0.1, 0.2, 0.3), (0.5, 0.5, 0.5), bgr=True, nhwc=True)
    x = nhwc_bgr(small, channels="bgr")
    np.testing.assert_allclose(x[..., 0], (small[..., 0] / 255 - 0.3) / 0.5, atol=1e-5)


def test_follow_detection_prefers_the_box_it_followed() -> None:
    follow = FollowDetection(1, layout="boxes_first", stickiness=0.8)
    # candidates: (cx, cy, w, h, score class 0, score class 1)
    first = np.array([[10, 10, 8, 8, 0.1, 0.9], [60, 60, 8, 8, 0.1, 0.7]], np.float32)
    t0 = follow.for_frame(0)
    seed = t0.seed(first)
    assert seed.shape == first.shape and seed[0, 5] == 1 and seed.sum() == 1
    # next frame: the far object scores a little higher, the followed one moved by 1 px
    second = np.array([[11, 10, 8, 8, 0.1, 0.8], [60, 60, 8, 8, 0.1, 0.85]], np.float32)
    t1 = follow.for_frame(1)
    t1.seed(second)
    assert t1.detection is not None and t1.detection["index"] == 0
    loose = FollowDetection(1, layout="channels_first", stickiness=0.0)
    loose.for_frame(0).seed(first.T.copy())
    t = loose.for_frame(1)
    assert t.seed(second.T.copy())[5, 1] == 1
    with pytest.raises(CamcoreError, match="class 7"):
        FollowDetection(7, layout="boxes_first").for_frame(0).seed(first)


def _tiny_detector() -> onnx.ModelProto:
    """x (N, 3, 16, 16) -> Conv -> Relu -> 1x1 Conv -> (N, 4 + 2 classes, 256 candidates)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.5, (6, 8, 1, 1)).astype(np.float32), "w2"),
        numpy_helper.from_array(np.array([0, 6, 256], np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["feat"]),
        helper.make_node("Conv", ["feat", "w2"], ["c2"]),
        helper.make_node("Reshape", ["c2", "shape"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "det",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 16, 16])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 6, 256])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_follow_detection_through_a_detector() -> None:
    cam = camcore.GradCAM(_tiny_detector(), ["feat"], threads=1)
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(6)]
    pipe = VideoPipeline(cam, targets=FollowDetection(1, layout="channels_first"), batch=2, workers=2)
    pairs = list(pipe.stream(frames))
    assert len(pairs) == 6
    for result, info in pairs:
        assert info.detection is not None and 0 <= info.detection["index"] < 256
        assert result.cam_map.shape == (16, 16)
        assert result.outputs[0].shape == (6, 256)
