"""The errors camcore raises on bad input.

Every error is a ``ValueError`` subclass whose message is one line that names the
thing at fault and says what would fix it. The CLI turns them into exit code 2.
"""

from __future__ import annotations


class CamcoreError(ValueError):
    """Base class of every user-facing camcore error."""


class UnsupportedOpError(CamcoreError):
    """An op on the gradient path has no gradient rule."""


class UnknownLayerError(CamcoreError):
    """A target layer name matches no tensor or node of the model."""


class ModelError(CamcoreError):
    """The model file cannot be read or is not a usable ONNX model."""


class InputError(CamcoreError):
    """An input tensor or image has the wrong shape, dtype or content."""


class ShapeError(CamcoreError):
    """A gradient rule needs a static shape that the model leaves dynamic."""
