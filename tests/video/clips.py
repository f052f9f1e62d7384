"""Generated test clips: one demo-scene object moving across a cluttered, noisy background."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from camcore.scenes import cluttered_background, draw_object


@dataclass
class Clip:
    """BGR frames and, per frame, the object's box ``(x0, y0, x1, y1)`` (exclusive ends)."""

    frames: list[np.ndarray]
    boxes: list[tuple[int, int, int, int]]
    label: int


def moving_object_clip(n: int = 40, size: int = 192, label: int = 1, seed: int = 5) -> Clip:
    """``n`` frames of ``size`` x ``size``: the object crosses the frame diagonally.

    The object is drawn at the demo model's scale (about 28 px at 96 px, so 56 px here); the
    background is fixed, the sensor noise changes every frame.
    """
    rng = np.random.default_rng(seed)
    scale = size / 96.0
    background = cluttered_background(rng, 96)
    background = cv2.resize(background, (size, size), interpolation=cv2.INTER_LINEAR)
    r = 14.0 * scale
    colour = np.array([235.0, 40.0, 40.0], np.float32)
    frames, boxes = [], []
    for i in range(n):
        t = i / max(n - 1, 1)
        cx = (r + 4) + t * (size - 2 * r - 8)
        cy = (r + 4) + (0.2 + 0.6 * t) * (size - 2 * r - 8)
        cover = np.zeros((size, size), np.uint8)
        draw_object(cover, label, cx, cy, r, 0.3 + 0.05 * i, (255, 255, 255))
        alpha = cover.astype(np.float32)[..., None] / 255.0
        img = background * (1 - alpha) + colour * alpha + rng.normal(0, 6, (size, size, 3)).astype(np.float32)
        rgb = np.clip(np.round(img), 0, 255).astype(np.uint8)
        ys, xs = np.nonzero(cover)
        boxes.append((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
        frames.append(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return Clip(frames, boxes, label)


def write_clip(path: Path, frames: list[np.ndarray], fps: float = 12.0, fourcc: str = "mp4v") -> Path:
    """Write ``frames`` (BGR) as a video file."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened(), f"cannot write {path} with {fourcc}"
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def count_frames(path: Path) -> tuple[int, float, tuple[int, int]]:
    """Decode ``path`` to the end: (frames, fps, (width, height))."""
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"cannot reopen {path}"
    fps = cap.get(cv2.CAP_PROP_FPS)
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n, fps, size
