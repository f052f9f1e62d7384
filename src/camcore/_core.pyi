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
) -> NDArray[np.uint8]: ...
def colorize(
    cam: ArrayLike, colormap: str = "jet", *, rgb: bool = True, threads: int | None = None
) -> NDArray[np.uint8]: ...
def colormap_table(colormap: str, *, rgb: bool = True) -> NDArray[np.uint8]: ...
def resize_cam(cam: ArrayLike, size: tuple[int, int], *, threads: int | None = None) -> NDArray[np.float32]: ...
