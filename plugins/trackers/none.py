"""The `none` tracker: every pose leaves without an id (-1, null in the output)."""
from __future__ import annotations

import numpy as np

from posestream.stream.core.contracts import IdAllocator, Tracker, TrackFrame
from posestream.stream.core.results import Poses
from posestream.stream.core.settings import Settings


class NoTracker(Tracker):
    """`NoTracker(settings, ids)`: for single images or when ids are not wanted; keeps no state and
    never takes an id from the allocator."""

    def __init__(self, settings: Settings, ids: IdAllocator) -> None:
        del settings, ids  # the contract's constructor; nothing to configure

    def update(self, poses: Poses, frame: TrackFrame | None = None) -> Poses:
        """The same poses with all ids set to -1."""
        return Poses(poses.boxes, poses.box_scores, poses.keypoints, poses.scores,
                     np.full(len(poses), -1, dtype=np.int64), poses.format)
