"""Synthetic scenes with a known object location, for the demo classifier.

Each scene is one coloured shape (the object, whose class is the label) drawn
at a random place on a cluttered background: a random colour gradient, low
frequency colour blotches, pixel noise, thin random lines and short dashes.  The
clutter never contains a shape of an object class, so the only evidence for
the label lies inside the object's box, which makes localisation (the
pointing game) a meaningful check of a saliency map.

Only numpy and OpenCV are used; the generator is deterministic for a given
``numpy.random.Generator`` state.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["CLASS_NAMES", "Scene", "generate_batch", "generate_scene", "paint_object"]

#: Object classes, indexed by :attr:`Scene.label`.
CLASS_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")

#: Object diameter range in pixels at ``size == 96``: twice the radius of the
#: circle through the shape's outer vertices (the cross's arm corners reach 4%
#: beyond it); anti-aliasing adds up to about 2 px to the box.
OBJECT_SIZE_RANGE: tuple[int, int] = (18, 34)

_SUBPIXEL_BITS = 4
_SUBPIXEL = 1 << _SUBPIXEL_BITS


@dataclass(frozen=True)
class Scene:
    """One generated scene.

    Attributes:
        image: ``uint8`` array of shape ``(size, size, 3)``, RGB.
        label: index into :data:`CLASS_NAMES`.
        box: ``(x0, y0, x1, y1)``, the tight bounding box of the object's
            pixels; ``x0``/``y0`` inclusive, ``x1``/``y1`` exclusive.
        mask: ``bool`` array of shape ``(size, size)``, the object's pixels.
    """

    image: np.ndarray
    label: int
    box: tuple[int, int, int, int]
    mask: np.ndarray

    @property
    def class_name(self) -> str:
        """The name of :attr:`label`."""
        return CLASS_NAMES[self.label]


def _shape_polygon(label: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """Vertices ``(k, 2)`` of a polygonal class shape of circumradius ``r``."""
    name = CLASS_NAMES[label]
    if name == "square":
        t = angle + np.pi / 4 + np.arange(4) * np.pi / 2
        radii = np.full(4, r)
    elif name == "triangle":
        t = angle + np.arange(3) * 2 * np.pi / 3
        radii = np.full(3, r)
    elif name == "star":
        t = angle + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r, 0.42 * r)
    elif name == "cross":
        # A plus sign: 12 vertices, arm half-width w, arm length r.
        w = 0.3 * r
        base = np.array(
            [(w, r), (w, w), (r, w), (r, -w), (w, -w), (w, -r), (-w, -r), (-w, -w), (-r, -w), (-r, w), (-w, w), (-w, r)]
        )
        c, s = np.cos(angle), np.sin(angle)
        rot = base @ np.array([[c, s], [-s, c]])
        return rot + np.array([cx, cy])
    else:
        raise ValueError(f"{name!r} is not a polygon")
    return np.stack([cx + radii * np.cos(t), cy + radii * np.sin(t)], axis=1)


def draw_object(
    canvas: np.ndarray, label: int, cx: float, cy: float, r: float, angle: float, colour: tuple[int, int, int]
) -> None:
    """Draw the object (anti-aliased, filled) onto ``canvas`` in place."""
    if CLASS_NAMES[label] == "circle":
        centre = (round(cx * _SUBPIXEL), round(cy * _SUBPIXEL))
        cv2.circle(canvas, centre, round(r * _SUBPIXEL), colour, -1, cv2.LINE_AA, _SUBPIXEL_BITS)
        return
    pts = np.round(_shape_polygon(label, cx, cy, r, angle) * _SUBPIXEL).astype(np.int32)
    cv2.fillPoly(canvas, [pts], colour, cv2.LINE_AA, _SUBPIXEL_BITS)


def cluttered_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A cluttered float32 ``(size, size, 3)`` background in ``[0, 255]``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    # Linear colour gradient between two random colours in a random direction.
    c0 = rng.uniform(0, 255, 3).astype(np.float32)
    c1 = rng.uniform(0, 255, 3).astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    t = np.cos(theta) * (xx - 0.5) + np.sin(theta) * (yy - 0.5)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    img = c0 + t[..., None] * (c1 - c0)
    # Low-frequency colour blotches (upsampled coarse noise).
    coarse = rng.normal(0, 28, (4, 4, 3)).astype(np.float32)
    img += cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img, 0, 255)
    canvas = np.ascontiguousarray(img.astype(np.uint8))
    # Thin straight lines and polylines crossing the scene.
    for _ in range(int(rng.integers(3, 8))):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        pts = rng.uniform(-0.1 * size, 1.1 * size, (int(rng.integers(2, 4)), 2))
        pts = np.round(pts).astype(np.int32)
        cv2.polylines(canvas, [pts], False, colour, 1, cv2.LINE_AA)
    # Short dashes: small, saturated blobs that are no object class.
    for _ in range(int(rng.integers(4, 12))):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        x, y = rng.uniform(0, size, 2)
        t = rng.uniform(0, np.pi)
        length = rng.uniform(2.0, 5.0)
        dx, dy = length * np.cos(t), length * np.sin(t)
        p0 = (round(x - dx), round(y - dy))
        p1 = (round(x + dx), round(y + dy))
        cv2.line(canvas, p0, p1, colour, 2, cv2.LINE_AA)
    return canvas.astype(np.float32)


def generate_scene(rng: np.random.Generator, size: int = 96) -> Scene:
    """Generate one scene: a random class shape on a cluttered background.

    The object's diameter is drawn from :data:`OBJECT_SIZE_RANGE` (scaled by
    ``size / 96``), its colour is random but kept at least a fixed distance
    from the background colour under it, and it lies entirely inside the image.

    Args:
        rng: the random generator; the scene is a pure function of its state.
        size: side of the square image, in pixels.

    Returns:
        The :class:`Scene`.
    """
    canvas = cluttered_background(rng, size)
    label = int(rng.integers(len(CLASS_NAMES)))
    scale = size / 96.0
    side = rng.uniform(*OBJECT_SIZE_RANGE) * scale
    r = side / 2.0
    margin = r + 1.0
    cx = rng.uniform(margin, size - margin)
    cy = rng.uniform(margin, size - margin)
    angle = rng.uniform(0, 2 * np.pi)

    img, cover = paint_object(canvas, label, cx, cy, r, angle, rng)
    img += rng.normal(0, 6, img.shape).astype(np.float32)  # sensor noise
    image = np.clip(np.round(img), 0, 255).astype(np.uint8)

    mask = cover > 0
    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return Scene(image=image, label=label, box=box, mask=mask)


def paint_object(
    canvas: np.ndarray, label: int, cx: float, cy: float, r: float, angle: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Paint the object of class ``label`` on ``canvas`` (float32 ``(size, size, 3)``) in a colour
    drawn from ``rng`` that stands out from the background under it (at least 110 apart in RGB,
    else near black or white), anti-aliased: ``img = canvas (1 - a) + colour a``, ``a`` the object's
    coverage. Returns the float32 image and the coverage (uint8, 255 inside).
    """
    size = canvas.shape[0]
    cover = np.zeros((size, size), np.uint8)
    draw_object(cover, label, cx, cy, r, angle, (255, 255, 255))
    alpha = cover.astype(np.float32)[..., None] / 255.0
    under = canvas[cover > 127].mean(axis=0)
    colour = rng.uniform(0, 255, 3)
    for _ in range(20):
        if np.linalg.norm(colour - under) >= 110:
            break
        colour = rng.uniform(0, 255, 3)
    else:
        colour = np.where(under > 127, 20.0, 235.0)
    return canvas * (1.0 - alpha) + colour.astype(np.float32) * alpha, cover


def generate_batch(n: int, seed: int, size: int = 96) -> list[Scene]:
    """Generate ``n`` scenes from ``numpy.random.default_rng(seed)``.

    The same ``(n, seed, size)`` always gives the same scenes, and the first
    ``k`` scenes of a batch do not depend on ``n``.
    """
    rng = np.random.default_rng(seed)
    return [generate_scene(rng, size) for _ in range(n)]
