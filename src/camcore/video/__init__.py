"""Video: explain every frame of a file, camera or stream, in a pipeline of overlapping stages.

Python API::

    import camcore
    from camcore.video import explain_frames, open_source

    cam = camcore.GradCAM("model.onnx", threads=1)       # one thread per worker: the workers overlap
    src = open_source("traffic.mp4")                       # file, glob, camera index or URL
    for frame, cam_map, picture, outputs in explain_frames(src.frames(), cam, smooth=0.6):
        ...                                                # BGR frames in, BGR overlays out

The command line (``camcore video``) runs the same :class:`VideoPipeline`.
"""

from __future__ import annotations

from camcore.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess, model_input_size
from camcore.video.cli import add_video_parser, cmd_video
from camcore.video.follow import FollowDetection, FrameTargets, SameTarget
from camcore.video.io import FolderSink, FrameSource, SummaryWriter, VideoSink, open_sink, open_source, read_frames
from camcore.video.pipeline import FrameInfo, FrameResult, VideoPipeline, explain_frames
from camcore.video.smoothing import Normalization, TemporalSmoother

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FolderSink",
    "FollowDetection",
    "FrameInfo",
    "FrameResult",
    "FrameSource",
    "FrameTargets",
    "Normalization",
    "Preprocess",
    "SameTarget",
    "SummaryWriter",
    "TemporalSmoother",
    "VideoPipeline",
    "VideoSink",
    "add_video_parser",
    "cmd_video",
    "explain_frames",
    "model_input_size",
    "open_sink",
    "open_source",
    "read_frames",
]
