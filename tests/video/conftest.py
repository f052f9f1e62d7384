"""Shared fixtures: the demo model's CAM and preprocessing, a generated moving-object clip."""

from __future__ import annotations

from pathlib import Path

import pytest

import camcore
from camcore.demo import DEMO_MODEL, load_demo_meta
from camcore.video import Preprocess
from tests.video.clips import Clip, moving_object_clip, write_clip

META = load_demo_meta()
FPS = 12.0


@pytest.fixture(scope="session")
def clip() -> Clip:
    return moving_object_clip(n=40, size=192, label=1)


@pytest.fixture(scope="session")
def clip_file(clip: Clip, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", clip.frames, fps=FPS)


@pytest.fixture(scope="session")
def cam() -> camcore.GradCAM:
    return camcore.GradCAM(str(DEMO_MODEL), [META["target_layer"]], threads=1)


@pytest.fixture(scope="session")
def preprocess() -> Preprocess:
    return Preprocess(tuple(META["input_size"]), META["mean"], META["std"])
