"""Synthetic persons for tracker tests: a COCO-17 stick figure placed in a box, so every scenario
(crossing, disappearing, false positives) has exactly known poses and expected ids."""
from __future__ import annotations

from typing import Callable

import numpy as np
import pytest

from posestream.stream.core.contracts import IdAllocator
from posestream.plugins.trackers.oks_byte import OksByteTracker
from posestream.stream.core.config import load_config
from posestream.stream.core.results import Poses

# Keypoints as fractions of the box (u across, v down), COCO-17 order, arms hanging down.
_ARMS_DOWN = np.array([
    (0.50, 0.08), (0.54, 0.06), (0.46, 0.06), (0.58, 0.07), (0.42, 0.07),
    (0.72, 0.20), (0.28, 0.20), (0.80, 0.36), (0.20, 0.36), (0.84, 0.50), (0.16, 0.50),
    (0.64, 0.52), (0.36, 0.52), (0.64, 0.73), (0.36, 0.73), (0.64, 0.95), (0.36, 0.95),
])
_ARMS_UP = _ARMS_DOWN.copy()
_ARMS_UP[7:11] = [(0.86, 0.12), (0.14, 0.12), (0.92, 0.01), (0.08, 0.01)]
POSES = {"down": _ARMS_DOWN, "up": _ARMS_UP}

# (cx, cy, height, pose name, score): one synthetic person; box width is 0.4 * height.
Person = tuple[float, float, float, str, float]


def _make_poses(persons: list[Person]) -> Poses:
    """One frame's `Poses` from synthetic persons (keypoint scores 0.9)."""
    if not persons:
        return Poses.empty()
    boxes, keypoints, scores = [], [], []
    for cx, cy, height, pose, score in persons:
        width = 0.4 * height
        x0, y0 = cx - width / 2, cy - height / 2
        uv = POSES[pose]
        points = np.stack([x0 + uv[:, 0] * width, y0 + uv[:, 1] * height,
                           np.full(len(uv), 0.9)], axis=1)
        boxes.append((x0, y0, width, height))
        keypoints.append(points)
        scores.append(score)
    return Poses(np.array(boxes), np.array(scores), np.array(keypoints), np.array(scores))


@pytest.fixture
def tracker_factory() -> Callable[..., tuple[OksByteTracker, IdAllocator]]:
    """`tracker_factory(**tracker_overrides)` -> (tracker, its id allocator), default config."""
    def build(**overrides: object) -> tuple[OksByteTracker, IdAllocator]:
        config = load_config(overrides={f"tracker.{k}": v for k, v in overrides.items()})
        ids = IdAllocator()
        return OksByteTracker(config, ids), ids
    return build


@pytest.fixture
def make_poses() -> Callable[[list[Person]], Poses]:
    """`make_poses([(cx, cy, height, "down" | "up", score), ...])` -> one frame's `Poses`."""
    return _make_poses


@pytest.fixture
def run_tracker() -> Callable[..., list[list[int]]]:
    """`run_tracker(tracker, frames)`: feed the frames in order; the ids per frame, input order."""
    def run(tracker: OksByteTracker, frames: list[list[Person]]) -> list[list[int]]:
        return [tracker.update(_make_poses(persons)).ids.tolist() for persons in frames]
    return run
