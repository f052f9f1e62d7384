"""``--task``: every front door reads the task off the output's shape (or takes it), explains a
target that fits it, and reports what the model produced, never invented class ids."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import pytest

from camcore import GradCAM
from camcore.cli import main
from camcore.demo import DEMO_MODEL
from camcore.targets import DetectionBoxTarget
from tests import task_models
from tests.detector_models import tiny_detector

MODELS: dict[str, Callable[[], onnx.ModelProto]] = {
    "v8": lambda: tiny_detector(size=(16, 16)),
    "v5": task_models.yolov5_like,
    "v8t": lambda: task_models.transposed(tiny_detector(size=(16, 16)), ["a", "b", "c"]),
    "v8t_bare": lambda: task_models.transposed(tiny_detector(size=(16, 16))),
    "yolox": task_models.yolox_like,
    "separate_cf": task_models.separate_channels_first,
    "separate_trt": lambda: task_models.separate_channels_first(trt_boxes=True),
    "efficient_nms": task_models.efficient_nms,
    "separate": task_models.separate_boxes_scores,
    "nms": task_models.nms_included,
    "seg": task_models.segmenter,
    "seg_resized": lambda: task_models.segmenter(resize=True),
    "seg_nhwc": task_models.segmenter_nhwc,
    "regressor": lambda: task_models.head((1,)),
    "odd": lambda: task_models.head((3, 5)),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("task_models")
    paths = {}
    for name, build in MODELS.items():
        paths[name] = str(folder / f"{name}.onnx")
        onnx.save(build(), paths[name])
    paths["classifier"] = str(DEMO_MODEL)
    return paths


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("task_images") / "img.png"
    cv2.imwrite(str(path), np.random.default_rng(3).integers(0, 255, (40, 48, 3), np.uint8))
    return str(path)


def _explain(model: str, image: str, out: Path, *argv: str, code: int = 0) -> dict[str, Any]:
    assert main(["explain", model, image, "--out", str(out), "--layer", "feat", *argv]) == code
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return summary


DETECTED = [  # model, task, detected from, layout, explained output, record keys
    ("v8", "detect", "(N, 7, 80)", "channels_first", "boxes", {"explained", "detections", "detection_count"}),
    ("v5", "detect", "(N, 192, 8)", "boxes_first", "output0", {"explained", "detections"}),
    ("v8t", "detect", "(N, 80, 7)", "transposed", "boxes", {"explained", "detections"}),
    ("yolox", "detect", "(N, 64, 8)", "boxes_first", "output0", {"explained", "detections"}),
    ("separate_cf", "detect", "(N, 3, 64)", "separate, boxes from 'boxes', scores channels first", "scores",
     {"explained", "detections"}),
    ("separate_trt", "detect", "(N, 3, 64)", "separate, boxes from 'boxes', scores channels first", "scores",
     {"explained", "detections"}),
    ("efficient_nms", "detect", "(N, 10)", "separate_nms, boxes from 'det_boxes', labels from 'det_classes'",
     "det_scores", {"explained", "detections"}),
    ("separate", "detect", "(N, 64, 3)", "separate, boxes from 'boxes'", "scores", {"explained", "detections"}),
    ("nms", "detect", "(N, 10, 6)", "nms", "dets", {"explained", "detections"}),
    ("seg", "segment", "(N, 3, 4, 4)", None, "logits", {"areas", "explained_class", "explained_fraction"}),
    ("seg_resized", "segment", "(N, 3, 16, 16)", None, "logits", {"areas", "explained_class"}),
    ("seg_nhwc", "segment", "(N, 4, 4, 3)", "channels_last (N, h, w, C)", "probs", {"areas", "explained_class"}),
    ("regressor", "regress", "(N, 1)", None, "y", {"values", "explained_value"}),
    ("odd", "raw", "(N, 3, 5)", None, "y", {"output_shape", "sum"}),
    ("classifier", "classify", "(N, 5)", None, "logits", {"top_k", "explained_class"}),
]


@pytest.mark.parametrize(("model", "task", "shape", "layout", "output", "keys"), DETECTED, ids=[d[0] for d in DETECTED])
def test_the_task_is_read_off_the_output_and_named(models: dict[str, str], image: str, tmp_path: Path, model: str,
                                                   task: str, shape: str, layout: str | None, output: str,
                                                   keys: set[str]) -> None:  # fmt: skip
    layer = ["--layer", "/features/features.17/Relu"] if model == "classifier" else []
    argv = ["explain", models[model], image, "--out", str(tmp_path / "o"), *(layer or ["--layer", "feat"])]
    assert main(argv) == 0
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert (s["task"], s["task_source"], s.get("layout")) == (task, f"detected from output shape {shape}", layout)
    assert s["explained_output"] == output
    (record,) = s["images"]
    assert keys <= set(record)
    if task != "classify":
        assert "top_k" not in record, "class ids invented for an output that has none"
    named = main([*argv[:4], str(tmp_path / "named"), *argv[5:], "--task", task])
    assert named == 0
    assert json.loads((tmp_path / "named" / "summary.json").read_text())["task_source"] == "--task"


def test_the_explained_detection_is_the_top_one_and_its_map_is_its_target(models: dict[str, str], image: str,
                                                                            tmp_path: Path) -> None:  # fmt: skip
    s = _explain(models["v8"], image, tmp_path / "o")
    (record,) = s["images"]
    dets = record["detections"]
    assert record["explained"]["detection"] == 0 and record["explained"]["box"] == dets[0]["box"]
    assert [d["score"] for d in dets] == sorted((d["score"] for d in dets), reverse=True)
    assert all(d["score"] >= 0.25 for d in dets) and len(dets) == min(5, record["detection_count"])
    # the map is that of DetectionBoxTarget on the explained candidate, through the API
    cam = GradCAM(models["v8"], "feat")
    from camcore.arguments import preprocessing
    from camcore.cli import _parser

    pre, _ = preprocessing(_parser().parse_args(["explain", "m", "i", "--out", "o"]), cam.engine, models["v8"])
    x = pre(cv2.cvtColor(cv2.imread(image), cv2.COLOR_BGR2RGB), channels="rgb")[None]
    target = DetectionBoxTarget(record["explained"]["class"], record["explained"]["candidate"], layout="channels_first")
    expected = cam(x, [target])[0]
    np.testing.assert_allclose(np.load(record["map"]), expected, atol=1e-5)


def test_a_transposed_yolov8_head_explains_the_same_detection_and_map(models: dict[str, str], image: str,
                                                                      tmp_path: Path) -> None:  # fmt: skip
    """(N, A, 4 + C) told from YOLOv5's (N, A, 5 + C) by the class names: the same detections as
    the head before the transpose, the same map; without names, one line asks for the layout."""
    v8 = _explain(models["v8"], image, tmp_path / "a")["images"][0]
    v8t = _explain(models["v8t"], image, tmp_path / "b")["images"][0]
    assert v8t["explained"] == {**v8["explained"], "name": "abc"[v8["explained"]["class"]]}
    assert v8t["detection_count"] == v8["detection_count"]
    np.testing.assert_allclose(np.load(v8t["map"]), np.load(v8["map"]), atol=1e-6)
    bare = _explain(models["v8t_bare"], image, tmp_path / "c", "--detection-layout", "transposed")
    assert bare["layout"] == "transposed" and bare["images"][0]["explained"] == v8["explained"]
    as_v5 = _explain(models["v8t_bare"], image, tmp_path / "d", "--detection-layout", "boxes_first")
    assert as_v5["layout"] == "boxes_first"


def test_separate_channels_first_scores_explain_the_score_reported(models: dict[str, str], image: str,
                                                                    tmp_path: Path) -> None:  # fmt: skip
    from camcore.arguments import preprocessing
    from camcore.cli import _parser
    from camcore.targets import RegressionOutputTarget

    for name in ("separate_cf", "separate_trt", "efficient_nms"):
        record = _explain(models[name], image, tmp_path / name)["images"][0]
        explained = record["explained"]
        out = "det_scores" if name == "efficient_nms" else "scores"
        cam = GradCAM(models[name], "feat", output=out)
        pre, _ = preprocessing(_parser().parse_args(["explain", "m", "i", "--out", "o"]), cam.engine, models[name])
        x = pre(cv2.cvtColor(cv2.imread(image), cv2.COLOR_BGR2RGB), channels="rgb")[None]
        outputs = dict(zip(cam.engine.output_names, cam.engine.forward(cam.engine.feeds(x)).outputs))
        i, cls = explained["candidate"], explained["class"]
        if name == "efficient_nms":
            index: tuple[int, ...] = (i,)
            assert cls == int(outputs["det_classes"][0, i])
        else:
            index = (cls, i)
            np.testing.assert_allclose(explained["box"], outputs["boxes"][0].reshape(-1, 4)[i], atol=0.01)
        assert explained["score"] == pytest.approx(float(outputs[out][0][index]))
        np.testing.assert_allclose(np.load(record["map"]), cam(x, [RegressionOutputTarget(index)])[0], atol=1e-5)


def test_an_nhwc_segmenter_explains_its_class_pixels(models: dict[str, str], image: str, tmp_path: Path) -> None:
    """(N, h, w, C) behind a Softmax, read as channels last from the graph (its shape (4, 4, 3)
    also reads as (C, h, w)): the largest class over its own pixels, on the input's true size."""
    from camcore.arguments import preprocessing
    from camcore.cli import _parser
    from camcore.targets import SemanticSegmentationTarget

    record = _explain(models["seg_nhwc"], image, tmp_path / "o")["images"][0]
    cam = GradCAM(models["seg_nhwc"], "feat")
    pre, _ = preprocessing(_parser().parse_args(["explain", "m", "i", "--out", "o"]), cam.engine, models["seg_nhwc"])
    x = pre(cv2.cvtColor(cv2.imread(image), cv2.COLOR_BGR2RGB), channels="rgb")[None]
    assert x.shape == (1, 16, 16, 3)
    probs = cam.engine.outputs_of(cam.engine.feeds(x))[0]  # (4, 4, 3)
    labels = probs.argmax(-1)
    cls = int(np.bincount(labels.reshape(-1), minlength=3).argmax())
    assert record["explained_class"] == cls
    assert record["explained_fraction"] == pytest.approx(float((labels == cls).mean()))
    expected = cam(x, [SemanticSegmentationTarget(cls, (labels == cls).astype(np.float32), channels_last=True)])[0]
    got = np.load(record["map"])
    assert got.shape == (16, 16)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_detection_box_and_class_choose_the_detection(models: dict[str, str], image: str, tmp_path: Path) -> None:
    first = _explain(models["v8"], image, tmp_path / "a")["images"][0]
    dets = first["detections"]
    second = _explain(models["v8"], image, tmp_path / "b", "--detection", "1")["images"][0]
    assert second["explained"]["detection"] == 1 and second["explained"]["box"] == dets[1]["box"]
    assert not np.allclose(np.load(first["map"]), np.load(second["map"])), "another detection, the same map"
    box = ",".join(str(v) for v in dets[2]["box"])
    by_box = _explain(models["v8"], image, tmp_path / "c", f"--box={box}")["images"][0]
    assert by_box["explained"]["detection"] == 2
    other = next(c for c in range(3) if c != dets[0]["class"])
    by_class = _explain(models["v8"], image, tmp_path / "d", "--target", str(other))["images"][0]
    assert by_class["explained"]["class"] == other == by_class["explained_class"]
    few = _explain(models["v8"], image, tmp_path / "e", "--score-threshold", "0.99", "--top-k", "2")["images"][0]
    assert few["detection_count"] < first["detection_count"] and len(few["detections"]) <= 2


