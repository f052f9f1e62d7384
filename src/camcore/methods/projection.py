"""Projection methods: the map is the first principal component of a (weighted) activation.

``A`` is (N, C, *spatial); per image, the Z spatial positions are samples with C
features. :func:`project_2d` centres them and projects on the first right singular
vector, as pytorch-grad-cam's ``get_2d_projection`` (the same LAPACK routine, hence the
same sign: SVD leaves it arbitrary, and neither library fixes it except SegEigenCAM).

Speed: the thin SVD (``full_matrices=False``) gives the same first singular vector
as pytorch-grad-cam's full one (LAPACK's ``gesdd`` reaches it by the same steps)
without building the (C, C) or (Z, Z) orthogonal factor: 1.4 ms instead of 7 ms on a
(49, 512) ResNet-18 layer. The linear algebra runs with numpy's BLAS on one thread
(:func:`camcore.blas.serial_blas`).
"""

from __future__ import annotations

import numpy as np

from camcore.blas import serial_blas
from camcore.maps import centred_samples, project_2d
from camcore.methods.gradient import explained_classes
from camcore.methods.registry import LayerRun, Need, register_method


def kernel_projection(batch: np.ndarray, kernel: str = "sigmoid", gamma: float | None = None) -> np.ndarray:
    """Per image: the first kernel principal component of the centred (Z, C) samples.

    The same computation as scikit-learn's ``KernelPCA(n_components=1).fit_transform``
    (which pytorch-grad-cam calls), in numpy and in float64: the kernel matrix K
    (``sigmoid``: tanh(γ·XXᵀ + 1), ``rbf``: exp(−γ‖x − y‖²), ``linear``: XXᵀ, ``poly``:
    (γ·XXᵀ + 1)³, ``cosine``; γ = 1/C by default), centred in feature space; the top
    eigenvector, its sign fixed so its largest-magnitude entry is positive, times √eigenvalue.

    pytorch-grad-cam hands scikit-learn float32 activations, and scikit-learn keeps float32
    for the kernel matrix, its centring and the eigensolver. With the sigmoid kernel and
    γ = 1/C the map lives in the small term γ·x·y next to the constant 1 whenever the
    activations are small against √C, and float32 rounding then changes pytorch-grad-cam's
    map: by 0.135 on a MobileNetV3-small (``features.12``, 576 channels, activation std
    0.08), where camcore equals pytorch-grad-cam given float64 activations to 5e-6. Beyond
    200 spatial positions scikit-learn also switches to ARPACK started from numpy's global
    random state, so its map moves from run to run (by up to 3e-3 on small activations);
    camcore always solves the dense eigenproblem.

    Example:
        >>> rng = np.random.default_rng(0); x = rng.standard_normal((1, 4, 3, 3)).astype(np.float32)
        >>> kernel_projection(x).shape
        (1, 3, 3)
    """
    out = []
    with serial_blas():
        for a in batch:
            x = centred_samples(a).astype(np.float64)
            k = _kernel_matrix(x, kernel, gamma)
            row = k.mean(axis=0)
            k = k - row[None, :] - row[:, None] + row.mean()
            values, vectors = np.linalg.eigh(k)
            value, vec = max(values[-1], 0.0), vectors[:, -1]
            if vec[np.argmax(np.abs(vec))] < 0:
                vec = -vec
            out.append((vec * np.sqrt(value)).reshape(a.shape[1:]))
    return np.asarray(out, dtype=np.float32)


def _kernel_matrix(x: np.ndarray, kernel: str, gamma: float | None) -> np.ndarray:
    g = 1.0 / x.shape[1] if gamma is None else gamma
    if kernel == "sigmoid":
        return np.tanh(g * (x @ x.T) + 1.0)
    if kernel == "linear":
        return x @ x.T
    if kernel == "poly":
        return (g * (x @ x.T) + 1.0) ** 3
    if kernel == "rbf":
        sq = (x * x).sum(axis=1)
        return np.exp(-g * np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0))
    if kernel == "cosine":
        unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return unit @ unit.T
    from camcore.errors import CamcoreError

    raise CamcoreError(f"unknown KPCA kernel {kernel!r}; choose sigmoid, rbf, linear, poly or cosine")


@register_method("EigenCAM", "eigencam", "Eigen-CAM: the first principal component of the activations",
                 output="map", needs_gradients=False, reference="https://arxiv.org/abs/2008.00299")  # fmt: skip
def eigencam(activations: np.ndarray, gradients: np.ndarray | None) -> np.ndarray:
    """Eigen-CAM (Muhammad & Yeasin 2020): :math:`L = (A - \\bar A)\\,v_1` with :math:`v_1`
    the first right singular vector of the centred (Z, C) activations. No gradients.

    Example:
        >>> eigencam(np.random.default_rng(0).standard_normal((2, 3, 4, 4)), None).shape
        (2, 4, 4)
    """
    return project_2d(activations)


