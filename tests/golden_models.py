"""Load the golden architectures of ``tests/golden/`` without PyTorch.

``tools/make_autograd_golden.py`` exports real torchvision networks to ONNX and strips
every weight from the file. Each weight is instead described by a *recipe*: a seed, a
scale and an offset, from which :func:`recipe_values` regenerates it bit for bit with
numpy alone. This keeps the golden files small (tens of KB per network) while the
networks stay the real ones.

The recipe is the SplitMix64 hash of the element index, mapped to a uniform number::

    z_k = splitmix64(seed * 2^32 + k),   u_k = (z_k >> 11) / 2^53 in [0, 1)
    value_k = offset + scale * sqrt(3) * (2 u_k - 1)

so ``scale`` is the standard deviation. Only integer arithmetic modulo 2^64 and one
float64 affine map are involved, so every platform gives the same float32 values.
(A plain sinusoid ``sin(a k + b)`` would not do: reshaped to a matrix it has rank 2.)

The golden input is a recipe too, plus a stored *nudge* (``input_nudge`` in ``<arch>.npz``,
int16 multiples of ``NUDGE_QUANTUM``) that moves every ReLU / clip / hard-swish /
hard-sigmoid input and every max-pool choice of the network away from its kink, so that
no float32 run flips a switch (see ``tools/make_autograd_golden.py``).

Maps (pytorch-grad-cam's, in ``gradcam_*.npz`` and ``methods_*.npz``) are stored whole with
:func:`encode_maps`: 24-bit fixed point (error at most 2^-25 = 3e-8, exact for values in
[0.5, 1], far below every parity tolerance), a 2-D difference predictor and LZMA, one
uint8 array per case (``<case>__maps``; :func:`decode_maps`).
"""

from __future__ import annotations

import io
import json
import lzma
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)

#: The step of the stored input nudge: input = recipe + NUDGE_QUANTUM * input_nudge.
NUDGE_QUANTUM = 2.0**-20
#: Fixed-point bits of the stored maps (values scaled by ``2**-exponent`` first).
MAP_BITS = 24


def recipe_values(shape: tuple[int, ...] | list[int], seed: int, scale: float, offset: float = 0.0) -> np.ndarray:
    """Return the float32 tensor of ``shape`` described by a recipe.

    Args:
        shape: The tensor shape.
        seed: A 32-bit seed; the generator uses ``crc32`` of the tensor's torch name.
        scale: The standard deviation of the values.
        offset: The mean of the values.
    """
    n = int(np.prod(shape, dtype=np.int64))
    z = np.arange(n, dtype=np.uint64) + np.uint64(int(seed) << 32)
    z = (z + np.uint64(1)) * _GAMMA
    z ^= z >> np.uint64(30)
    z *= _MIX1
    z ^= z >> np.uint64(27)
    z *= _MIX2
    z ^= z >> np.uint64(31)
    u = (z >> np.uint64(11)).astype(np.float64) * (2.0**-53)
    values = offset + scale * np.sqrt(3.0) * (2.0 * u - 1.0)
    return values.astype(np.float32).reshape(tuple(shape))


def recipe_from_spec(spec: dict[str, Any]) -> np.ndarray:
    """Return the tensor of a manifest entry ``{"shape", "seed", "scale", "offset"}``."""
    return recipe_values(spec["shape"], spec["seed"], spec["scale"], spec.get("offset", 0.0))


