"""The per-frame processing chain (detect -> pose -> pose NMS), built from config.

The streaming stages each own one link of it; single-image inference, evaluation and the
sequential benchmark baseline run the links in one loop through `PoseChain`. Plugins are resolved
by name through entry points, so this module imports no inference runtime.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from posestream.stream.core import registry
from posestream.stream.core.config import Config
from posestream.stream.core.contracts import Detector, PoseEstimator
from posestream.stream.core.results import Poses
from posestream.stream.core.settings import POSE_MODES, Settings

__all__ = ["POSE_MODES", "PoseChain", "build_detector", "build_estimator", "build_nms"]


def build_detector(config: Config | Settings) -> Detector:
    """The configured detector plugin, inside the small-people windows when `small_people.enabled`."""
    settings = Settings.of(config)
    detector_class = registry.load_plugin("posestream.detectors", settings.detector.plugin)
    if not settings.small_people.enabled:
        return detector_class(settings)
    from posestream.stream.small_people import SmallPeopleDetector, hint_settings

    return SmallPeopleDetector(detector_class(hint_settings(settings)), settings)


def build_estimator(config: Config | Settings) -> PoseEstimator | None:
    """The SPPE for `pose.mode = "topdown"`; None in one-stage mode (the detector's keypoints are kept)."""
    settings = Settings.of(config)
    if settings.pose.mode == "onestage":
        return None
    return registry.load_plugin("posestream.pose", settings.pose.plugin)(settings)


def build_nms(config: Config) -> Callable[[Poses], Poses]:
    from posestream.stream.pose_nms import make_pose_nms

    return make_pose_nms(config)


class PoseChain:
    """detect -> (pose) -> NMS for a batch of frames, in one process."""

    def __init__(self, config: Config) -> None:
        self.detector = build_detector(config)
        self.estimator = build_estimator(config)
        self.nms = build_nms(config)

    def process(self, frames: Sequence[np.ndarray]) -> list[Poses]:
        detections = self.detector.detect(frames)
        if self.estimator is not None:
            detections = self.estimator.estimate(frames, detections)
        return [self.nms(poses) for poses in detections]

    def models(self) -> list[str]:
        """What each model of the chain runs as ('detector yolo11n-pose INT8 (...) on openvino (...)')."""
        from posestream.stream.metrics import describe_model

        plugins = (("detector", self.detector), ("pose", self.estimator))
        return [f"{role} {describe_model(p.model_info)}" for role, p in plugins if getattr(p, "model_info", None)]

    def close(self) -> None:
        self.detector.close()
        if self.estimator is not None:
            self.estimator.close()

    def __enter__(self) -> "PoseChain":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
