"""Light imports: the C++ overlay does not pull in onnx, onnxruntime or the graph surgery, and the
lazy ``camcore`` namespace still offers every public name."""

from __future__ import annotations

import subprocess
import sys

import camcore


def test_postprocess_alone_stays_light() -> None:
    code = (
        "import sys, camcore.postprocess\n"
        "heavy = [m for m in ('onnx', 'onnxruntime', 'cv2', 'camcore.graph', 'camcore.methods', 'camcore.engine')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "", f"import camcore.postprocess loaded {done.stdout.strip()}"


def test_the_namespace_offers_all_of_all() -> None:
    for name in camcore.__all__:
        assert getattr(camcore, name) is not None, name
    assert {"GradCAM", "ScoreCAM", "ClassifierOutputTarget", "Engine", "overlay"} <= set(camcore.__all__)
    assert "GradCAM" in dir(camcore)
    try:
        camcore.NoSuchName  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchName" in str(exc)
    else:
        raise AssertionError("an unknown name must raise AttributeError")
