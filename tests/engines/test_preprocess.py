"""Letterbox sizing and coordinate mapping, without a model."""
from __future__ import annotations

import numpy as np
import pytest

from posestream.engines.preprocess import canvas_size, letterbox, to_input
from posestream.engines.families.yolo11.decode import decode_yolo_pose, to_frame_pixels


@pytest.mark.parametrize("hw, long_side, rectangular, expected", [
    ((1080, 1920), 640, True, (384, 640)),
    ((720, 1280), 640, True, (384, 640)),
    ((480, 640), 640, True, (480, 640)),
    ((1080, 1920), 640, False, (640, 640)),
    ((1920, 1080), 320, True, (320, 192)),
])
def test_canvas_size(hw, long_side, rectangular, expected) -> None:
    assert canvas_size(*hw, long_side, rectangular=rectangular) == expected


def test_letterbox_round_trip() -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    image[40:60, 90:110] = 255
    canvas, box = letterbox(image, (160, 160))
    assert canvas.shape == (160, 160, 3) and box.scale == pytest.approx(0.8)
    assert (canvas[:40] == 114).all() and (canvas[-40:] == 114).all()
    ys, xs = np.nonzero(canvas[..., 0] == 255)
    back = box.to_frame(np.array([[xs.mean(), ys.mean()]]))
    assert np.allclose(back, [[99.5, 49.5]], atol=1.0)


def test_to_input_is_rgb_nchw_unit_range() -> None:
    canvas = np.zeros((2, 3, 3), np.uint8)
    canvas[..., 0] = 255  # blue in BGR
    x = to_input([canvas])
    assert x.shape == (1, 3, 2, 3) and x.dtype == np.float32
    assert x[0, 2].max() == 1.0 and x[0, 0].max() == 0.0


def test_decode_filters_and_suppresses() -> None:
    out = np.zeros((56, 4), np.float32)
    out[:4, 0] = [50, 50, 20, 40]; out[4, 0] = 0.9
    out[:4, 1] = [51, 50, 20, 40]; out[4, 1] = 0.8   # duplicate of 0
    out[:4, 2] = [150, 50, 20, 40]; out[4, 2] = 0.7
    out[4, 3] = 0.1                                  # below threshold
    out[5:, 0] = np.tile([45, 40, 0.9], 17)
    boxes, scores, kpts = decode_yolo_pose(out, 0.25, 0.6, 100)
    assert np.allclose(scores, [0.9, 0.7]) and kpts.shape == (2, 17, 3)
    assert np.allclose(boxes[0], [40, 30, 60, 70])
    _, box = letterbox(np.zeros((100, 200, 3), np.uint8), (160, 160))
    xywh, frame_scores, frame_kpts = to_frame_pixels(boxes, scores, kpts, box, 100, 200)
    assert np.allclose(xywh[0], [50, 0, 25, 37.5])  # y1 = -12.5 clipped to the top edge
    assert np.allclose(frame_kpts[0, 0], [56.25, 0, 0.9]) and np.allclose(frame_scores, scores)


def test_persons_mostly_outside_the_frame_are_dropped() -> None:
    """A box with less than half its area in the frame (the model saw it in the letterbox padding)
    is no person; one with half or more inside is kept, clipped, with its score and keypoints."""
    _, box = letterbox(np.zeros((100, 200, 3), np.uint8), (160, 160))  # frame at canvas y 40..120
    boxes = np.array([[10, 0, 30, 60], [10, 20, 30, 60], [50, 60, 90, 100]], np.float32)  # 1/3, 1/2, all in
    kpts = np.arange(3 * 17 * 3, dtype=np.float32).reshape(3, 17, 3)
    xywh, scores, frame_kpts = to_frame_pixels(boxes, np.array([0.9, 0.8, 0.7], np.float32), kpts, box, 100, 200)
    assert np.allclose(scores, [0.8, 0.7]) and frame_kpts.shape == (2, 17, 3)
    assert np.allclose(frame_kpts[0], box.to_frame(kpts[1:2])[0])
    assert np.allclose(xywh[0], [12.5, 0, 25, 25])
