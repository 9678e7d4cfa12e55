"""The links of the per-frame chain (detect -> pose -> pose NMS), each built from `Settings`.

A link takes a batch of frames with the poses found so far and returns the next poses. The stage
graph (`stage_graph.GRAPH`) names the link each model stage runs; the pipeline's stages, the
one-process `chain.PoseChain` and the sequential benchmark all build their links from there, so the
chain is written once. Plugins are resolved by name through entry points, so this module imports
no inference runtime.
"""
from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from posestream.stream.core import registry
from posestream.stream.core.contracts import Detector, PoseEstimator
from posestream.stream.core.results import Poses
from posestream.stream.core.settings import Settings
from posestream.stream.pose_nms import make_pose_nms

SourceSizes = Sequence["tuple[int, int] | None"]  # per frame: the source's (h, w) when decoded smaller


class Link(Protocol):
    """One step of the chain. `in_flight` > 0: it can overlap frames (`start`/`finished`/`finish`,
    one frame at a time; see `contracts.Detector`)."""

    in_flight: int

    def process(self, frames: Sequence[np.ndarray], poses: list[Poses],
                source_hw: SourceSizes) -> list[Poses]:
        """The poses of `frames` after this step (in source pixels)."""

    def close(self) -> None:
        """Release what the step holds; safe twice."""


def build_detector(settings: Settings) -> Detector:
    return registry.load_plugin("posestream.detectors", settings.detector.plugin)(settings)


def build_estimator(settings: Settings) -> PoseEstimator:
    return registry.load_plugin("posestream.pose", settings.pose.plugin)(settings)


class DetectLink:
    """The detector; its persons come back in source pixels (frames may be decoded smaller)."""

    def __init__(self, settings: Settings) -> None:
        self.detector = build_detector(settings)
        self.in_flight = self.detector.in_flight

    def process(self, frames: Sequence[np.ndarray], poses: list[Poses],
                source_hw: SourceSizes) -> list[Poses]:
        del poses  # the first link: nothing found yet
        return [self.in_source_pixels(found, frame.shape, hw)
                for found, frame, hw in zip(self.detector.detect(frames), frames, source_hw)]

    @staticmethod
    def in_source_pixels(poses: Poses, frame_shape: tuple[int, ...], source_hw: tuple[int, int] | None) -> Poses:
        """The one mapping from the decoded frame back to the source's pixels."""
        return poses.in_source_pixels(frame_shape, source_hw)

    def start(self, frame: np.ndarray) -> object:
        return self.detector.start(frame)

    def finished(self, handle: object) -> bool:
        return self.detector.finished(handle)

    def finish(self, handle: object, frame_shape: tuple[int, ...], source_hw: tuple[int, int] | None) -> Poses:
        return self.in_source_pixels(self.detector.finish(handle), frame_shape, source_hw)

    def close(self) -> None:
        self.detector.close()


class PoseLink:
    """The top-down SPPE on the detected boxes."""

    in_flight = 0

    def __init__(self, settings: Settings) -> None:
        self.estimator = build_estimator(settings)

    def process(self, frames: Sequence[np.ndarray], poses: list[Poses],
                source_hw: SourceSizes) -> list[Poses]:
        del source_hw  # its frames are full size: a sink or this stage reads pixels
        return self.estimator.estimate(frames, poses)

    def close(self) -> None:
        self.estimator.close()


class NmsLink:
    """Pose NMS per frame."""

    in_flight = 0

    def __init__(self, settings: Settings) -> None:
        self.nms = make_pose_nms(settings)

    def process(self, frames: Sequence[np.ndarray], poses: list[Poses],
                source_hw: SourceSizes) -> list[Poses]:
        del frames, source_hw
        return [self.nms(found) for found in poses]

    def close(self) -> None:
        """Holds nothing."""
