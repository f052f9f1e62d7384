"""Benchmark: the camcore video pipeline against the work bound and the naive pytorch-grad-cam loop.

A generated 720p clip (300 frames, H.264) and ResNet-18 with random weights at 224x224, CPU:
  (a) the work bound: each stage alone, single-threaded, per frame (decode with the chosen
      decoder, preprocess, plain onnxruntime inference of the unmodified model, encode of the
      overlays with the chosen codec); bound = cores / sum of the stages. The CAM's own extra costs (augmented run,
      overlay) are printed too, outside the bound;
  (b) camcore's video pipeline end to end, decode to encode, explaining every frame, with the
      source and sink ``camcore video`` uses (``--decoder``, ``--codec``);
  (c) the naive loop, when torch and pytorch-grad-cam import: read a frame, GradCAM,
      show_cam_on_image, write the frame.
Prints the configuration, per-stage costs, fps and the ratios (b)/(a) and (b)/(c).

    python tools/bench_video.py [--model resnet18.onnx] [--frames 300] [--codec h264] [--decoder pyav]
    python tools/bench_video.py --codec mp4v --decoder opencv   # the OpenCV-only set-up of earlier versions
    python tools/bench_video.py --codecs                # each codec's and decoder's ms per frame, 720p and 1080p
    python tools/bench_video.py --startup               # ``camcore video`` start-up: a 1-frame run against N frames
    python tools/bench_video.py --soak 5000             # RSS at the start and the end of 5,000 frames

Without --model, torch + torchvision export the network (input "input", output "logits").
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort


# ---------------------------------------------------------------------- inputs
def make_clip(path: Path, frames: int, height: int, width: int, fps: float = 30.0) -> Path:
    """A clip with motion and texture: shapes moving over a gradient, plus sensor noise; H.264
    (x264 ``medium``, as cameras and phones deliver) when PyAV is installed, else mp4v."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xx / width * 200, yy / height * 180, (xx + yy) / (width + height) * 220], -1).astype(np.uint8)
    noise = [rng.integers(0, 24, (height, width, 3), dtype=np.uint8) for _ in range(8)]

    def frame_at(i: int) -> np.ndarray:
        frame = cv2.add(base, noise[i % len(noise)])
        t = i / max(frames - 1, 1)
        cx, cy = int(100 + t * (width - 200)), int(height / 2 + np.sin(6 * t) * height / 4)
        cv2.circle(frame, (cx, cy), 70, (30, 30, 230), -1, cv2.LINE_AA)
        cv2.rectangle(frame, (width - cx - 60, cy - 50), (width - cx + 60, cy + 50), (230, 200, 20), -1)
        return frame

    try:
        import av
    except ImportError:
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
        for i in range(frames):
            writer.write(frame_at(i))
        writer.release()
        return path
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=round(fps), options={"preset": "medium", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame_at(i), format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def export_resnet18(path: Path) -> None:
    from torch_models import export_classifier

    export_classifier("resnet18", path)


def capture(path: Path, threads: int | None = 1) -> cv2.VideoCapture:
    params = [] if threads is None else [cv2.CAP_PROP_N_THREADS, threads]
    return cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, params)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------------- (a) stages
def per_frame_ms(fn: Callable[[], object], n: int) -> float:
    fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def decode_ms(clip: Path, decoder: str, threads: int | None = 1, keep: int = 0) -> tuple[float, list[np.ndarray]]:
    """Median ms to decode one frame to a BGR array, and the first ``keep`` frames."""
    frames, times = [], []
    if decoder == "opencv":
        cap = capture(clip, threads)
        while True:
            t0 = time.perf_counter()
            ok, frame = cap.read()
            if not ok:
                break
            times.append((time.perf_counter() - t0) * 1e3)
            if len(frames) < keep:
                frames.append(frame)
        cap.release()
    else:
        import av

        with av.open(str(clip)) as c:
            stream = c.streams.video[0]
            if threads is not None:
                stream.codec_context.thread_count = threads
            stream.thread_type = "AUTO" if threads != 1 else "SLICE"
            it = c.decode(stream)
            while True:
                t0 = time.perf_counter()
                try:
                    frame = next(it).to_ndarray(format="bgr24")
                except StopIteration:
                    break
                times.append((time.perf_counter() - t0) * 1e3)
                if len(frames) < keep:
                    frames.append(frame)
    return statistics.median(times), frames


