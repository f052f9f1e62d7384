"""Video through PyAV: H.264/VP9/AV1 outputs that keep the input's audio, timing, rotation and
colour; files left by interrupted and killed runs; segments; reconnecting streams; PyAV frames in
the Python API; the OpenCV fallback."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from camcore.cli import main
from camcore.demo import DEMO_MODEL
from tests.video.media import moov_before_mdat, streams, write_media

av = pytest.importorskip("av")

DEMO = str(DEMO_MODEL)


def run(*argv: str) -> int:
    return main(["video", DEMO, *argv])


@pytest.fixture(scope="module")
def with_audio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_media(tmp_path_factory.mktemp("media") / "in.mp4", n=30, audio_seconds=1.5)


def test_default_output_is_h264_with_the_inputs_audio(with_audio: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    assert run(str(with_audio), "-o", str(out)) == 0
    got, src = streams(out), streams(with_audio)
    assert got["video"] == "h264" and got["audio"] == "aac" and moov_before_mdat(out)
    assert got["times"] == pytest.approx(src["times"], abs=1e-3)
    assert abs(got["audio_end"] - src["audio_end"]) < 0.05  # the whole track, copied
    assert not list(tmp_path.glob("*partial*"))
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["writer"] == "AvSink" and summary["codec"] == "h264" and summary["decoder"] == "AvSource"


def test_variable_frame_timing_is_kept(tmp_path: Path) -> None:
    times = [0.0, 0.04, 0.08, 0.3, 0.34, 0.9, 0.94, 0.98, 1.5, 1.54]
    src = write_media(tmp_path / "vfr.mp4", n=len(times), times=times)
    for decoder in ("pyav", "opencv"):
        out = tmp_path / f"out_{decoder}.mp4"
        assert run(str(src), "-o", str(out), "--decoder", decoder) == 0
        assert streams(out)["times"] == pytest.approx(times, abs=2e-3), decoder


@pytest.mark.parametrize(("suffix", "codec", "want_video", "want_audio"),
                         [(".webm", None, "vp9", "opus"), (".mkv", "av1", "libdav1d", "aac"),
                          (".mov", "h264", "h264", "aac")])  # fmt: skip
def test_other_codecs(with_audio: Path, tmp_path: Path, suffix: str, codec: str | None, want_video: str,
                      want_audio: str, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    out = tmp_path / f"out{suffix}"
    argv = [str(with_audio), "-o", str(out), *(["--codec", codec] if codec else []), "--quality", "low"]
    assert run(*argv) == 0
    err = capsys.readouterr().err
    got = streams(out)
    assert got["video"] in (want_video, want_video.replace("libdav1d", "av1")) and got["audio"] == want_audio
    assert len(got["times"]) == 30
    if want_audio == "opus":
        assert "camcore: warning: the input's aac audio is re-encoded to Opus" in err  # said, not silent


def test_av1_leaves_no_thread_at_real_time_priority(tmp_path: Path) -> None:
    """SVT-AV1 run as root turns its caller's thread and its workers SCHED_FIFO 99; a process
    started afterwards would inherit it and could shut this one out of every core."""
    from camcore.video.pyav import AvSink, _thread_policies

    if os.geteuid() != 0:
        pytest.skip("only root may raise a thread to real-time priority, so there is nothing to undo")
    with AvSink(tmp_path / "o.webm", fps=25, codec="av1") as sink:
        for _ in range(3):
            sink.write(np.zeros((64, 64, 3), np.uint8))
        during = _thread_policies()
    after = _thread_policies()
    real_time = {os.SCHED_FIFO, os.SCHED_RR}
    assert len(during) > 3 and not real_time & set(during.values()), during
    assert not real_time & set(after.values()), after


def test_bad_codec_and_quality_are_one_line(with_audio: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cases = [(["--codec", "vp9"], "does not go in '.mp4'"), (["--quality", "best"], "quality must be"),
             (["--quality", "99"], "0..63"), (["--segment", "1", "--fourcc", "MJPG"], "need PyAV"),
             (["-o", str(tmp_path / "o.flv")], "videos, or frames into a folder")]  # fmt: skip
    for argv, needle in cases:
        assert run(str(with_audio), "-o", str(tmp_path / "o.mp4"), *argv) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line]
        assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "o.mp4").exists()


def test_rotated_input_is_explained_upright(tmp_path: Path) -> None:
    src = write_media(tmp_path / "phone.mp4", n=6, size=(64, 96), rotation=90)
    out = tmp_path / "out.mp4"
    assert run(str(src), "-o", str(out)) == 0
    got = streams(out)
    assert got["size"] == (96, 64) and not got["rotation"]  # stored upright: plays as the input displays


def test_colour_metadata_carries_over(tmp_path: Path) -> None:
    bt709 = {"color_primaries": 1, "color_trc": 1, "colorspace": 1}
    src = write_media(tmp_path / "hd.mp4", n=5, colour=bt709)
    out = tmp_path / "out.mp4"
    assert run(str(src), "-o", str(out)) == 0
    assert streams(out)["colour"] == bt709


def test_interrupted_run_trims_the_audio_to_the_video(with_audio: Path, tmp_path: Path, monkeypatch) -> None:
    from camcore.video.pyav import AvSource

    frames = AvSource.frames

    def interrupted(self):  # type: ignore[no-untyped-def]
        for i, frame in enumerate(frames(self)):
            if i == 10:
                raise KeyboardInterrupt
            yield frame

    monkeypatch.setattr(AvSource, "frames", interrupted)
    out = tmp_path / "cut.mp4"
    assert run(str(with_audio), "-o", str(out)) == 130
    got = streams(out)
    assert len(got["times"]) == 10 and got["audio"] == "aac"
    assert got["audio_end"] <= got["times"][-1] + 0.1  # no audio after the last frame


def test_segments(with_audio: Path, tmp_path: Path) -> None:
    out = tmp_path / "seg.mp4"
    assert run(str(with_audio), "-o", str(out), "--segment", str(0.4 / 60)) == 0  # 0.4 s each
    parts = sorted(tmp_path.glob("seg_*.mp4"))
    assert [p.name for p in parts] == ["seg_000.mp4", "seg_001.mp4", "seg_002.mp4"]
    counts = [len(streams(p)["times"]) for p in parts]
    assert counts == [10, 10, 10] and all(streams(p)["times"][0] == pytest.approx(0.0, abs=1e-3) for p in parts)
    assert all(streams(p)["audio"] == "aac" for p in parts)
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["result"]["segments"] == [str(p) for p in parts]


def test_a_killed_run_leaves_a_playable_partial_file_and_the_old_output(tmp_path: Path) -> None:
    src = write_media(tmp_path / "long.mp4", n=1500, size=(96, 128))
    out = tmp_path / "out.mp4"
    out.write_bytes(b"the previous result")
    proc = subprocess.Popen([sys.executable, "-m", "camcore", "video", DEMO, str(src), "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    partial = tmp_path / "out.partial.mp4"
    end = time.monotonic() + 60
    while (not partial.exists() or partial.stat().st_size < 20000) and time.monotonic() < end and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert out.read_bytes() == b"the previous result"
    got = streams(partial)  # fragmented MP4: plays up to the last complete fragment
    assert got["video"] == "h264" and len(got["times"]) > 0


class _Streamer:
    """A local live stream: H.264 in MPEG-TS over TCP, served by a subprocess that can be stopped."""

    def __init__(self, port: int, frames: int) -> None:
        code = f"""