def test_a_detection_the_image_lacks_fails_that_image_in_one_line(models: dict[str, str], image: str,
                                                                   tmp_path: Path, capsys) -> None:  # fmt: skip
    s = _explain(models["v8"], image, tmp_path / "o", "--detection", "99", code=2)
    assert s["images"] == []
    (failure,) = s["failures"]
    assert failure["error"].startswith("--detection 99: this image has ") and "score >= 0.25" in failure["error"]
    assert "Traceback" not in capsys.readouterr().err


def test_segment_region_and_class(models: dict[str, str], image: str, tmp_path: Path) -> None:
    whole = _explain(models["seg_resized"], image, tmp_path / "a")["images"][0]
    assert abs(sum(a["fraction"] for a in whole["areas"]) - 1) < 1e-6
    assert whole["explained_class"] == whole["areas"][0]["class"], "the default is the largest class"
    assert whole["explained_fraction"] == whole["areas"][0]["fraction"] < 1, "the class's own pixels are explained"
    part = _explain(models["seg_resized"], image, tmp_path / "b", "--region", "0,0,8,8", "--target", "1")["images"][0]
    assert part["explained_class"] == 1 and part["region"] == [0, 0, 8, 8]
    assert part["explained_fraction"] <= 0.25
    assert not np.allclose(np.load(whole["map"]), np.load(part["map"]))


