"""The links of the per-frame chain (detect -> pose -> pose NMS), each built from `Settings`.

A link takes a batch of frames with the poses found so far and returns the next poses. The stage
graph (`stage_graph.GRAPH`) names the link each model stage runs; the pipeline's stages, the
one-process `chain.PoseChain` and the sequential benchmark all build their links from there, so the
chain is written once. Plugins are resolved by name through entry points, so this module imports
no inference runtime.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Hashable, Protocol, Sequence

import numpy as np

from posestream.stream.core import registry
from posestream.stream.core.contracts import Detector, PoseEstimator
from posestream.stream.core.results import Poses
from posestream.stream.core.settings import Settings
from posestream.stream.pose_nms import make_pose_nms


@dataclass(frozen=True)
class Origin:
    """Where a frame comes from: its (stream, frame number) for detectors that keep per-stream state
    (None: a still image, on its own), and the source's (h, w) when it was decoded smaller."""

    key: tuple[Hashable, int] | None = None
    source_hw: tuple[int, int] | None = None


class Link(Protocol):
    """One step of the chain. `in_flight` > 0: it can overlap frames (`start`/`finished`/`finish`,
    one frame at a time; see `contracts.Detector`). `label` and `model_info` say what model it runs
    (for the run's summary; "" and None when it runs none)."""

    in_flight: int
    label: str

    @property
    def model_info(self) -> dict[str, Any] | None:
        """The model file, backend and precision it runs (`engines.runner.ModelRunner.model_info`)."""

    def process(self, frames: Sequence[np.ndarray], poses: list[Poses],
                origins: Sequence[Origin]) -> list[Poses]:
        """The poses of `frames` after this step (in source pixels)."""

    def close(self) -> None:
        """Release what the step holds; safe twice."""


def build_detector(settings: Settings) -> Detector:
    """The configured detector plugin, inside the small-people windows when `small_people.enabled`."""
    detector_class = registry.load_plugin("posestream.detectors", settings.detector.plugin)
    if not settings.small_people.enabled:
        return detector_class(settings)
    from posestream.stream.small_people import SmallPeopleDetector, hint_settings

    return SmallPeopleDetector(detector_class(hint_settings(settings)), settings)


def build_estimator(settings: Settings) -> PoseEstimator:
    return registry.load_plugin("posestream.pose", settings.pose.plugin)(settings)


class DetectLink:
    """The detector; its persons come back in source pixels (frames may be decoded smaller)."""

    label = "detector"

    def __init__(self, settings: Settings) -> None:
        self.detector = build_detector(settings)
        self.in_flight = self.detector.in_flight

    @property
    def model_info(self) -> dict[str, Any] | None:
        return getattr(self.detector, "model_info", None)

    def process(self, frames: Sequence[np.ndarray], poses: list[Poses],
                origins: Sequence[Origin]) -> list[Poses]:
        del poses  # the first link: nothing found yet
        keys = [origin.key for origin in origins]
        found = (self.detector.detect(frames) if None in keys
                 else self.detector.detect_frames(frames, keys))  # type: ignore[arg-type]
        return [self.in_source_pixels(poses, frame.shape, origin.source_hw)
                for poses, frame, origin in zip(found, frames, origins)]

    @staticmethod
    def in_source_pixels(poses: Poses, frame_shape: tuple[int, ...], source_hw: tuple[int, int] | None) -> Poses:
        """The one mapping from the decoded frame back to the source's pixels."""
        return poses.in_source_pixels(frame_shape, source_hw)

    def start(self, frame: np.ndarray, origin: Origin) -> object:
        return self.detector.start_frame(frame, origin.key) if origin.key is not None else self.detector.start(frame)

    def finished(self, handle: object) -> bool:
        return self.detector.finished(handle)

    def finish(self, handle: object, frame_shape: tuple[int, ...], origin: Origin) -> Poses:
        return self.in_source_pixels(self.detector.finish(handle), frame_shape, origin.source_hw)

    def close(self) -> None:
        self.detector.close()


class PoseLink:
    """The top-down SPPE on the detected boxes."""

    in_flight = 0
    label = "pose"

    def __init__(self, settings: Settings) -> None:
        self.estimator = build_estimator(settings)

    @property
    def model_info(self) -> dict[str, Any] | None:
        return getattr(self.estimator, "model_info", None)

    def process(self, frames: Sequence[np.ndarray], poses: list[Poses],
                origins: Sequence[Origin]) -> list[Poses]:
        del origins  # its frames are full size: a sink or this stage reads pixels
        return self.estimator.estimate(frames, poses)

    def close(self) -> None:
        self.estimator.close()


class NmsLink:
    """Pose NMS per frame."""

    in_flight = 0
    label = ""
    model_info = None

    def __init__(self, settings: Settings) -> None:
        self.nms = make_pose_nms(settings)

    def process(self, frames: Sequence[np.ndarray], poses: list[Poses],
                origins: Sequence[Origin]) -> list[Poses]:
        del frames, origins
        return [self.nms(found) for found in poses]

    def close(self) -> None:
        """Holds nothing."""