import av, numpy as np, time
out = av.open("tcp://127.0.0.1:{port}?listen=1", "w", format="mpegts")
s = out.add_stream("libx264", rate=25, options={{"preset": "ultrafast", "tune": "zerolatency"}})
s.width, s.height, s.pix_fmt = 128, 96, "yuv420p"
for i in range({frames}):
    img = np.full((96, 128, 3), 40, np.uint8); img[:, (4 * i) % 112:(4 * i) % 112 + 16] = 230
    for p in s.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
        out.mux(p)
    time.sleep(0.02)
for p in s.encode():
    out.mux(p)
out.close()
"""
        self.proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("decoder", ["pyav", "opencv"])
def test_a_live_stream_reconnects_after_a_drop(tmp_path: Path, caplog: pytest.LogCaptureFixture, decoder: str) -> None:
    """The server stops mid-stream and comes back: the reader logs the gap, reconnects and goes on."""
    from camcore.video import open_source

    port = _free_port()
    first = _Streamer(port, 10_000)
    time.sleep(1.0)
    source = open_source(f"tcp://127.0.0.1:{port}", decoder=decoder, retries=6)
    got = 0
    second = None
    with caplog.at_level(logging.WARNING, logger="camcore.video"):
        for _ in source.frames():
            got += 1
            if got == 20:
                first.stop()  # the stream drops
                second = _Streamer(port, 30)  # and a new one starts on the same port
            if got >= 45:
                break
    source.close()
    if second is not None:
        second.stop()
    assert got >= 45, f"only {got} frames"
    assert "dropped" in caplog.text or "ended" in caplog.text
    assert ("reconnected" in caplog.text or "reopened" in caplog.text) and source.gaps


def test_python_api_takes_and_gives_pyav_frames(with_audio: Path, tmp_path: Path) -> None:
    """A PyAV read -> explain -> write loop: overlays come back as PyAV frames with the input's times."""
    import camcore
    from camcore.video import explain_frames

    cam = camcore.GradCAM(DEMO, threads=1)
    out_path = tmp_path / "loop.mp4"
    with av.open(str(with_audio)) as src, av.open(str(out_path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        times = []
        for result in explain_frames(src.decode(video=0), cam, output="av", smooth=0.5):
            assert isinstance(result.overlay, av.VideoFrame) and isinstance(result.frame, av.VideoFrame)
            assert result.overlay.pts == result.frame.pts
            times.append(result.overlay.time)
            for packet in stream.encode(result.overlay):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    assert times == pytest.approx(streams(with_audio)["times"], abs=1e-3)
    assert len(streams(out_path)["times"]) == 30


def test_without_pyav_opencv_writes_mp4v_and_says_so(with_audio: Path, tmp_path: Path, monkeypatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    import camcore.video.io as io

    monkeypatch.setattr(io, "have_pyav", lambda: False)
    out = tmp_path / "old.mp4"
    assert run(str(with_audio), "-o", str(out)) == 0
    err = capsys.readouterr().err
    assert "camcore: warning: PyAV is not installed" in err and "browsers do not play" in err
    assert streams(out)["video"] == "mpeg4"


def test_skips_without_audio_gracefully(tmp_path: Path) -> None:
    src = write_media(tmp_path / "silent.mp4", n=8)
    out = tmp_path / "out.webm"
    assert run(str(src), "-o", str(out)) == 0
    got = streams(out)
    assert got["video"] == "vp9" and got["audio"] is None and len(got["times"]) == 8
    assert os.path.getsize(out) > 0 and np.asarray(got["first"]).mean() > 0
