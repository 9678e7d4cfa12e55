"""The `[sinks] render_*` settings the drawing sinks (video, images, window) share."""
from __future__ import annotations

import numpy as np

from posestream.stream.core.settings import SinkSettings
from posestream.stream.render import draw_poses
from posestream.stream.core.results import FrameResult


class Renderer:
    """Draws a result on its frame with the configured threshold, boxes and id labels."""

    def __init__(self, settings: SinkSettings) -> None:
        self.kpt_threshold = settings.render_kpt_threshold
        self.show_boxes = settings.render_boxes
        self.show_ids = settings.render_ids

    def __call__(self, result: FrameResult, frame: np.ndarray) -> np.ndarray:
        return draw_poses(frame, result.poses, kpt_threshold=self.kpt_threshold,
                          show_boxes=self.show_boxes, show_ids=self.show_ids)