def encode_ms(frames: list[np.ndarray], codec: str, threads: int | None = 1, fps: float = 30.0) -> float:
    """ms per frame to write ``frames`` as a file with ``codec`` (its finishing included), best of 3."""
    from camcore.video.pyav import AvSink

    best = float("inf")
    for _ in range(3):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            if codec == "mp4v":
                w = cv2.VideoWriter(os.path.join(tmp, "e.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                    frames[0].shape[1::-1])  # fmt: skip
                for f in frames:
                    w.write(f)
                w.release()
            else:
                suffix = ".webm" if codec == "vp9" else ".mp4"
                sink = AvSink(Path(tmp) / f"e{suffix}", fps, codec, threads=threads)
                for i, f in enumerate(frames):
                    sink.write(f, i / fps)
                sink.close()
            best = min(best, (time.perf_counter() - t0) * 1e3 / len(frames))
    return best


def stage_costs(
    clip: Path, model: Path, sample: int, decoder: str, codec: str
) -> tuple[dict[str, float], dict[str, float], list[np.ndarray]]:
    """Median single-threaded ms per frame of each stage; the CAM's extra costs apart."""
    import camcore
    from camcore.postprocess import overlay
    from camcore.video import Preprocess

    cv2.setNumThreads(1)
    decode, frames = decode_ms(clip, decoder, 1, keep=sample)
    pre = Preprocess((224, 224))
    x1 = pre(frames[0])[None]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    plain = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    it = iter(range(10**9))
    cam = camcore.GradCAM(str(model), threads=1)
    cam(x1)
    cmap = cam(x1)[0]
    # what is written is the overlays: they cost more to encode than the plain frames
    overlays = [overlay(f, cam(pre(f)[None])[0], rgb=False) for f in frames]
    stages = {
        f"decode ({decoder})": decode,
        "preprocess": per_frame_ms(lambda: pre(frames[next(it) % len(frames)]), 3 * sample),
        "inference (plain ORT, 1 thread)": per_frame_ms(lambda: plain.run(None, {"input": x1}), 3 * sample),
        f"encode ({codec}, the overlays)": encode_ms(overlays, codec),
    }
    extra = {
        "camcore GradCAM call (1 thread)": per_frame_ms(lambda: cam(x1), 3 * sample),
        "overlay 720p (C++, 1 thread)": per_frame_ms(
            lambda: overlay(frames[0], cmap, rgb=False, threads=1), 3 * sample
        ),
    }
    cv2.setNumThreads(-1)
    return stages, extra, frames


# ---------------------------------------------------------------------- (b) camcore
def run_pipeline(
    clip: Path,
    model: Path,
    batch: int,
    workers: int,
    decoder: str,
    codec: str,
    limit: int | None = None,
    io_threads: int | None = 1,
) -> tuple[int, float, float]:
    """Frames written, wall seconds and CPU seconds (all threads), decode to encode, warm CAM, with
    the source and sink ``camcore video`` uses."""
    import camcore
    from camcore.video import Preprocess, VideoPipeline, open_sink, open_source

    cam = camcore.GradCAM(str(model), threads=1)
    cam(np.zeros((1, 3, 224, 224), np.float32))  # compile once, outside the timing
    pipe = VideoPipeline(cam, preprocess=Preprocess((224, 224)), batch=batch, workers=workers)
    with tempfile.TemporaryDirectory() as tmp:
        source = open_source(str(clip), decoder=decoder, threads=io_threads)
        suffix = ".webm" if codec == "vp9" else ".mp4"
        fourcc = "mp4v" if codec == "mp4v" else None
        sink = open_sink(Path(tmp) / f"out{suffix}", source.fps or 30.0, fourcc,
                         codec=None if fourcc else codec, source=source.info, threads=io_threads)  # fmt: skip
        t0, c0 = time.perf_counter(), time.process_time()
        for result, info in pipe.stream(source.frames()):
            sink.write(result.overlay, info.time)
            if limit is not None and sink.written >= limit:
                break
        sink.close()
        source.close()
        return sink.written, time.perf_counter() - t0, time.process_time() - c0


# ---------------------------------------------------------------------- (c) naive
def run_naive(clip: Path, frames: int, threads: int) -> tuple[int, float] | None:
    try:
        import torch
        import torchvision
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.image import show_cam_on_image
    except ImportError:
        return None
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None).eval()
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    explainer = GradCAM(model=net, target_layers=[net.layer4[-1]])
    cap = cv2.VideoCapture(str(clip))
    fps = cap.get(cv2.CAP_PROP_FPS)
    with tempfile.TemporaryDirectory() as tmp:
        writer = None
        n = 0
        t0 = time.perf_counter()
        while n < frames:
            ok, frame = cap.read()
            if not ok:
                break
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            small = cv2.resize(rgb, (224, 224)).astype(np.float32) / 255
            x = torch.from_numpy(((small - mean) / std).transpose(2, 0, 1).copy())[None]
            grayscale = explainer(input_tensor=x, targets=None)[0]
            big = cv2.resize(grayscale, (frame.shape[1], frame.shape[0]))
            shown = show_cam_on_image(rgb.astype(np.float32) / 255, big, use_rgb=True)
            if writer is None:
                size = (frame.shape[1], frame.shape[0])
                writer = cv2.VideoWriter(os.path.join(tmp, "n.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
            writer.write(cv2.cvtColor(shown, cv2.COLOR_RGB2BGR))
            n += 1
        seconds = time.perf_counter() - t0
        if writer is not None:
            writer.release()
    cap.release()
    return n, seconds


# ---------------------------------------------------------------------- soak
def soak(clip: Path, model: Path, total: int, batch: int, workers: int) -> None:
    import camcore
    from camcore.video import Preprocess, VideoPipeline, VideoSink, read_frames

    def looped() -> Iterator[np.ndarray]:
        while True:
            yield from read_frames(capture(clip, 1))

    cam = camcore.GradCAM(str(model), threads=1)
    pipe = VideoPipeline(cam, preprocess=Preprocess((224, 224)), batch=batch, workers=workers)
    marks: list[tuple[int, float]] = [(0, rss_mb())]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, VideoSink(Path(tmp) / "soak.mp4", 30.0) as sink:
        for result in pipe.run(looped()):
            sink.write(result.overlay)
            if sink.written % 500 == 0:
                marks.append((sink.written, rss_mb()))
                print(f"  {sink.written:5d} frames  RSS {marks[-1][1]:7.1f} MB", flush=True)
            if sink.written >= total:
                break
    seconds = time.perf_counter() - t0
    steady = next(m for m in marks if m[0] >= 500)
    print(f"soak: {total} frames in {seconds:.0f} s ({total / seconds:.1f} fps)")
    growth = marks[-1][1] - steady[1]
    print(f"RSS before the first frame {marks[0][1]:.1f} MB, at frame {steady[0]} {steady[1]:.1f} MB, "
          f"at the end {marks[-1][1]:.1f} MB (change from frame {steady[0]}: {growth:+.1f} MB)")  # fmt: skip


def codec_costs(work: Path, frames: int) -> None:
    """Each codec's and decoder's ms per frame at 720p and 1080p, on 1 thread and on every core."""
    from camcore.video.pyav import CODECS

    print("| size | codec | encode ms/frame, 1 thread | encode, all cores |\n|---|---|---|---|")
    clips = {}
    for h, w in ((720, 1280), (1080, 1920)):
        clip = make_clip(work / f"codec_{h}.mp4", frames, h, w)
        clips[h] = clip
        _, sample = decode_ms(clip, "opencv", None, keep=frames)
        for codec in ("mp4v", *CODECS):
            print(f"| {h}p | {codec} | {encode_ms(sample, codec, 1):.2f} | {encode_ms(sample, codec, None):.2f} |",
                  flush=True)  # fmt: skip
    print("\n| size | decoder | decode ms/frame, 1 thread | decode, all cores |\n|---|---|---|---|")
    for h, clip in clips.items():
        for decoder in ("opencv", "pyav"):
            one = statistics.median(decode_ms(clip, decoder, 1)[0] for _ in range(3))
            every = statistics.median(decode_ms(clip, decoder, None)[0] for _ in range(3))
            print(f"| {h}p | {decoder} | {one:.2f} | {every:.2f} |", flush=True)


def startup(model: Path, clip: Path, frames: int, rounds: int) -> None:
    """``camcore video`` as a user runs it: t(n) = start-up + n x per-frame, from a 1-frame run and a
    whole-clip run, alternating; medians."""
    short, full = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            for n, times in ((1, short), (frames, full)):
                out = Path(tmp) / f"s{n}.mp4"
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-m", "camcore", "video", str(model), str(clip), "-o", str(out),
                                "--max-frames", str(n)], check=True, capture_output=True)  # fmt: skip
                times.append(time.perf_counter() - t0)
    t1, tn = statistics.median(short), statistics.median(full)
    per_frame = (tn - t1) / (frames - 1)
    print(f"camcore video: 1 frame {t1:.2f} s, {frames} frames {tn:.2f} s (medians of {rounds}); start-up "
          f"{t1 - per_frame:.2f} s, then {per_frame * 1e3:.1f} ms per frame ({1 / per_frame:.1f} fps)")  # fmt: skip


# ---------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="a ResNet-18 ONNX with input 'input' (default: export one with torch)")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--size", default="720x1280", help="clip HxW")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--naive-frames", type=int, default=60, help="frames for the (slow) naive loop")
    ap.add_argument("--sample", type=int, default=40, help="frames kept for the stage timings")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of (a) and (b)")
    ap.add_argument("--soak", type=int, help="run N frames through the pipeline and report RSS instead")
    ap.add_argument("--codec", default="h264", choices=("h264", "vp9", "av1", "mp4v"), help="output codec")
    ap.add_argument("--decoder", default="pyav", choices=("pyav", "opencv"), help="input decoder")
    ap.add_argument("--codecs", action="store_true", help="each codec's and decoder's cost per frame instead")
    ap.add_argument("--startup", action="store_true", help="camcore video's start-up instead")
    ap.add_argument("--export", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.export:
        export_resnet18(args.export)
        return

    import onnx

    import camcore

    cores = os.cpu_count() or 1
    h, w = (int(v) for v in args.size.split("x"))
    tmp = tempfile.TemporaryDirectory()
    work = Path(tmp.name)
    model = args.model
    if model is None:  # exported in a child process: torch stays out of this one's memory
        model = work / "resnet18.onnx"
        subprocess.run([sys.executable, "-W", "ignore", __file__, "--export", str(model)], check=True)
    onnx.checker.check_model(str(model))
    clip = make_clip(work / "clip.mp4", args.frames, h, w)
    print(f"machine: {platform.machine()}, {cores} cores; python {platform.python_version()}")
    versions = f"onnxruntime {ort.__version__}, OpenCV {cv2.__version__}, numpy {np.__version__}"
    print(f"camcore {camcore.__version__}, {versions}")
    print(f"clip: {args.frames} frames {w}x{h} (generated); model: {model.name} at 224x224, CPU")
    if args.codecs:
        codec_costs(work, args.frames)
        return
    if args.startup:
        startup(model, clip, args.frames, args.rounds)
        return
    if args.soak:
        print(f"soak: {args.soak} frames, batch {args.batch}, {args.workers} workers x 1 onnxruntime thread")
        soak(clip, model, args.soak, args.batch, args.workers)
        return

    rounds = []
    for r in range(args.rounds):  # stages and pipeline alternate, so both see the same machine load
        stages, extra, _ = stage_costs(clip, model, args.sample, args.decoder, args.codec)
        bound = cores / sum(stages.values()) * 1e3
        n, seconds, cpu = run_pipeline(clip, model, args.batch, args.workers, args.decoder, args.codec)
        rounds.append((stages, extra, bound, n / seconds, cpu * 1e3 / n))
        print(f"round {r + 1}: work bound {bound:.1f} fps, camcore video {n / seconds:.1f} fps "
              f"({n} frames in {seconds:.2f} s): {n / seconds / bound:.2f}x; "
              f"CPU {cpu * 1e3 / n:.1f} ms/frame vs stage sum {sum(stages.values()):.1f} ms")  # fmt: skip

    print(f"\n(a) stage costs, single-threaded, median ms per frame (median of {args.rounds} rounds)")
    print("| stage | ms per frame |\n|---|---|")
    stages = {k: statistics.median(rd[0][k] for rd in rounds) for k in rounds[0][0]}
    for name, ms in stages.items():
        print(f"| {name} | {ms:.2f} |")
    total = sum(stages.values())
    print(f"| **sum** | **{total:.2f}** |")
    inference = stages["inference (plain ORT, 1 thread)"]
    print(f"work bound: {cores} cores / {total:.2f} ms = {cores / total * 1e3:.1f} fps "
          f"(inference alone, all cores: {cores * 1e3 / inference:.1f} fps)")  # fmt: skip
    for name in rounds[0][1]:
        print(f"  not in the bound: {name}: {statistics.median(rd[1][name] for rd in rounds):.2f} ms")
    bound = statistics.median(rd[2] for rd in rounds)
    fps_b = statistics.median(rd[3] for rd in rounds)
    cpu_b = statistics.median(rd[4] for rd in rounds)
    print(f"\n(b) CPU time, all threads: {cpu_b:.1f} ms per frame (the bound's stages: {total:.1f} ms); "
          f"on {cores} idle cores that allows {cores * 1e3 / cpu_b:.1f} fps")  # fmt: skip
    print(f"(b) camcore video pipeline: {fps_b:.1f} fps, median of {args.rounds} rounds "
          f"(batch {args.batch}, {args.workers} workers x 1 onnxruntime thread, {args.decoder} in, "
          f"{args.codec} out)")  # fmt: skip

    print()
    naive: dict[int, tuple[int, float]] = {}
    for threads in sorted({1, cores}):
        got = run_naive(clip, args.naive_frames, threads)
        if got is None:
            print("(c) naive loop: skipped (torch / pytorch-grad-cam not importable)")
            break
        naive[threads] = got
        print(f"(c) naive pytorch-grad-cam loop, torch {threads} thread(s): {got[0]} frames in {got[1]:.2f} s "
              f"= {got[0] / got[1]:.1f} fps")  # fmt: skip
    fps_c = max((n / t for n, t in naive.values()), default=None)

    print("\n| | fps | ratio |\n|---|---|---|")
    print(f"| (a) work bound | {bound:.1f} | |")
    ratio = statistics.median(rd[3] / rd[2] for rd in rounds)  # each round's pair, measured back to back
    print(f"| (b) camcore video | {fps_b:.1f} | (b)/(a) = {ratio:.2f}x (median of the rounds' ratios) |")
    if fps_c is not None:
        print(f"| (c) naive loop (its faster thread setting) | {fps_c:.1f} | (b)/(c) = {fps_b / fps_c:.1f}x |")
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (other processes on these {cores} cores skew all rows)")
    tmp.cleanup()


if __name__ == "__main__":
    main()
