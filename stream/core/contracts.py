"""The contracts plugins implement: one abstract base class per plugin kind, with a fixed constructor.

| kind (entry-point group)        | constructed as                        | called with                    |
|---------------------------------|---------------------------------------|--------------------------------|
| `Detector` (posestream.detectors) | `Detector(settings)`                | `detect(frames)` (or `start`/`finish` per frame; the detect stage calls `detect_frames`/`start_frame` with stream keys), `close()` |
| `PoseEstimator` (posestream.pose) | `PoseEstimator(settings)`           | `estimate(frames, detections)`, `close()` |
| `Tracker` (posestream.trackers)   | `Tracker(settings, ids)`, per stream | `update(poses, frame)`        |
| `Sink` (posestream.sinks)         | `Sink(settings, target, streams)`   | `write(result, frame)`, `end_stream(stream, last_frame)`, `close()` |

`settings` is the run's frozen `Settings` (`stream.core.settings`); a plugin reads its own table
(`settings.detector`, `settings.sinks`, ...). `ids` is the run's `IdAllocator`; `target` is what
followed `KIND:` on the command line; `streams` are the names of every stream of the run.

Everything the runtime calls is required, not probed: `needs_pixels` (a class attribute: whether
`write` wants the BGR frame or None is enough; the pipeline leases pixels to the sinks stage only
when some sink needs them), `Tracker.reads_pixels(settings)` (the same for the track stage, decided
by the tracker's settings) and `close()` (safe twice). The registry (`registry.load_plugin`)
refuses a class that does not derive from its kind's contract, with one `PluginNotFoundError`.
"""
from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Hashable, Sequence

import numpy as np

from posestream.stream.core.results import FrameResult, Poses

if TYPE_CHECKING:
    from posestream.stream.core.settings import Settings


class Detector(ABC):
    """Finds persons (and, for one-stage models, their keypoints) in BGR frames.

    `in_flight` > 0 says the detector can overlap frames: the detect stage then feeds it one frame
    at a time with `start` (which copies what it needs, so the frame's slot is free at once) and
    takes results in order with `finish`, keeping up to `in_flight` frames started, so its engine
    never waits for the stage's own work between frames. The defaults detect at `start`."""

    in_flight: int = 0

    @abstractmethod
    def detect(self, frames: Sequence[np.ndarray]) -> list[Poses]:
        """One `Poses` per frame, in frame pixels."""

    def start(self, frame: np.ndarray) -> object:
        """Begin on one frame; returns the handle `finish` takes."""
        return self.detect([frame])[0]

    def detect_frames(self, frames: Sequence[np.ndarray], keys: Sequence[tuple[Hashable, int]]) -> list[Poses]:
        """`detect` for frames of streams, `keys` saying whose (stream, frame number) each is, for a
        detector that keeps per-stream state (the small-people windows); the default ignores them."""
        return self.detect(frames)

    def start_frame(self, frame: np.ndarray, key: tuple[Hashable, int]) -> object:
        """`start` for a frame of a stream (see `detect_frames`); the default ignores the key."""
        return self.start(frame)

    def finished(self, handle: object) -> bool:
        """Whether `finish(handle)` would return without waiting."""
        return True

    def finish(self, handle: object) -> Poses:
        """The persons of the frame `start` returned `handle` for."""
        return handle  # type: ignore[return-value]  # the default `start` detected already

    @abstractmethod
    def close(self) -> None:
        """Release the model; safe twice."""


class PoseEstimator(ABC):
    """Estimates keypoints inside the given boxes, batching crops across persons and frames."""

    @abstractmethod
    def estimate(self, frames: Sequence[np.ndarray], detections: Sequence[Poses]) -> list[Poses]:
        """One `Poses` per frame, keypoints in frame pixels."""

    @abstractmethod
    def close(self) -> None:
        """Release the model; safe twice."""


@dataclass(frozen=True)
class TrackFrame:
    """What a tracker may know about a frame besides its poses.

    `index` is the frame's number in its stream: a jump means frames the tracker never saw (a live
    source dropped them). `time` is seconds on a clock that advances with the stream (the
    presentation time for files, the capture time for live sources; None when unknown), so a stream
    that stalls or reconnects after minutes shows as a long gap even when `index` does not jump.
    `image` is the BGR frame when the tracker `reads_pixels`, else None; it may be smaller than the
    frame the poses are measured in (decoded at the detector's size): `scale` = image pixels per
    pose pixel."""

    index: int
    time: float | None = None
    image: np.ndarray | None = None
    scale: float = 1.0


class Tracker(ABC):
    """One instance per stream; returns the poses with `ids` filled in (-1 = no id)."""

    @classmethod
    def reads_pixels(cls, settings: "Settings") -> bool:
        """Whether `update` wants `frame.image` with these settings (the track stage then leases
        the frame's pixels from the ring); False unless a tracker says otherwise."""
        del settings
        return False

    @abstractmethod
    def update(self, poses: Poses, frame: TrackFrame | None = None) -> Poses:
        """`frame` None: the next frame of the stream, without time or pixels."""


class Sink(ABC):
    """Receives every finished frame of every stream, in order per stream."""

    needs_pixels: ClassVar[bool]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if not isinstance(getattr(cls, "needs_pixels", None), bool):
            raise TypeError(f"sink {cls.__name__} must set the class attribute needs_pixels (True/False)")

    @abstractmethod
    def write(self, result: FrameResult, frame: np.ndarray | None) -> None:
        """One frame's result; `frame` is the BGR image when `needs_pixels`, else None."""

    @abstractmethod
    def end_stream(self, stream: str, last_frame: int | None) -> None:
        """`stream` has ended; `last_frame` is the last frame number written to this sink (None when
        none was). Called once per stream, after its last `write`."""

    @abstractmethod
    def close(self) -> None:
        """Flush and release; safe twice."""


CONTRACTS: dict[str, type] = {
    "posestream.detectors": Detector, "posestream.pose": PoseEstimator,
    "posestream.trackers": Tracker, "posestream.sinks": Sink,
}


class IdAllocator:
    """Hands out track ids that are never reused within a run. Passed explicitly to trackers (not a
    class attribute), so two processes can never collide through shared module state."""

    def __init__(self, start: int = 1) -> None:
        self._counter = itertools.count(start)

    def next(self) -> int:
        return next(self._counter)