def sample_flat(array: np.ndarray, k: int) -> np.ndarray:
    """Return ``k`` evenly spaced elements of each sample of ``array``, shaped (N, k).

    Element ``i`` is the flat index ``i * (n - 1) // (k - 1)`` of the sample's ``n``
    values (all of them, in order, where ``n <= k``).
    """
    flat = array.reshape(array.shape[0], -1)
    n = flat.shape[1]
    if n <= k:
        return flat
    return flat[:, np.arange(k, dtype=np.int64) * (n - 1) // (k - 1)]


def apply_nudge(x: np.ndarray, nudge: np.ndarray) -> np.ndarray:
    """Return ``x + NUDGE_QUANTUM * nudge`` rounded once to float32 (exact, platform-free)."""
    return (x.astype(np.float64) + nudge.astype(np.float64) * NUDGE_QUANTUM).astype(np.float32)


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` like ``np.savez_compressed``, but byte for byte reproducible: fixed
    entry timestamps and order, so regenerating unchanged data leaves the file unchanged."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for key, value in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue(), compresslevel=9)


def encode_maps(maps: np.ndarray) -> np.ndarray:
    """Encode float maps (..., H, W) compactly as one uint8 array (see :func:`decode_maps`).

    Values are divided by ``2**exponent`` (the smallest power of two that brings them into
    [-1, 1], exact), rounded to multiples of ``2**-MAP_BITS`` (error <= 2**-(MAP_BITS+1)
    of ``2**exponent``), predicted from their upper and left neighbours (the residual of a
    bilinear upsampling is constant within a cell), zigzag-coded, split into byte planes and
    LZMA-compressed, after a header of int32 words: ndim, the shape, the exponent.
    """
    a = np.asarray(maps, dtype=np.float64)
    peak = float(np.abs(a).max()) if a.size else 0.0
    exponent = 0 if peak <= 1.0 else int(np.ceil(np.log2(peak)))
    q = np.rint(a * 2.0 ** (MAP_BITS - exponent)).astype(np.int64)
    r = q.copy()
    r[..., 1:, :] -= q[..., :-1, :]
    r[..., :, 1:] -= r[..., :, :-1].copy()
    z = ((r << 1) ^ (r >> 63)).astype(np.uint64)
    if z.size and int(z.max()) >= 2**32:
        raise ValueError("map residuals do not fit 32 bits")
    planes = z.astype("<u4").view(np.uint8).reshape(-1, 4).T.tobytes()
    blob = lzma.compress(planes, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, preset=9 | lzma.PRESET_EXTREME)
    header = np.asarray([a.ndim, *a.shape, exponent], dtype="<i4").tobytes()
    return np.frombuffer(header + blob, dtype=np.uint8)


def decode_maps(encoded: np.ndarray) -> np.ndarray:
    """Invert :func:`encode_maps`: the float32 maps."""
    raw = np.asarray(encoded, dtype=np.uint8).tobytes()
    ndim = int(np.frombuffer(raw[:4], dtype="<i4")[0])
    words = np.frombuffer(raw[: 4 * (ndim + 2)], dtype="<i4")
    shape, exponent = tuple(int(d) for d in words[1 : ndim + 1]), int(words[ndim + 1])
    n = int(np.prod(shape, dtype=np.int64))
    planes = np.frombuffer(lzma.decompress(raw[4 * (ndim + 2) :]), dtype=np.uint8).reshape(4, n)
    z = planes.T.copy().view("<u4").reshape(shape).astype(np.int64)
    r = (z >> 1) ^ -(z & 1)
    v = np.cumsum(np.cumsum(r, axis=-1), axis=-2)
    return (v.astype(np.float64) * 2.0 ** (exponent - MAP_BITS)).astype(np.float32)


def golden_architectures() -> list[str]:
    """Return the names of the architectures that have golden data, sorted."""
    return sorted(p.stem for p in GOLDEN_DIR.glob("*.json"))


def load_manifest(arch: str) -> dict[str, Any]:
    """Return the JSON manifest of ``arch``: recipes, target layer, seeds, provenance."""
    return json.loads((GOLDEN_DIR / f"{arch}.json").read_text())


def rebuild_model(model: onnx.ModelProto, manifest: dict[str, Any]) -> onnx.ModelProto:
    """Return a copy of a stripped ``model`` with every recipe initializer put back."""
    full = onnx.ModelProto()
    full.CopyFrom(model)
    have = {init.name for init in full.graph.initializer}
    for name, spec in manifest["initializers"].items():
        if name in have:
            raise ValueError(f"initializer {name!r} is both stored and in the recipe manifest")
        full.graph.initializer.append(numpy_helper.from_array(recipe_from_spec(spec), name))
    return full


def load_golden(arch: str) -> tuple[onnx.ModelProto, dict[str, np.ndarray], str]:
    """Return the rebuilt model, the golden arrays and the target layer of ``arch``.

    The arrays are ``input`` (the recipe plus its stored kink-clearing nudge),
    ``seed_onehot``, ``seed_random`` (the two gradient seeds, shaped like ``logits``), and
    the PyTorch autograd reference computed in float64: ``logits``, ``activation`` (the
    target tensor) and ``grad_onehot``/``grad_random``, the gradients of
    ``sum(seed * logits)`` with respect to the activation.
    """
    manifest = load_manifest(arch)
    stripped = onnx.load(str(GOLDEN_DIR / f"{arch}.onnx"))
    model = rebuild_model(stripped, manifest)
    with np.load(GOLDEN_DIR / f"{arch}.npz") as npz:
        arrays = {key: npz[key] for key in npz.files}
    nudge = arrays.pop("input_nudge", None)
    arrays["input"] = recipe_from_spec(manifest["input"])
    if nudge is not None:
        arrays["input"] = apply_nudge(arrays["input"], nudge)
    arrays["seed_random"] = recipe_from_spec(manifest["seed_random"])
    onehot = np.zeros(arrays["logits"].shape, dtype=np.float32)
    onehot[:, manifest["onehot_class"]] = 1.0
    arrays["seed_onehot"] = onehot
    return model, arrays, manifest["target_layer"]
