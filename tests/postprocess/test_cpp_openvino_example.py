"""cpp/examples/openvino_cam_example.cpp builds against the openvino wheel, runs an exported CAM model
with OpenVINO's C++ API, and draws what the Python API draws.

Three models: the demo classifier exported by ``camcore.export_cam_model`` (with the default
optional ``class``, which OpenVINO folds into -1, and with ``class_input="required"`` and the
in-graph overlay), and a hand-made one (a tiny conv net whose Grad-CAM is written out in ONNX ops,
with the export's input and output names), so the C++ side is tested on its own too. For each,
on a frame at the model's size and on a larger one (resized by the example with
camcore::resize_bilinear, reproduced here with ``resize_cam``):

* the example's map (``--save-cam``) equals ``camcore.GradCAM`` on the same input to 1e-3 (the
  OpenVINO tolerance of issue 11);
* its overlay is exactly ``camcore.overlay(frame, its map)`` (the same C++ drawing);
* its overlay against ``camcore.overlay(frame, Python map)``: a pixel may differ only where the two
  maps quantize to different colour levels, and then by at most ``ceil(alpha * s) + 1`` per channel,
  ``s`` the largest step between neighbouring entries of the colour table (the map differs by
  < 1/255, so the levels by at most 1; +1 for the blend's rounding);
* with ``--class 2`` where the model has a ``class`` input, the same against ``ClassifierOutputTarget(2)``;
* for the overlay export, the graph's ``overlay`` output is exactly ``camcore.overlay`` of the
  ``image`` the example fed and of the map.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import camcore
from camcore.postprocess import colormap_table, overlay, resize_cam

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build" / "pytest-openvino-cam"  # kept between runs: a rebuild is incremental
SIZE = 96  # the demo classifier's input size; the hand-made model uses it too
MEAN = (0.45, 0.5, 0.55)  # distinct per channel, so a channel mix-up shows
STD = (0.22, 0.25, 0.28)
ALPHA = 0.5
COLORMAP = "jet"


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++") or shutil.which("clang++")


@pytest.fixture(scope="module")
def example() -> Path:
    """The built camcore_openvino_cam, with the documented cmake commands."""
    spec = importlib.util.find_spec("openvino")  # found, not imported: OpenVINO stays out of the test process
    if spec is None or spec.origin is None:
        pytest.skip("openvino is not installed")
    ov_cmake = Path(spec.origin).parent / "cmake"
    if shutil.which("cmake") is None or _compiler() is None:
        pytest.skip("needs cmake and a C++ compiler")
    if not (ov_cmake / "OpenVINOConfig.cmake").exists():
        pytest.skip(f"this openvino install has no C++ package ({ov_cmake}/OpenVINOConfig.cmake)")
    BUILD.parent.mkdir(parents=True, exist_ok=True)
    with open(BUILD.parent / "pytest-openvino-cam.lock", "w") as lock:
        if fcntl is not None:  # another pytest run may be building the same folder
            fcntl.flock(lock, fcntl.LOCK_EX)
        _build(ov_cmake)
    return next(p for p in BUILD.rglob("camcore_openvino_cam*") if p.is_file() and p.suffix in ("", ".exe"))


def _build(ov_cmake: Path) -> None:
    configure = ["cmake", "-S", str(ROOT / "cpp"), "-B", str(BUILD), "-DCMAKE_BUILD_TYPE=Release"]
    configure += ["-DCAMCORE_BUILD_OPENVINO_EXAMPLE=ON", "-DCAMCORE_BUILD_TESTS=OFF", f"-DOpenVINO_DIR={ov_cmake}"]
    done = subprocess.run(configure, capture_output=True, text=True, check=False)
    if done.returncode != 0 and (BUILD / "CMakeCache.txt").exists():  # a cache from another checkout
        shutil.rmtree(BUILD)
        done = subprocess.run(configure, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    build = ["cmake", "--build", str(BUILD), "--target", "camcore_openvino_cam", "--parallel", "2"]
    done = subprocess.run(build, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def _handmade_models() -> tuple[onnx.ModelProto, onnx.ModelProto, str]:
    """A tiny classifier, the same with its Grad-CAM written out in ONNX, and the explained layer.

    Conv(stride 4) -> Relu = A (N, 8, 24, 24) -> GlobalAveragePool -> Gemm = logits. The gradient
    of logit c with respect to A is W[c] / (24 * 24) everywhere, so the Grad-CAM weights are that,
    and cam = s(R(s(relu(sum_k w_k A_k)))) with s the per-image min-max scaling and R the bilinear
    resize: the map assembly of camcore.maps for one layer.
    """
    rng = np.random.default_rng(11)
    classes, channels = 5, 8
    c = helper.make_node
    consts = {
        "wc": rng.standard_normal((channels, 3, 5, 5)).astype(np.float32) * 0.3,
        "bc": rng.standard_normal(channels).astype(np.float32) * 0.1,
        "wl": rng.standard_normal((classes, channels)).astype(np.float32),
        "bl": rng.standard_normal(classes).astype(np.float32),
    }
    forward = [
        c("Conv", ["input", "wc", "bc"], ["a0"], pads=[2, 2, 2, 2], strides=[4, 4]),
        c("Relu", ["a0"], ["A"]),
        c("GlobalAveragePool", ["A"], ["g"]),
        c("Flatten", ["g"], ["gf"]),
        c("Gemm", ["gf", "wl", "bl"], ["logits"], transB=1),
    ]
    x_info = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])
    logits_info = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])
    inits = [numpy_helper.from_array(v, k) for k, v in consts.items()]
    base = helper.make_model(
        helper.make_graph(forward, "tiny", [x_info], [logits_info], inits),
        opset_imports=[helper.make_opsetid("", 18)],
        ir_version=8,  # what every supported onnxruntime reads
    )
    area = np.float32((SIZE // 4) ** 2)
    more = {
        "inv_area": np.array(1 / area, np.float32),
        "zero": np.array(0, np.int64),
        "ax1": np.array([1], np.int64),
        "ax12": np.array([1, 2], np.int64),
        "ax23": np.array([2, 3], np.int64),
        "eps": np.array(1e-7, np.float32),
        "nc": np.array([0, 1], np.int64),
        "hw": np.array([SIZE, SIZE], np.int64),
    }

    def minmax(src: str, dst: str) -> list[onnx.NodeProto]:
        return [
            c("ReduceMin", [src, "ax12"], [dst + "_min"], keepdims=1),
            c("Sub", [src, dst + "_min"], [dst + "_d"]),
            c("ReduceMax", [dst + "_d", "ax12"], [dst + "_max"], keepdims=1),
            c("Add", [dst + "_max", "eps"], [dst + "_den"]),
            c("Div", [dst + "_d", dst + "_den"], [dst]),
        ]

    cam_nodes = [
        c("ArgMax", ["logits"], ["top"], axis=1, keepdims=0),
        c("Less", ["class", "zero"], ["unset"]),
        c("Where", ["unset", "top", "class"], ["chosen"]),
        c("Gather", ["wl", "chosen"], ["w_sel"], axis=0),
        c("Mul", ["w_sel", "inv_area"], ["w"]),
        c("Unsqueeze", ["w", "ax23"], ["w4"]),
        c("Mul", ["w4", "A"], ["wa"]),
        c("ReduceSum", ["wa", "ax1"], ["m"], keepdims=0),
        c("Relu", ["m"], ["m_relu"]),
        *minmax("m_relu", "s1"),
        c("Unsqueeze", ["s1", "ax1"], ["s1_4"]),
        c("Shape", ["s1_4"], ["s1_shape"]),
        c("Gather", ["s1_shape", "nc"], ["s1_nc"]),
        c("Concat", ["s1_nc", "hw"], ["size"], axis=0),
        c("Resize", ["s1_4", "", "", "size"], ["r4"], mode="linear", coordinate_transformation_mode="half_pixel"),
        c("Squeeze", ["r4", "ax1"], ["r"]),
        *minmax("r", "cam"),
    ]
    inits += [numpy_helper.from_array(v, k) for k, v in more.items()]
    class_info = helper.make_tensor_value_info("class", TensorProto.INT64, ["N"])
    cam_info = helper.make_tensor_value_info("cam", TensorProto.FLOAT, ["N", SIZE, SIZE])
    graph = helper.make_graph(forward + cam_nodes, "tiny_cam", [x_info, class_info], [logits_info, cam_info], inits)
    cam_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    onnx.checker.check_model(cam_model, full_check=True)
    return base, cam_model, "A"


def _models(kind: str, tmp_path: Path) -> tuple[onnx.ModelProto | str, Path, str]:
    """(the model the Python API explains, the exported CAM model's path, the layer)."""
    path = tmp_path / f"{kind}_cam.onnx"
    if kind == "handmade":
        base, cam_model, layer = _handmade_models()
        onnx.save(cam_model, str(path))
        return base, path, layer
    from camcore.demo import DEMO_MODEL, load_demo_meta

    layer = load_demo_meta()["target_layer"]
    if kind == "exported":  # `class` defaults to -1: OpenVINO folds it, the example explains the top-1 class
        camcore.export_cam_model(str(DEMO_MODEL), str(path), layers=[layer])
    else:  # a `class` input OpenVINO keeps, and the in-graph overlay fed with the frame as `image`
        camcore.export_cam_model(
            str(DEMO_MODEL), str(path), layers=[layer], class_input="required", overlay=True, colormap=COLORMAP
        )
    return str(DEMO_MODEL), path, layer


def _write_ppm(path: Path, *frames: np.ndarray) -> None:
    path.write_bytes(b"".join(f"P6\n{f.shape[1]} {f.shape[0]}\n255\n".encode() + f.tobytes() for f in frames))


def _read_netpbm(path: Path) -> np.ndarray:
    magic, dims, scale, data = path.read_bytes().split(b"\n", 3)
    width, height = map(int, dims.split())
    if magic == b"Pf":  # little-endian float PFM, rows bottom to top
        assert float(scale) < 0
        return np.frombuffer(data, "<f4").reshape(height, width)[::-1]
    assert magic == b"P6"
    return np.frombuffer(data, np.uint8).reshape(height, width, 3)


def _planes(frame: np.ndarray) -> np.ndarray:
    """The frame at the model's size as the example resizes it: float planes, camcore's bilinear resize."""
    return np.stack([resize_cam(frame[..., ch].astype(np.float32), (SIZE, SIZE)) for ch in range(3)])


def _model_input(frame: np.ndarray) -> np.ndarray:
    """The example's preprocessing: per-channel bilinear resize (camcore's), then v * mul + add."""
    planes = _planes(frame)
    std = np.asarray(STD, np.float32)[:, None, None]
    mul = np.float32(1) / (np.float32(255) * std)
    add = -np.asarray(MEAN, np.float32)[:, None, None] / std
    return (planes * mul + add)[None].astype(np.float32)


def _frames() -> list[np.ndarray]:
    from camcore.scenes import generate_scene

    rng = np.random.default_rng(5)
    small = generate_scene(rng, SIZE).image
    large = generate_scene(rng, 150).image[:130]  # 150 x 130: resized by the example
    return [small, large]


def _run(exe: Path, model: Path, out: Path, *frames: Path, extra: tuple[str, ...] = ()) -> str:
    args = [str(exe), str(model), str(out), *map(str, frames), "--mean", ",".join(map(str, MEAN))]
    args += ["--std", ",".join(map(str, STD)), "--alpha", str(ALPHA), "--colormap", COLORMAP, "--save-cam", *extra]
    done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _exposes_class(path: Path) -> bool:
    """OpenVINO feeds ``class`` when it is a plain graph input; an input backed by an initializer
    of the same name (the optional default) is frozen to that constant."""
    graph = onnx.load(str(path), load_external_data=False).graph
    return "class" in {i.name for i in graph.input} - {t.name for t in graph.initializer}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["handmade", "exported", "exported_overlay"])
