"""Targets: what to explain. A target turns into the seed of the backward pass.

A target is a scalar function T of one image's output (its row of the explained
output). The augmented graph computes the gradient of ``<seed, output>``, so the
seed is ``dT/d output`` at the forward output:

* a **class target** (``class_index`` set) is the fast path: the one-hot seed is built
  inside the graph, one run in all;
* a **linear target** (``linear = True``: the seed does not depend on the output, e.g. a
  segmentation mask) needs the output's shape only: one run;
* a **nonlinear target** (softmax, cosine similarity, box chosen by IoU) needs the
  forward output first: camcore runs the forward part alone (onnxruntime executes only
  the nodes the output needs), computes the seed in numpy, then the augmented run:
  about two forward passes and one backward pass in all.

``T(row)`` is available as ``target(row)`` (as in pytorch-grad-cam) and its seed as
``target.seed(row)``; every seed is tested against a numerical derivative of ``T``.

The package: :mod:`~camcore.targets.registry` (the base class, the registries ``TARGETS`` and
``TARGET_TYPES``, ``per_image``), then one module per family, each registering its targets
(:mod:`~camcore.targets.classification`, :mod:`~camcore.targets.dense`,
:mod:`~camcore.targets.detection`); every target class is importable from here.
"""

from __future__ import annotations

import importlib
import pkgutil

# the family modules register their targets as they load (the CLI forms in this order); the
# imports name the classes for type checkers
from camcore.targets.classification import (
    BinaryClassifierOutputTarget,
    ClassifierOutputReST,
    ClassifierOutputSoftmaxTarget,
    ClassifierOutputTarget,
    FinerWeightedTarget,
    RawScoresOutputTarget,
    RegressionOutputTarget,
    top1_targets,
)
from camcore.targets.dense import SemanticSegmentationTarget, SimilarityToConceptTarget
from camcore.targets.detection import DetectionBoxTarget
from camcore.targets.registry import TARGET_TYPES, TARGETS, Target, TargetType, per_image, register_target, softmax

for _module in pkgutil.iter_modules(__path__):  # any other family module registers its targets too
    importlib.import_module(f"{__name__}.{_module.name}")
globals().update(TARGETS)

__all__ = [  # a test checks that it names every registered target
    "TARGETS",
    "TARGET_TYPES",
    "BinaryClassifierOutputTarget",
    "ClassifierOutputReST",
    "ClassifierOutputSoftmaxTarget",
    "ClassifierOutputTarget",
    "DetectionBoxTarget",
    "FinerWeightedTarget",
    "RawScoresOutputTarget",
    "RegressionOutputTarget",
    "SemanticSegmentationTarget",
    "SimilarityToConceptTarget",
    "Target",
    "TargetType",
    "per_image",
    "register_target",
    "softmax",
    "top1_targets",
]
