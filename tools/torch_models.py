"""The torchvision classifiers the benchmarks export: seeded random weights, legacy exporter.

Used by ``bench_gradcam.py``, ``bench_methods.py`` and ``bench_video.py`` (needs torch and torchvision).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def export_classifier(arch: str, path: Path, size: int = 224, seed: int = 0) -> Any:
    """Build ``torchvision.models.<arch>`` with seeded random weights, export it to ``path``
    (opset 17, input ``input``, output ``logits``, dynamic batch) and return the module."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    net = getattr(torchvision.models, arch)(weights=None).eval()
    torch.onnx.export(
        net,
        (torch.zeros(1, 3, size, size),),
        str(path),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    return net