def test_openvino_example_matches_python(example: Path, tmp_path: Path, kind: str) -> None:
    model, cam_path, layer = _models(kind, tmp_path)
    frames = _frames()
    paths = [tmp_path / f"frame{i}.ppm" for i in range(len(frames))]
    for p, f in zip(paths, frames):
        _write_ppm(p, f)
    cam = camcore.GradCAM(model, [layer])
    table = colormap_table(COLORMAP).astype(int)
    bound = math.ceil(ALPHA * np.abs(np.diff(table, axis=0)).max()) + 1

    runs: list[tuple[str, tuple[str, ...], list[camcore.Target] | None]] = [("top1", (), None)]
    if kind != "exported":
        assert _exposes_class(cam_path)
        runs.append(("class2", ("--class", "2"), [camcore.ClassifierOutputTarget(2)]))
    for name, extra, targets in runs:
        out = tmp_path / name
        _run(example, cam_path, out, *paths, extra=extra)
        for p, frame in zip(paths, frames):
            got_cam = _read_netpbm(out / f"{p.stem}_cam.pfm")
            got = _read_netpbm(out / f"{p.stem}_overlay.ppm")
            want_cam = cam(_model_input(frame), targets)[0]
            np.testing.assert_allclose(got_cam, want_cam, rtol=0, atol=1e-3, err_msg=f"{kind} {name} {p.name}")
            np.testing.assert_array_equal(got, overlay(frame, got_cam, ALPHA, COLORMAP))
            want = overlay(frame, want_cam, ALPHA, COLORMAP).astype(int)
            diff = np.abs(got.astype(int) - want).max(axis=-1)
            levels = np.abs(
                _levels(resize_cam(got_cam, frame.shape[:2])) - _levels(resize_cam(want_cam, frame.shape[:2]))
            )
            assert levels.max() <= 1
            assert diff[levels == 0].max(initial=0) == 0
            assert diff.max() <= bound, f"{kind} {name} {p.name}: overlay differs by {diff.max()} > {bound}"
            if kind == "exported_overlay":  # the graph's own blend, of the frame as the example fed it as `image`
                image = np.floor(np.clip(_planes(frame), 0, 255) + 0.5).astype(np.uint8).transpose(1, 2, 0)
                graph = _read_netpbm(out / f"{p.stem}_graph_overlay.ppm")
                np.testing.assert_array_equal(graph, overlay(image, got_cam, ALPHA, COLORMAP))


