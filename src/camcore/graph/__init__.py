"""Graph surgery: append reverse-mode autodiff, in standard ONNX ops, to any ONNX model."""

from camcore.graph.augment import (
    SEED_CLASS_INPUT,
    SEED_TENSOR_INPUT,
    Augmented,
    augment,
    load_model,
    prepare_model,
)
from camcore.graph.layers import Layer, candidate_layers, default_layer, resolve_layers
from camcore.graph.registry import RULES, GradContext, register

__all__ = [
    "RULES",
    "SEED_CLASS_INPUT",
    "SEED_TENSOR_INPUT",
    "Augmented",
    "GradContext",
    "Layer",
    "augment",
    "candidate_layers",
    "default_layer",
    "load_model",
    "prepare_model",
    "register",
    "resolve_layers",
]
