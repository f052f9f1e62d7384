"""``camcore video`` end to end: output video, frame folder, summary, Ctrl-C, bad input."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from camcore.demo import DEMO_MODEL
from camcore.errors import CamcoreError
from camcore.video import FrameSource, add_video_parser, cmd_video
from tests.video.clips import Clip, count_frames, write_clip
from tests.video.conftest import FPS, META

DEMO_ARGS = ["--mean", *map(str, META["mean"]), "--std", *map(str, META["std"])]


def run_video(*argv: str) -> int:
    """``camcore video ARGV`` through the command's own parser, as ``camcore.cli`` wires it."""
    parser = argparse.ArgumentParser(prog="camcore")
    add_video_parser(parser.add_subparsers(dest="command", required=True))
    return cmd_video(parser.parse_args(["video", str(DEMO_MODEL), *argv, *DEMO_ARGS]))


def test_video_end_to_end(clip_file: Path, clip: Clip, tmp_path: Path) -> None:
    out = tmp_path / "explained.mp4"
    assert run_video(str(clip_file), "-o", str(out), "--batch", "3") == 0
    assert count_frames(out) == (40, FPS, (192, 192))
    summary = json.loads(out.with_suffix(".json").read_text())
    frames = summary["frames"]
    assert [f["frame"] for f in frames] == list(range(40))
    assert summary["result"]["frames"] == 40 and not summary["result"]["interrupted"]
    assert summary["target_layers"] == [META["target_layer"]]
    assert np.mean([f["explained_class"] == clip.label for f in frames]) >= 0.9
    assert all(f["top_k"][0]["class"] == f["explained_class"] for f in frames)


def test_heat_follows_the_object_in_the_written_video(clip_file: Path, clip: Clip, tmp_path: Path) -> None:
    out = tmp_path / "frames"
    assert run_video(str(clip_file), "-o", str(out), "--colormap", "jet", "--alpha", "1.0", "--every", "2") == 0
    written = sorted(out.glob("frame_*.png"))
    assert len(written) == 40
    hits = 0
    for path, (x0, y0, x1, y1) in zip(written, clip.boxes):
        heat = cv2.imread(str(path))[..., 2].astype(np.float32)  # jet: red channel peaks at the top
        y, x = np.unravel_index(int(np.argmax(cv2.blur(heat, (9, 9)))), heat.shape)
        hits += x0 - 12 <= x < x1 + 12 and y0 - 12 <= y < y1 + 12
    assert hits >= 34
    summary = json.loads((out / "summary.json").read_text())
    assert [f["explained"] for f in summary["frames"][:4]] == [True, False, True, False]


def test_side_by_side_and_avi(clip_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "both.avi"
    assert run_video(str(clip_file), "-o", str(out), "--side-by-side", "--max-frames", "9") == 0
    assert count_frames(out) == (9, FPS, (384, 192))


@pytest.mark.parametrize("decoder", ["pyav", "opencv"])
def test_ctrl_c_leaves_a_playable_file(
    clip_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], decoder: str
) -> None:
    from camcore.video.pyav import AvSource

    source = AvSource if decoder == "pyav" else FrameSource
    frames = source.frames

    def interrupted(self: FrameSource) -> Iterator[np.ndarray]:
        for i, frame in enumerate(frames(self)):
            if i == 15:
                raise KeyboardInterrupt  # Ctrl-C while decoding frame 15
            yield frame

    monkeypatch.setattr(source, "frames", interrupted)
    out = tmp_path / "cut.mp4"
    assert run_video(str(clip_file), "-o", str(out), "--decoder", decoder) == 130
    assert count_frames(out) == (15, FPS, (192, 192))
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["result"]["interrupted"] and len(summary["frames"]) == 15
    assert "interrupted" in capsys.readouterr().out


def test_image_glob_with_a_wrong_size_frame(clip: Clip, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "seq"
    folder.mkdir()
    for i, frame in enumerate(clip.frames[:6]):
        cv2.imwrite(str(folder / f"{i:03d}.png"), frame if i != 3 else cv2.resize(frame, (100, 80)))
    out = tmp_path / "seq.mp4"
    assert run_video(str(folder / "*.png"), "-o", str(out), "--fps", "5") == 0
    assert count_frames(out) == (6, 5.0, (192, 192))
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["frames"][3]["resized_from"] == [80, 100]
    assert summary["result"]["resized"] == 1 and "resized" in summary["result"]["warnings"][0]
    assert "camcore: warning: frame 3 is 100x80" in capsys.readouterr().err


def test_truncated_file_keeps_the_frames_read(clip: Clip, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_clip(tmp_path / "full.avi", clip.frames, fps=FPS, fourcc="MJPG")
    data = src.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out.mp4"
    assert run_video(str(cut), "-o", str(out)) == 0
    n, _, _ = count_frames(out)
    assert 5 <= n < 40
    assert "ended after" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.mp4", None, "does not exist"),
        ("junk.mp4", b"not a video" * 50, "cannot open video file"),
        ("none_*.png", None, "no files match"),
    ],
)
def test_unreadable_input(tmp_path: Path, name: str, content: bytes | None, message: str) -> None:
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(CamcoreError, match=message) as info:
        run_video(str(tmp_path / name), "-o", str(tmp_path / "o.mp4"))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "o.mp4").exists()


def test_missing_codec_is_one_clear_error(clip_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.mp4"
    with pytest.raises(CamcoreError, match="codec 'QQQQ'") as info:
        run_video(str(clip_file), "-o", str(out), "--fourcc", "QQQQ")
    assert "\n" not in str(info.value)
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["result"]["frames"] == 0 and "QQQQ" in summary["result"]["error"]


def test_bad_arguments(clip_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each bad option: one line naming it, exit code 2, before any work (no output file)."""
    from camcore.cli import main

    out = tmp_path / "o.mp4"
    cases = ((["--every", "0"], "--every"), (["--alpha", "3"], "--alpha"), (["--smooth", "1"], "smooth"),
             (["--workers", "0"], "--workers"), (["--top-k", "-3"], "--top-k"), (["--colormap", "jte"], "jet"),
             (["--target", "5"], "out of range for 5 classes"), (["--range", "1", "0"], "--range"))  # fmt: skip
    for argv, message in cases:
        code = main(["video", str(DEMO_MODEL), str(clip_file), "-o", str(out), *argv])
        err = [line for line in capsys.readouterr().err.splitlines() if line]
        assert code == 2 and len(err) == 1 and err[0].startswith("camcore: error: ") and message in err[0], err
        assert not out.exists()


def test_wired_into_the_camcore_command(clip_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from camcore.cli import main

    out = tmp_path / "wired.mp4"
    assert main(["video", str(DEMO_MODEL), str(clip_file), "-o", str(out), *DEMO_ARGS]) == 0
    assert count_frames(out)[0] > 0
    capsys.readouterr()
    assert main(["video", str(DEMO_MODEL), str(tmp_path / "missing.mp4"), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("camcore: error: ") and "does not exist" in err[0]