def _levels(cam: np.ndarray) -> np.ndarray:
    """The colour level of each pixel, as the overlay quantizes it."""
    return (np.float32(255) * np.clip(cam, 0, 1)).astype(np.uint8).astype(int)


@pytest.mark.slow
def test_openvino_example_reads_a_stream_and_rejects_bad_input(example: Path, tmp_path: Path) -> None:
    _, cam_model, _ = _handmade_models()
    model = tmp_path / "cam.onnx"
    onnx.save(cam_model, str(model))
    frame = _frames()[0]
    stream = tmp_path / "clip.ppm"
    _write_ppm(stream, frame, frame[::-1].copy())  # two frames back to back, as ffmpeg's image2pipe writes
    stdout = _run(example, model, tmp_path / "out", stream)
    assert "2 frame(s)" in stdout
    first, second = (_read_netpbm(tmp_path / "out" / f"clip_{k}_overlay.ppm") for k in range(2))
    assert first.shape == second.shape == frame.shape
    assert not np.array_equal(first, second)

    usage = subprocess.run([str(example), str(model)], capture_output=True, text=True, check=False)
    assert usage.returncode == 2 and "usage:" in usage.stderr
    for bad, message in ((["--alpha", "x"], "--alpha needs a number"), (["--colormap", "nope"], "unknown --colormap")):
        done = subprocess.run(
            [str(example), str(model), str(tmp_path / "o"), str(stream), *bad], capture_output=True, text=True
        )
        assert done.returncode == 2 and message in done.stderr, done.stderr
    bad = tmp_path / "bad.ppm"
    bad.write_bytes(b"P3\n2 2\n255\n0 0 0")
    done = subprocess.run([str(example), str(model), str(tmp_path / "o"), str(bad)], capture_output=True, text=True)
    assert done.returncode == 1 and "not a binary PPM" in done.stderr
    base = tmp_path / "base.onnx"
    onnx.save(_handmade_models()[0], str(base))
    done = subprocess.run([str(example), str(base), str(tmp_path / "o"), str(stream)], capture_output=True, text=True)
    assert done.returncode == 1 and "no output named 'cam'" in done.stderr
