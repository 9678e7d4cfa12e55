"""`movenet` pose plugin: MoveNet SinglePose Thunder (256) or Lightning (192) as a top-down SPPE.

Crops are placed as MoveNet expects them: a square around the person box (its longer side times
`pose.box_expand`, centred on the box), scaled to the model's square input, RGB 0..255. The heads
are decoded by `engines.families.movenet.decode` (the graph's own argmax/offset arithmetic); the
normalised (y, x) become crop pixels. With `pose.flip_test` the mirrored crop's keypoints are
mirrored back (left/right swapped) and averaged with the plain ones.
"""
from __future__ import annotations

import numpy as np

from posestream.engines.families.movenet.decode import decode_singlepose
from posestream.engines.model_card import ModelCard
from posestream.engines.topdown import Outputs, TopDownEstimator
from posestream.stream.core.errors import ModelError


class MoveNetPose(TopDownEstimator):
    """`MoveNetPose(settings)`; a `PoseEstimator` on a prepared `movenet-thunder|lightning` model."""

    tasks = ("pose-movenet",)

    def setup(self, card: ModelCard) -> None:
        if self.input_hw[0] != self.input_hw[1]:
            raise ModelError(f"model '{card.name}': MoveNet crops are square, input is {self.input_hw}")
        offset = card.output.get("distance_offset")
        if not isinstance(offset, (int, float)):
            raise ModelError(f"model card '{card.name}' lacks output.distance_offset (prepare it again)")
        self.distance_offset = float(offset)

    def _keypoints(self, outputs: Outputs) -> tuple[np.ndarray, np.ndarray]:
        kp = decode_singlepose(outputs["heatmaps"], outputs["centers"], outputs["regression"],
                               outputs["offsets"], self.distance_offset)
        height, width = self.input_hw
        # normalised coordinates are continuous (pixel i spans [i, i+1)); ours put pixel i's centre at i
        xy = np.stack([kp[..., 1] * width - 0.5, kp[..., 0] * height - 0.5], -1)
        return xy, kp[..., 2]

    def decode(self, outputs: Outputs, flipped: Outputs | None) -> tuple[np.ndarray, np.ndarray]:
        xy, scores = self._keypoints(outputs)
        if flipped is None:
            return xy, scores
        fxy, fscores = self._keypoints(flipped)
        index = self.format.flip_index()
        fxy, fscores = fxy[:, index], fscores[:, index]
        fxy[..., 0] = self.input_hw[1] - 1 - fxy[..., 0]
        return (xy + fxy) / 2.0, (scores + fscores) / 2.0
