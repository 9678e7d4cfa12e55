"""The per-frame chain (detect -> pose -> pose NMS) in one process, built from the stage graph.

The pipeline runs each link in its own stage; single-image inference, evaluation and the sequential
benchmark baseline run the same links, from the same rows of `stage_graph.GRAPH`, in one loop
through `PoseChain`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from posestream.stream.core.contracts import Detector
from posestream.stream.core.results import Poses
from posestream.stream.core.settings import POSE_MODES, Settings
from posestream.stream.links import DetectLink, Link, Origin, build_detector, build_estimator
from posestream.stream.stage_graph import links

__all__ = ["POSE_MODES", "PoseChain", "build_detector", "build_estimator"]


class PoseChain:
    """The enabled links of the graph for `settings`, in graph order; `steps` pairs each with its
    stage name (the sequential benchmark times them one by one)."""

    def __init__(self, settings: Settings) -> None:
        self.steps: list[tuple[str, Link]] = []
        try:
            for name, link in links(settings):
                self.steps.append((name, link(settings)))
        except BaseException:
            self.close()
            raise

    @property
    def detector(self) -> Detector:
        return next(step.detector for _, step in self.steps if isinstance(step, DetectLink))

    def process(self, frames: Sequence[np.ndarray], origins: Sequence[Origin] | None = None) -> list[Poses]:
        """The poses of `frames` (still images, each on its own, unless `origins` say otherwise)."""
        poses: list[Poses] = [Poses.empty() for _ in frames]
        origins = origins if origins is not None else [Origin()] * len(frames)
        for _, step in self.steps:
            poses = step.process(frames, poses, origins)
        return poses

    def models(self) -> list[str]:
        """What each model of the chain runs as ('detector yolo11n-pose INT8 (...) on openvino (...)')."""
        from posestream.stream.metrics import describe_model

        return [f"{step.label} {describe_model(step.model_info)}" for _, step in self.steps if step.model_info]

    def close(self) -> None:
        for _, step in reversed(self.steps):
            step.close()
        self.steps.clear()

    def __enter__(self) -> "PoseChain":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