def test_a_regressor_explains_its_value_and_raw_the_sum(models: dict[str, str], image: str, tmp_path: Path) -> None:
    rec = _explain(models["odd"], image, tmp_path / "a", "--task", "regress", "--target", "7")["images"][0]
    assert rec["explained_index"] == 7 and len(rec["values"]) == 15 and rec["explained_value"] == rec["values"][7]
    raw = _explain(models["odd"], image, tmp_path / "b")["images"][0]
    assert raw["output_shape"] == [3, 5]


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


BAD = [  # model, argv, needle
    ("classifier", ["--box", "1,1,5,5"], "--box applies to --task detect, but the task is classify (detected"),
    (
        "classifier",
        ["--task", "detect"],
        "--task detect does not fit the output 'logits' of shape (N, 5), which reads as --task classify",
    ),
    ("classifier", ["--task", "segment"], "--task segment does not fit"),
    ("v8", ["--region", "0,0,4,4"], "--region applies to --task segment, but the task is detect"),
    ("v8", ["--target", "3"], "--target 3 is out of range for 3 classes"),
    (
        "v8",
        ["--target-type", "softmax"],
        "--task classify (from --target-type softmax) does not fit the output 'boxes'",
    ),
    ("v8", ["--task", "detect", "--target-type", "raw"], "--target-type raw is a raw target, but the task is detect"),
    ("v8", ["--box", "1,2,3"], "x0,y0,x1,y1"),
    ("v8", ["--box", "5,5,1,9"], "x0 < x1"),
    ("v8", ["--score-threshold", "2"], "--score-threshold"),
    ("v8t_bare", [], "read two ways: a transposed YOLOv8 head (3 classes) or a YOLOv5/YOLOX head with objectness (2 "
                     "classes), and the model lists no class names to tell them apart: name it with "
                     "--detection-layout transposed or --detection-layout boxes_first"),
    ("seg", ["--detection-layout", "nms"], "--detection-layout applies to --task detect, but the task is segment"),
    ("seg", ["--detection", "0"], "--detection applies to --task detect, but the task is segment"),
    ("seg", ["--target", "3"], "--target 3 is out of range"),
    ("regressor", ["--target", "1"], "out of range for an output of 1 value"),
    ("odd", ["--target", "1"], "but the task is raw"),
]


