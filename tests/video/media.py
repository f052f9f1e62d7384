"""Test inputs written with PyAV: a clip with an audio track, variable frame timing, a display
rotation and colour metadata, and helpers that read an output back."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np


def write_media(
    path: Path,
    n: int = 30,
    size: tuple[int, int] = (96, 128),
    times: list[float] | None = None,
    audio_seconds: float | None = None,
    rotation: int = 0,
    colour: dict[str, int] | None = None,
    codec: str = "libx264",
) -> Path:
    """``n`` frames (height, width = ``size``) of a bar moving right, shown at ``times`` seconds
    (default: 25 fps), with a 440 Hz stereo AAC track of ``audio_seconds`` when given."""
    import av

    times = times if times is not None else [i / 25 for i in range(n)]
    h, w = size
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=25, options={"preset": "ultrafast"} if codec == "libx264" else {})
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        video.time_base = Fraction(1, 1000)
        video.codec_context.time_base = Fraction(1, 1000)
        if rotation:
            video.set_display_rotation(rotation)
        for key, value in (colour or {}).items():
            setattr(video.codec_context, key, value)
        audio = None
        if audio_seconds:
            audio = out.add_stream("aac", rate=44100)
            audio.layout = "stereo"
        for i, t in enumerate(times):
            img = np.full((h, w, 3), 40, np.uint8)
            x = int(i * 4) % (w - 16)
            img[:, x : x + 16] = (0, 0, 230)
            frame = av.VideoFrame.from_ndarray(img, format="bgr24")
            frame.pts, frame.time_base = round(t * 1000), Fraction(1, 1000)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        if audio is not None:
            rate, step = 44100, 1024
            tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(int(rate * audio_seconds)) / rate)).astype(np.float32)
            for s in range(0, len(tone) - step, step):
                chunk = np.stack([tone[s : s + step], tone[s : s + step]])
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                frame.sample_rate, frame.pts = rate, s
                for packet in audio.encode(frame):
                    out.mux(packet)
            for packet in audio.encode():
                out.mux(packet)
    return path


def streams(path: Path) -> dict[str, Any]:
    """What a file holds: codec names, frame counts, frame times, audio span, size, colour."""
    import av

    with av.open(str(path)) as c:
        video = c.streams.video[0]
        frames = []
        try:
            for frame in c.decode(video):
                frames.append(frame)
        except av.error.InvalidDataError:  # a killed run's file ends in a cut fragment: playable up to it
            pass
        info: dict[str, Any] = {
            "video": video.codec_context.name,
            "times": [f.time for f in frames],
            "size": (frames[0].height, frames[0].width) if frames else None,
            "rotation": frames[0].rotation if frames else None,
            "first": frames[0].to_ndarray(format="bgr24") if frames else None,
            "colour": {k: getattr(video.codec_context, k) for k in ("color_primaries", "color_trc", "colorspace")},
        }
    with av.open(str(path)) as c:
        if c.streams.audio:
            a = c.streams.audio[0]
            packets = [p for p in c.demux(a) if p.dts is not None]
            info["audio"] = a.codec_context.name
            info["audio_end"] = max(float((p.pts + (p.duration or 0)) * p.time_base) for p in packets)
        else:
            info["audio"] = None
    return info


def moov_before_mdat(path: Path) -> bool:
    """Whether an MP4's index (moov) precedes its media data (mdat): ``+faststart``, playable while it loads."""
    data = path.read_bytes()
    return 0 <= data.find(b"moov") < data.find(b"mdat")
