"""camcore.video.io: opening sources, the video and folder sinks, the streamed JSON summary."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from camcore.errors import CamcoreError
from camcore.video import io
from camcore.video.io import (
    FolderSink,
    SummaryWriter,
    VideoSink,
    open_sink,
    open_source,
    read_frames,
    summary_path,
)


def _frames(n: int, h: int = 24, w: int = 32) -> list[np.ndarray]:
    rng = np.random.default_rng(n)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


# ------------------------------------------------------------------------------ sources


def test_image_glob_in_sorted_order(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    frames = _frames(3)
    for i, f in zip((2, 0, 1), frames):  # written out of order
        cv2.imwrite(str(tmp_path / f"img_{i}.png"), f)
    (tmp_path / "img_3.png").write_bytes(b"not an image")
    src = open_source(str(tmp_path / "img_*.png"), fps=5.0)
    assert (src.count, src.fps, src.live) == (4, 5.0, False)
    assert "4 images matching" in src.description
    with caplog.at_level(logging.WARNING, logger="camcore.video"):
        got = list(src.frames())
    order = [frames[1], frames[2], frames[0]]  # img_0, img_1, img_2
    assert len(got) == 3 and src.delivered == 3
    for g, want in zip(got, order):
        np.testing.assert_array_equal(g.image, want)
    assert [g.time for g in got] == [0.0, 0.2, 0.4]  # an image sequence is timed by its frame rate
    assert "skipped" in caplog.text and "img_3.png" in caplog.text


@pytest.mark.parametrize("decoder", ["pyav", "opencv"])
def test_video_file_round_trip(tmp_path: Path, decoder: str) -> None:
    path = tmp_path / "clip.avi"
    ramp = np.linspace(0, 200, 48, dtype=np.float32)[None, :, None]
    frames = [np.broadcast_to(ramp + 10 * i, (32, 48, 3)).astype(np.uint8) for i in range(5)]  # smooth: JPEG-friendly
    with VideoSink(path, fps=8.0) as sink:
        for f in frames:
            sink.write(f)
    assert sink.written == 5 and sink.size == (48, 32) and sink.fourcc == "MJPG"
    src = open_source(str(path), decoder=decoder)
    assert (src.count, src.fps, src.live) == (5, 8.0, False)
    timed = list(src.frames())
    assert [t.time for t in timed] == pytest.approx([i / 8 for i in range(5)])
    got = [t.image for t in timed]
    assert len(got) == 5 and all(g.shape == (32, 48, 3) for g in got)
    # lossy, but each frame is nearest its own original: all of them, in order
    errors = np.array([[np.abs(g.astype(int) - f).mean() for f in frames] for g in got])
    assert errors.argmin(axis=1).tolist() == [0, 1, 2, 3, 4] and errors.diagonal().max() < 4
    assert open_source(str(path), fps=3.0, decoder=decoder).fps == 3.0  # the override wins


@pytest.mark.parametrize(
    ("spec", "fps", "message"),
    [
        ("missing.mp4", None, "input '.*missing.mp4' does not exist"),
        ("nothing_*.png", None, "no files match"),
        ("junk.mp4", None, "cannot open video file"),
        ("junk.mp4", 0.0, "--fps must be a positive number, got 0.0"),
        ("junk.mp4", float("nan"), "--fps must be a positive number"),
    ],
)
def test_open_source_errors(tmp_path: Path, spec: str, fps: float | None, message: str) -> None:
    (tmp_path / "junk.mp4").write_bytes(b"\x00" * 200)
    with pytest.raises(CamcoreError, match=message):
        open_source(str(tmp_path / spec), fps=fps)


class _FakeCapture:
    """A capture whose reads follow a script: a frame, or None for a failed read."""

    def __init__(self, script: list[np.ndarray | None]) -> None:
        self.script, self.released = list(script), False

    def read(self) -> tuple[bool, np.ndarray | None]:
        if not self.script:
            return False, None
        frame = self.script.pop(0)
        return frame is not None, frame

    def release(self) -> None:
        self.released = True


def test_read_frames_stops_at_the_first_failure_of_a_file() -> None:
    a, b = _frames(2)
    cap = _FakeCapture([a, None, b])
    got = list(read_frames(cap))  # type: ignore[arg-type]
    assert len(got) == 1 and cap.released


def test_read_frames_retries_a_live_source(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    monkeypatch.setattr(io.time, "sleep", lambda s: None)
    a, b = _frames(2)
    glitch = [None] * io.LIVE_RETRIES
    cap = _FakeCapture([a, *glitch, b, *glitch, None])
    with caplog.at_level(logging.WARNING, logger="camcore.video"):
        got = list(read_frames(cap, live=True, name="cam0"))  # type: ignore[arg-type]
    assert len(got) == 2 and cap.released  # LIVE_RETRIES failures are tolerated, one more is a drop
    assert "cam0 stopped delivering frames after 2 frame(s)" in caplog.text


# ------------------------------------------------------------------------------ sinks


def test_folder_sink_numbers_frames(tmp_path: Path) -> None:
    frames = _frames(3)
    with FolderSink(tmp_path / "out" / "deep") as sink:
        for f in frames:
            sink.write(f)
    assert sink.written == 3
    names = sorted(p.name for p in (tmp_path / "out" / "deep").iterdir())
    assert names == ["frame_000000.png", "frame_000001.png", "frame_000002.png"]
    for i, f in enumerate(frames):
        np.testing.assert_array_equal(cv2.imread(str(tmp_path / "out" / "deep" / names[i])), f)
    assert FolderSink(tmp_path / "jpg", ext="jpg").ext == ".jpg"


def test_folder_sink_errors(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(CamcoreError, match="cannot create output folder"):
        FolderSink(tmp_path / "file" / "frames")
    sink = FolderSink(tmp_path / "odd", ext=".nosuchformat")
    with pytest.raises((CamcoreError, cv2.error)):
        sink.write(_frames(1)[0])
    assert sink.written == 0


def test_video_sink_is_written_under_a_temporary_name(tmp_path: Path) -> None:
    path = tmp_path / "v.avi"
    sink = VideoSink(path, fps=4)
    sink.write(_frames(1)[0])
    assert not path.exists()  # renamed into place when closed
    sink.close()
    sink.close()  # idempotent
    assert path.is_file() and open_source(str(path)).count == 1
    with pytest.raises(CamcoreError, match="4 characters"):
        VideoSink(tmp_path / "x.mp4", fps=4, fourcc="MP4")


def test_open_sink_and_summary_path(tmp_path: Path) -> None:
    from camcore.video.pyav import AvSink

    assert isinstance(open_sink(tmp_path / "a.mp4", 10), AvSink) and open_sink(tmp_path / "a.webm", 10).codec == "vp9"
    assert isinstance(open_sink(tmp_path / "a.mp4", 10, fourcc="mp4v"), VideoSink)
    assert isinstance(open_sink(tmp_path / "a.AVI", 10), VideoSink)
    assert isinstance(open_sink(tmp_path / "a.xyz", 10, fourcc="MJPG"), VideoSink)
    assert isinstance(open_sink(tmp_path / "frames", 10), FolderSink)
    assert summary_path(tmp_path / "a.mp4") == tmp_path / "a.json"
    assert summary_path(tmp_path / "frames") == tmp_path / "frames" / "summary.json"


# ------------------------------------------------------------------------------ summary


def test_summary_is_valid_json_after_close(tmp_path: Path) -> None:
    path = tmp_path / "s" / "summary.json"
    writer = SummaryWriter(path, {"model": "m.onnx", "layers": ["a", "b"]})
    writer.add({"frame": 0, "class": 3})
    writer.add({"frame": 1, "class": 4})
    assert not path.exists()  # written under a temporary name until closed
    writer.close({"frames": 2})
    writer.close({"frames": 99})  # idempotent: the first result stands
    assert json.loads(path.read_text()) == {
        "model": "m.onnx",
        "layers": ["a", "b"],
        "frames": [{"frame": 0, "class": 3}, {"frame": 1, "class": 4}],
        "result": {"frames": 2},
    }
    empty = tmp_path / "empty.json"
    SummaryWriter(empty, {}).close({})
    assert json.loads(empty.read_text()) == {"frames": [], "result": {}}


def test_summary_is_valid_json_after_an_exception(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    with pytest.raises(KeyboardInterrupt), SummaryWriter(path, {"n": 1}) as writer:
        writer.add({"frame": 0})
        raise KeyboardInterrupt
    data = json.loads(path.read_text())
    assert data["frames"] == [{"frame": 0}] and data["result"] == {"error": "KeyboardInterrupt()"}
    with SummaryWriter(path, {"n": 2}) as writer:
        pass
    assert json.loads(path.read_text()) == {"n": 2, "frames": [], "result": {}}