@pytest.mark.parametrize(("model", "argv", "needle"), BAD, ids=[f"{m} {' '.join(a)}" for m, a, _ in BAD])
def test_bad_combinations_are_one_line_before_any_work(
    models: dict[str, str], image: str, tmp_path: Path, model: str, argv: list[str], needle: str, capsys
) -> None:
    out = tmp_path / "out"
    assert main(["explain", models[model], image, "--out", str(out), *argv]) == 2
    assert needle in _one_line(capsys.readouterr().err)
    assert not out.exists() or not any(out.iterdir())


def test_video_takes_the_task_too(models: dict[str, str], tmp_path: Path) -> None:
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"MJPG"), 10, (32, 32))
    for i in range(3):
        writer.write(np.random.default_rng(i).integers(0, 255, (32, 32, 3), np.uint8))
    writer.release()
    out = tmp_path / "frames"
    assert main(["video", models["v8"], str(clip), "-o", str(out), "--layer", "feat", "--detection", "0",
                 "--workers", "1"]) == 0  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    text = json.dumps(summary)
    assert '"task": "detect"' in text and '"detections"' in text and '"top_k"' not in text


def _clip(path: Path) -> str:
    """Six 32 x 32 frames: flat grey ones and noise, so the detections differ from frame to frame."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10, (32, 32))
    for i in range(6):
        noise = np.random.default_rng(i).integers(0, 255, (32, 32, 3), np.uint8)
        writer.write(noise if i % 2 else np.full((32, 32, 3), 40 * i, np.uint8))
    writer.release()
    return str(path)


def _video(model: str, clip: str, out: Path, *argv: str) -> dict[str, Any]:
    assert main(["video", model, clip, "-o", str(out), "--layer", "feat", "--workers", "1", "--batch", "2",
                 "--score-threshold", "0.5", *argv]) == 0  # fmt: skip
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return summary


def test_video_reads_separate_outputs_and_a_frame_without_the_detection_goes_on(models: dict[str, str],
                                                                                 tmp_path: Path) -> None:  # fmt: skip
    """A detector with separate boxes and scores explains every frame; a --detection K that some
    frames lack leaves those frames with the last map (none before the first), says why, counts
    them, and the video goes on."""
    clip = _clip(tmp_path / "clip.avi")
    separate = _video(models["separate"], clip, tmp_path / "s", "--detection", "1")
    assert separate["layout"] == "separate, boxes from 'boxes'" and separate["result"]["missing"] == 0
    assert all(f["explained"] and f["explained"]["detection"] == 1 for f in separate["frames"])
    counts = [f["detection_count"] for f in _video(models["v8"], clip, tmp_path / "a")["frames"]]
    k = counts[0]  # frame 0 lacks detection k, and so does every frame with as few detections
    assert max(counts) > k, counts
    s = _video(models["v8"], clip, tmp_path / "b", "--detection", str(k))
    frames = s["frames"]
    lacking = [i for i, c in enumerate(counts) if c <= k]
    assert s["result"]["frames"] == 6 and s["result"]["error"] is None
    assert s["result"]["missing"] == len(lacking) and [f["frame"] for f in frames if "missing" in f] == lacking
    first_map = None
    for i, f in enumerate(frames):
        if i in lacking:
            assert f["missing"].startswith(f"--detection {k}: this image has ") and not f["explained"]
            assert f["map_from"] == first_map
        else:
            assert f["explained"]["detection"] == k and "missing" not in f
            first_map = i
    # frame 0 has no map: it is written as it came in
    shown = cv2.imread(str(tmp_path / "b" / "frame_000000.png")).astype(np.float32)
    plain = cv2.imread(str(tmp_path / "a" / "frame_000000.png")).astype(np.float32)
    decoded = cv2.VideoCapture(clip).read()[1].astype(np.float32)
    assert np.abs(shown - decoded).mean() < 2 < np.abs(plain - decoded).mean()


def test_follow_class_refuses_the_task_flags_it_ignores(models: dict[str, str], tmp_path: Path, capsys) -> None:
    clip = _clip(tmp_path / "clip.avi")
    for flag in (["--detection", "1"], ["--detection-layout", "transposed"]):
        assert main(["video", models["v8"], clip, "-o", str(tmp_path / "o"), "--follow-class", "0", *flag]) == 2
        assert "--follow-class picks its own detection" in _one_line(capsys.readouterr().err)
