"""`mediapipe-person` detector: MediaPipe's pose detector (the person finder of BlazePose) on whole
frames, for top-down use: boxes placed as MediaPipe places its landmark crops, no body keypoints.

Frames are letterboxed (black) to 224x224 and scaled to [-1, 1]; anchors scoring at least
`detector.score_threshold` are decoded and merged by MediaPipe's weighted NMS (at most
`detector.max_persons`). Each person's box is the square around its whole-body circle (centre: hip
centre, radius: distance to the circle point); its 4 keypoints (format `mediapipe-roi4`) carry the
body axis, which the `blazepose` plugin turns its crops by. The points are not COCO keypoints, so
this detector needs `pose.mode = "topdown"`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from posestream.engines.families.mediapipe_detector.decode import (anchors, body_boxes, decode_detections,
                                                                   weighted_nms)
from posestream.engines.preprocess import letterbox
from posestream.engines.runner import ModelRunner
from posestream.stream.core.contracts import Detector
from posestream.stream.core.errors import ConfigError
from posestream.stream.core.results import Poses
from posestream.stream.core.settings import Settings


class MediaPipePersonDetector(ModelRunner, Detector):
    """`MediaPipePersonDetector(settings)`: `model.name` names the prepared `mediapipe-person`."""

    tasks = ("detector-anchors",)

    def __init__(self, settings: Settings) -> None:
        if settings.pose.mode != "topdown":
            raise ConfigError("detector.plugin = 'mediapipe-person' finds boxes without COCO keypoints; "
                              "it needs pose.mode = 'topdown'")
        cfg = settings.detector
        self.score_threshold = cfg.score_threshold
        self.max_persons = cfg.max_persons
        super().__init__(settings, settings.model.name, cfg.threads)
        try:
            self.size = int(self.card.input["size"][0])
            self.pad = self.card.letterbox_pad
        except BaseException:
            self.close()
            raise
        self.take_images(settings)  # the card's: MediaPipe's [-1, 1] (1/127.5, mean 1); uint8 in with OpenVINO
        self._anchors = anchors(self.size)
        self._input_name = self.engine.inputs[0].name

    def detect(self, frames: Sequence[np.ndarray]) -> list[Poses]:
        if not frames:
            return []
        boxed = [letterbox(frame, (self.size, self.size), self.pad) for frame in frames]
        out = self.run({self._input_name: self.model_input([canvas for canvas, _ in boxed])})
        return [self._poses(out["scores"][i], out["regressors"][i], box, frame.shape[:2])
                for i, ((_, box), frame) in enumerate(zip(boxed, frames))]

    def _poses(self, scores: np.ndarray, regressors: np.ndarray, box, hw: tuple[int, int]) -> Poses:
        boxes, points, probability = decode_detections(scores, regressors, self._anchors, self.score_threshold)
        boxes, points, probability = weighted_nms(boxes, points, probability)
        points, probability = points[:self.max_persons], probability[:self.max_persons]
        if not len(probability):
            return Poses.empty(4, "mediapipe-roi4")
        frame_points = box.to_frame(points * self.size - 0.5)
        keypoints = np.concatenate([frame_points, np.repeat(probability[:, None, None], 4, 1)], -1)
        return Poses(body_boxes(frame_points), probability, keypoints, probability.copy(), format="mediapipe-roi4")