@register_method("EigenGradCAM", "eigengradcam",
                 "Eigen-Grad-CAM: the first principal component of gradients × activations",
                 output="map")  # fmt: skip
def eigengradcam(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """Eigen-CAM of :math:`G \\odot A` (pytorch-grad-cam's EigenGradCAM).

    Example:
        >>> x = np.random.default_rng(0).standard_normal((1, 3, 4, 4))
        >>> eigengradcam(x, np.ones_like(x)).shape
        (1, 4, 4)
    """
    return project_2d(gradients * activations)


@register_method("KPCA_CAM", "kpca-cam", "KPCA-CAM: the first kernel principal component of the activations",
                 output="map", needs_gradients=False,
                 reference="https://arxiv.org/abs/2410.00267")  # fmt: skip
def kpca_cam(
    activations: np.ndarray, gradients: np.ndarray | None, kernel: str = "sigmoid", gamma: float | None = None
) -> np.ndarray:
    """KPCA-CAM (Karmani et al. 2024): :func:`kernel_projection` of the activations.

    Example:
        >>> kpca_cam(np.random.default_rng(0).standard_normal((1, 3, 4, 4)), None).shape
        (1, 4, 4)
    """
    return kernel_projection(activations, kernel, gamma)


@register_method("SegEigenCAM", "seg-eigencam",
                 "Seg-Eigen-CAM: principal component of |gradients| × activations, sign-corrected",
                 output="map", reference="https://doi.org/10.3390/app15137562")  # fmt: skip
def seg_eigencam(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """Seg-Eigen-CAM (Chung & Ying 2025): :math:`L = \\pm\\,\\mathrm{PC}_1(|G| \\odot A)`, the
    sign chosen so that ``|max| >= |min|`` (eq. 10-13).

    Example:
        >>> x = np.random.default_rng(0).standard_normal((1, 3, 4, 4))
        >>> m = seg_eigencam(x, np.ones_like(x)); bool(abs(m.max()) >= abs(m.min()))
        True
    """
    return project_2d(np.abs(gradients) * activations, sign_correction=True)


@register_method("FEM", "fem", "FEM: channels weighted by how often they exceed mean + k·std (no gradients)",
                 output="map", needs_gradients=False,
                 reference="https://hal.science/hal-02963298/document")  # fmt: skip
def fem(activations: np.ndarray, gradients: np.ndarray | None, k: float = 2.0) -> np.ndarray:
    """Feature Explanation Method (Fuad et al. 2020): with :math:`\\mu_c, \\sigma_c` the
    spatial mean and (population) standard deviation of channel c,

    .. math:: w_c = \\frac{1}{Z}\\sum_{ij} [A^c_{ij} > \\mu_c + k\\sigma_c], \\qquad L = \\sum_c w_c A^c

    Example:
        >>> a = np.zeros((1, 1, 3, 3)); a[0, 0, 1, 1] = 9.0
        >>> float(fem(a, None, k=1.0)[0, 1, 1])  # w = 1/9
        1.0
    """
    axes = tuple(range(2, activations.ndim))
    threshold = activations.mean(axis=axes, keepdims=True) + k * activations.std(axis=axes, keepdims=True)
    weights = (activations > threshold).mean(axis=axes, keepdims=True)
    return (weights * activations).sum(axis=1)


def class_weights(run: LayerRun) -> np.ndarray:
    """CAM's need: the row of the linear classifier after the layer's global pooling for each
    image's explained class, (N, C)."""
    from camcore.errors import CamcoreError

    w = run.context.engine.classifier_weights(run.layer)
    classes = explained_classes(run)
    if classes.max() >= w.shape[0]:
        raise CamcoreError(f"class {classes.max()} is out of range for a classifier of {w.shape[0]} classes")
    return w[classes]


@register_method("CAM", "cam", "CAM (torchcam): activations weighted by the classifier row found in the graph",
                 needs_gradients=False, needs={"class_weights": Need(class_weights)},
                 reference="https://arxiv.org/abs/1512.04150")  # fmt: skip
def cam(activations: np.ndarray, gradients: np.ndarray | None, class_weights: np.ndarray) -> np.ndarray:
    """CAM (Zhou et al. 2016): :math:`L = \\sum_c W_{k,c} A^c` with W the weights of the
    linear classifier after global pooling (Gemm / MatMul found in the ONNX graph) and
    k the explained class. ``class_weights`` is (N, C): the row of W per image.

    Example:
        >>> cam(np.ones((1, 2, 2, 2)), None, np.array([[1.0, 2.0]]))[0].sum(axis=0)[0, 0]
        3.0
    """
    return class_weights.reshape(*class_weights.shape, *(1,) * (activations.ndim - 2)) * activations
