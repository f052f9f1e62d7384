"""numpy's BLAS on one thread for the methods' small linear algebra.

The methods' numpy linear algebra is small: an SVD of a (49, 512) activation, the
eigenvectors of a 49×49 kernel, the bilinear upsampling of a batch of masks. A
multi-threaded BLAS (OpenBLAS, numpy's default) still wakes its worker threads for it,
and onnxruntime's workers, spinning after a forward pass, hold the cores those threads
wait for. On 2 cores, right after a ResNet-18 forward pass, an ``eigh`` of 49×49 took
2.7 ms instead of 0.35 ms and a full SVD of (49, 512) 26 ms instead of 7 ms; the BLAS
workers then spin in turn and the next forward pass took 21 ms instead of 12 ms.

:func:`serial_blas` limits numpy's BLAS to one thread inside its block through
threadpoolctl (a dependency of camcore, as of scikit-learn).
"""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager
from typing import Any

import threadpoolctl


@functools.cache
def _blas_controller() -> Any:
    """threadpoolctl's controller of the BLAS libraries numpy loaded."""
    return threadpoolctl.ThreadpoolController().select(user_api="blas")


def serial_blas() -> AbstractContextManager[Any]:
    """A context in which numpy's BLAS uses one thread.

    Example:
        >>> with serial_blas():
        ...     _ = np.linalg.svd(np.eye(3))  # doctest: +SKIP
    """
    return _blas_controller().limit(limits=1)


def describe() -> str:
    """One line for benchmark headers: whether :func:`serial_blas` limits the BLAS threads."""
    controller = _blas_controller()
    libs = ", ".join(f"{i['internal_api']} ({i['num_threads']} threads elsewhere)" for i in controller.info())
    return f"one thread in the methods' linear algebra through threadpoolctl {threadpoolctl.__version__}: {libs}"
