"""camcore.video.follow: the same target every frame, and following one detection across frames."""

from __future__ import annotations

import numpy as np
import pytest

from camcore.errors import CamcoreError
from camcore.targets import ClassifierOutputTarget
from camcore.video.follow import FollowDetection, FrameTargets, SameTarget, as_frame_targets, box_iou


def test_same_target_every_frame() -> None:
    t = SameTarget(3)
    assert isinstance(t.target, ClassifierOutputTarget) and t.target.class_index == 3
    assert all(t.for_frame(i) is t.target for i in (0, 1, 57))
    assert SameTarget().for_frame(4) is None  # each frame's top-1 class
    custom = ClassifierOutputTarget(1)
    assert SameTarget(custom).for_frame(9) is custom


def test_as_frame_targets() -> None:
    follow = FollowDetection(0)
    assert as_frame_targets(follow) is follow and isinstance(follow, FrameTargets)
    assert as_frame_targets(2).for_frame(0).class_index == 2  # type: ignore[union-attr]
    assert as_frame_targets(None).for_frame(0) is None
    with pytest.raises(CamcoreError, match="targets must be a class index"):
        as_frame_targets("cat")  # type: ignore[arg-type]


def test_box_iou_of_centre_size_boxes() -> None:
    boxes = np.array([[10, 10, 4, 4], [12, 10, 4, 4], [20, 20, 2, 2], [10, 10, 2, 2]], np.float64)
    got = box_iou(boxes, np.array([10, 10, 4, 4], np.float64))
    # identical; shifted by half a width (overlap 2x4 of union 24); disjoint; nested (4 of 16)
    np.testing.assert_allclose(got, [1.0, 8 / 24, 0.0, 4 / 16])


#: (cx, cy, w, h, score of class 0, score of class 1) per candidate
FIRST = np.array([[10, 10, 8, 8, 0.1, 0.9], [60, 60, 8, 8, 0.1, 0.7], [30, 30, 8, 8, 0.95, 0.2]], np.float32)


def test_first_frame_takes_the_best_score_of_the_class() -> None:
    follow = FollowDetection(1, layout="boxes_first")
    t = follow.for_frame(0)
    seed = t.seed(FIRST)
    assert t.detection == {"index": 0, "box_cxcywh": [10.0, 10.0, 8.0, 8.0], "score": pytest.approx(0.9)}
    want = np.zeros_like(FIRST)
    want[0, 5] = 1  # the class-1 score of candidate 0
    np.testing.assert_array_equal(seed, want)


def test_following_prefers_the_box_it_followed() -> None:
    """Frame 2: the far box scores 0.85, the followed one (moved 1 px) 0.8. With stickiness 0.5
    the followed one wins (0.8·(0.5 + 0.5·IoU) against 0.85·0.5); with 0 the top score does."""
    second = np.array([[11, 10, 8, 8, 0.1, 0.8], [60, 60, 8, 8, 0.1, 0.85], [30, 30, 8, 8, 0.9, 0.1]], np.float32)
    sticky = FollowDetection(1, layout="boxes_first", stickiness=0.5)
    sticky.for_frame(0).seed(FIRST)
    t = sticky.for_frame(1)
    t.seed(second)
    assert t.detection is not None and t.detection["index"] == 0
    iou = 7 * 8 / (2 * 64 - 7 * 8)
    assert 0.8 * (0.5 + 0.5 * iou) > 0.85 * 0.5  # the rule, by hand
    loose = FollowDetection(1, layout="boxes_first", stickiness=0.0)
    loose.for_frame(0).seed(FIRST)
    t = loose.for_frame(1)
    t.seed(second)
    assert t.detection is not None and t.detection["index"] == 1


def test_full_stickiness_follows_a_moving_box_over_frames() -> None:
    """stickiness 1: score·IoU with the last pick; the object moves 2 px a frame while a
    distractor with a higher score stands still."""
    follow = FollowDetection(0, layout="boxes_first", stickiness=1.0)
    picks = []
    for frame in range(5):
        x = 10 + 2 * frame
        row = np.array([[x, 10, 8, 8, 0.6 if frame else 0.99], [50, 50, 8, 8, 0.95]], np.float32)
        t = follow.for_frame(frame)
        t.seed(row)
        assert t.detection is not None
        picks.append((t.detection["index"], t.detection["box_cxcywh"][0]))
    assert picks == [(0, 10.0), (0, 12.0), (0, 14.0), (0, 16.0), (0, 18.0)]


def test_channels_first_layout_and_objectness() -> None:
    """YOLOv8 rows are (4 + C, K); with objectness (YOLOv5) the score is objectness x class."""
    rows = np.array(
        [[10, 10, 4, 4, 0.5, 0.9, 0.1], [30, 30, 4, 4, 0.9, 0.6, 0.3], [50, 50, 4, 4, 1.0, 0.2, 0.7]], np.float32
    )
    t = FollowDetection(0, layout="boxes_first", objectness=True).for_frame(0)
    seed = t.seed(rows)
    assert t.detection is not None and t.detection["index"] == 1  # 0.9·0.6 > 0.5·0.9 > 1.0·0.2
    assert t.detection["score"] == pytest.approx(0.54)
    assert seed[1, 5] == 1 and np.count_nonzero(seed) == 1
    plain = FollowDetection(1, layout="channels_first").for_frame(0)
    seed = plain.seed(FIRST.T.copy())
    assert plain.detection is not None and plain.detection["index"] == 0
    assert seed.shape == (6, 3) and seed[5, 0] == 1 and np.count_nonzero(seed) == 1


def test_errors() -> None:
    with pytest.raises(CamcoreError, match="class 7"):
        FollowDetection(7, layout="boxes_first").for_frame(0).seed(FIRST)
    with pytest.raises(CamcoreError, match="stickiness must be in"):
        FollowDetection(0, stickiness=1.5)
    with pytest.raises(CamcoreError, match="layout must be"):
        FollowDetection(0, layout="rows")
