"""`simcc` pose plugin: RTMPose-style models with per-keypoint x and y classification vectors.

Card: task `pose-simcc`, `output.split_ratio` (bins per input pixel; 2.0 for RTMPose, from its model
card), optional `output.x_name` / `output.y_name` (default `simcc_x` / `simcc_y`, else the outputs
in the model's order: x first).
"""
from __future__ import annotations

import numpy as np

from posestream.engines.model_card import ModelCard
from posestream.engines.families.simcc.decode import decode_simcc
from posestream.engines.topdown_outputs import flip_back, flip_shift
from posestream.engines.topdown import Outputs, TopDownEstimator
from posestream.stream.core.errors import ModelError


class SimccPose(TopDownEstimator):
    tasks = ("pose-simcc",)

    def setup(self, card: ModelCard) -> None:
        ratio = card.output.get("split_ratio")
        if not isinstance(ratio, (int, float)) or ratio <= 0:
            raise ModelError(f"model '{card.name}': a SimCC card needs output.split_ratio > 0 "
                             f"(bins per input pixel), got {ratio!r}")
        self.split_ratio = float(ratio)
        names = [o.name for o in self.engine.outputs]
        wanted = [card.output.get("x_name", "simcc_x"), card.output.get("y_name", "simcc_y")]
        if all(name in names for name in wanted):
            self.x_name, self.y_name = wanted
        elif "x_name" in card.output or "y_name" in card.output:
            raise ModelError(f"model '{card.name}': card names outputs {wanted}, the model has {names}")
        else:
            self.x_name, self.y_name = names
        self.flip_index = self.format.flip_index()

    def decode(self, outputs: Outputs, flipped: Outputs | None) -> tuple[np.ndarray, np.ndarray]:
        simcc_x = np.asarray(outputs[self.x_name], dtype=np.float32)
        simcc_y = np.asarray(outputs[self.y_name], dtype=np.float32)
        if flipped is not None:
            restored_x = flip_back(np.asarray(flipped[self.x_name], dtype=np.float32), self.flip_index,
                                   flip_shift(self.split_ratio))
            restored_y = np.asarray(flipped[self.y_name], dtype=np.float32)[:, self.flip_index]
            simcc_x = (simcc_x + restored_x) / 2
            simcc_y = (simcc_y + restored_y) / 2
        return decode_simcc(simcc_x, simcc_y, self.split_ratio, self.refine)
