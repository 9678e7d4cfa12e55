"""The one-method contracts plugins implement. Each plugin class is constructed from the full config
(plus a target for sinks and an id allocator for trackers) and then called once per batch/frame."""
from __future__ import annotations

import itertools
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from posestream.stream.core.results import FrameResult, Poses


@runtime_checkable
class Detector(Protocol):
    """`Detector(config)`; finds persons (and, for one-stage models, their keypoints) in BGR frames."""

    def detect(self, frames: Sequence[np.ndarray]) -> list[Poses]: ...


@runtime_checkable
class PoseEstimator(Protocol):
    """`PoseEstimator(config)`; estimates keypoints inside the given boxes, batching crops across
    persons and frames. Returns one `Poses` per frame, keypoints in frame pixels."""

    def estimate(self, frames: Sequence[np.ndarray], detections: Sequence[Poses]) -> list[Poses]: ...


@runtime_checkable
class Tracker(Protocol):
    """`Tracker(config, ids)`; one instance per stream. Returns the poses with `ids` filled in."""

    def update(self, poses: Poses) -> Poses: ...


@runtime_checkable
class Sink(Protocol):
    """`Sink(config, target)`; receives every finished frame of every stream, in order per stream.
    `needs_pixels` says whether `write` wants the BGR frame (render sinks) or None is enough."""

    needs_pixels: bool

    def write(self, result: FrameResult, frame: np.ndarray | None) -> None: ...

    def close(self) -> None: ...


class IdAllocator:
    """Hands out track ids that are never reused within a run. Passed explicitly to trackers (not a
    class attribute), so two processes can never collide through shared module state."""

    def __init__(self, start: int = 1) -> None:
        self._counter = itertools.count(start)

    def next(self) -> int:
        return next(self._counter)
