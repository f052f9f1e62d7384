"""Type stubs for camcore._core, the compiled postprocessing module (see camcore.postprocess)."""

import numpy as np
from numpy.typing import ArrayLike, NDArray

COLORMAPS: tuple[str, ...]

def overlay(
    image: ArrayLike,
    cam: ArrayLike,
    alpha: float = 0.5,
    colormap: str = "jet",
    rgb: bool = True,
    normalize: bool = False,
    out: NDArray[np.uint8] | None = None,
    threads: int | None = None,
    *,
    value_range: tuple[float, float] | None = None,
    alpha_from_cam: bool = False,
) -> NDArray[np.uint8]: ...
def colorize(
    cam: ArrayLike, colormap: str = "jet", *, rgb: bool = True, threads: int | None = None
) -> NDArray[np.uint8]: ...
def colormap_table(colormap: str, *, rgb: bool = True) -> NDArray[np.uint8]: ...
def resize_cam(cam: ArrayLike, size: tuple[int, int], *, threads: int | None = None) -> NDArray[np.float32]: ...
def threshold_mask(
    cam: ArrayLike,
    level: float,
    size: tuple[int, int] | None = None,
    *,
    normalize: bool = False,
    value_range: tuple[float, float] | None = None,
    threads: int | None = None,
) -> NDArray[np.bool_]: ...
def contour_mask(
    cam: ArrayLike,
    level: float,
    size: tuple[int, int] | None = None,
    *,
    normalize: bool = False,
    value_range: tuple[float, float] | None = None,
    threads: int | None = None,
) -> NDArray[np.bool_]: ...
def draw_contour(
    image: ArrayLike,
    cam: ArrayLike,
    level: float,
    color: list[int] = ...,
    *,
    normalize: bool = False,
    value_range: tuple[float, float] | None = None,
    out: NDArray[np.uint8] | None = None,
    threads: int | None = None,
) -> NDArray[np.uint8]: ...
def simd() -> str: ...
def _set_simd(name: str) -> str: ...
