"""`yolo-crop` SPPE: the default YOLO-pose model run again on each person crop.

The 320-pixel dynamic-batch export takes every crop of a batch at once. YOLO finds whole people in
its input, so per crop the detection that best matches the crop's centre person is kept: highest
person score x IoU with the box the crop was built around (the crop centre, 1/expand of its size).
The model was not trained on crops; flip test is not applied to it.
"""
from __future__ import annotations

import numpy as np

from posestream.engines.model_card import ModelCard
from posestream.engines.topdown import Outputs, TopDownEstimator
from posestream.stream.core.errors import ModelError
from posestream.stream.core.similarity import iou_matrix

VARIANT = "320-dynamic-batch"


def _iou_with(boxes: np.ndarray, target: np.ndarray) -> np.ndarray:
    """IoU of cx, cy, w, h boxes [..., 4] with one cx, cy, w, h box (`core.similarity.iou_matrix`)."""
    corner = np.concatenate([boxes[..., :2] - boxes[..., 2:] / 2, boxes[..., 2:]], axis=-1)
    one = np.concatenate([target[:2] - target[2:] / 2, target[2:]])
    return iou_matrix(corner.reshape(-1, 4), one[None]).reshape(boxes.shape[:-1])


class YoloCropPose(TopDownEstimator):
    tasks = ("detector+pose",)

    def choose_variant(self, card: ModelCard) -> str:
        if VARIANT not in card.files:
            raise ModelError(f"model '{card.name}' has no '{VARIANT}' variant (run `posestream models prepare`)")
        return VARIANT

    def setup(self, card: ModelCard) -> None:
        self.num_keypoints = int(card.output.get("num_keypoints", 17))
        h, w = self.input_hw
        self.target = np.array([w / 2, h / 2, w / self.expand, h / self.expand], dtype=np.float32)

    def decode(self, outputs: Outputs, flipped: Outputs | None) -> tuple[np.ndarray, np.ndarray]:
        raw = next(iter(outputs.values()))  # [N, 5 + 3K, A]
        if raw.ndim != 3 or raw.shape[1] != 5 + 3 * self.num_keypoints:
            raise ModelError(f"yolo-crop: unexpected output shape {list(raw.shape)}")
        candidates = raw.transpose(0, 2, 1)  # [N, A, 56]
        fit = candidates[..., 4] * _iou_with(candidates[..., :4], self.target)
        best = candidates[np.arange(len(candidates)), fit.argmax(axis=1)]  # [N, 56]
        keypoints = best[:, 5:].reshape(-1, self.num_keypoints, 3)
        return keypoints[..., :2], keypoints[..., 2]
