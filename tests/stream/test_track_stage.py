"""What the track stage tells a tracker about each frame (`stage_bodies.track_frame`): its number, the
clock of its stream (capture time for live sources, presentation time for files) and the pixels'
scale when the ring holds the frame smaller than the source delivered it."""
from __future__ import annotations

import numpy as np

from posestream.stream.ring import FrameRef
from posestream.stream.stage_bodies import track_frame


def test_live_frames_run_on_capture_time_and_files_on_presentation_time() -> None:
    live = FrameRef(0, "cam", 7, 0, (360, 640, 3), 0.25, 1000.5, "ring", live=True)
    offline = FrameRef(0, "file", 7, 0, (360, 640, 3), 0.25, 1000.5, "ring")
    assert track_frame(live, None).time == 1000.5 and track_frame(live, None).index == 7
    assert track_frame(offline, None).time == 0.25
    assert track_frame(FrameRef(0, "folder", 3, 0, (360, 640, 3), None, 9.0, "ring"), None).time is None


def test_pixels_come_with_their_scale_to_source_pixels() -> None:
    image = np.zeros((360, 640, 3), dtype=np.uint8)
    ref = FrameRef(0, "s", 0, 0, image.shape, None, 0.0, "ring", None, (1080, 1920))
    frame = track_frame(ref, image)
    assert frame.image is image and abs(frame.scale - 1 / 3) < 1e-9
    assert track_frame(FrameRef(0, "s", 0, 0, image.shape, None, 0.0, "ring"), image).scale == 1.0
    assert track_frame(ref, None).image is None
