"""`movenet-multipose` detector: MoveNet MultiPose Lightning, one-stage (boxes and COCO-17 keypoints
of every person in one pass), on the model named by `model.name`.

Frames are letterboxed (black padding) to `detector.input_size` on the long side with the other
side rounded up to a multiple of 32 (the model takes any such size; 256 is what it was published
with). Persons are the local maxima of its centre heatmap above `detector.score_threshold` (at most
`detector.max_persons`); their keypoints and boxes are decoded by
`engines.families.movenet.decode.decode_multipose`, the graph's own arithmetic.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from posestream.engines.families.movenet.decode import decode_multipose
from posestream.engines.preprocess import canvas_size, letterbox
from posestream.engines.runner import ModelRunner
from posestream.stream.core.contracts import Detector
from posestream.stream.core.results import Poses
from posestream.stream.core.settings import Settings


class MoveNetMultiPose(ModelRunner, Detector):
    """`MoveNetMultiPose(settings)`: the `[detector]` table picks the input size, score threshold
    and most persons; `model.name` names the prepared `movenet-multipose` model."""

    tasks = ("detector+pose-movenet",)

    def __init__(self, settings: Settings) -> None:
        cfg = settings.detector
        self.size = cfg.input_size
        self.score_threshold = cfg.score_threshold
        self.max_persons = cfg.max_persons
        super().__init__(settings, settings.model.name, cfg.threads)
        try:
            self.pad = self.card.letterbox_pad
        except BaseException:
            self.close()
            raise
        self.take_images(settings)  # the card's: RGB 0..255; uint8 in with OpenVINO
        self._input_name = self.engine.inputs[0].name

    def detect(self, frames: Sequence[np.ndarray]) -> list[Poses]:
        return [self._detect(frame) for frame in frames]

    def _detect(self, frame: np.ndarray) -> Poses:
        height, width = frame.shape[:2]
        canvas, box = letterbox(frame, canvas_size(height, width, self.size), self.pad)
        out = self.run({self._input_name: self.model_input(canvas[None])})
        centres = out["centers"]
        candidates = int((centres >= self.score_threshold).sum())  # a person scores at most its centre
        if candidates == 0:
            return Poses.empty()
        keypoints, boxes, scores = decode_multipose(out["heatmaps"], centres, out["regression"], out["offsets"],
                                                    out["box_offsets"], out["box_scales"],
                                                    min(candidates, self.max_persons))
        keypoints, boxes, scores = keypoints[0], boxes[0], scores[0]
        keep = scores >= self.score_threshold
        keypoints, boxes, scores = keypoints[keep], boxes[keep], scores[keep]
        ch, cw = canvas.shape[:2]
        points = np.stack([keypoints[..., 1] * cw - 0.5, keypoints[..., 0] * ch - 0.5, keypoints[..., 2]], -1)
        xywh, inside = box.boxes_to_frame(np.concatenate([boxes[:, [1, 0]] * [cw, ch], boxes[:, [3, 2]] * [cw, ch]], 1),
                                          height, width)
        points = box.to_frame(points[inside])
        return Poses(xywh[inside], scores[inside], points, scores[inside].copy(), format="coco17")
