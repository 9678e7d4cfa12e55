"""`heatmap` pose plugin: SimpleBaseline / FastPose / HRNet-style models with K x H x W heatmaps.

Card: task `pose-heatmap`; `output.stride` optional (taken from the shapes), `output.dark_kernel`
optional (DARK's modulation blur, 11 suits sigma-2 heatmaps at 64x48). Heatmap pixel u maps to
input pixel u * stride, the convention these models are trained with (target centre = joint / stride).
"""
from __future__ import annotations

import numpy as np

from posestream.engines.model_card import ModelCard
from posestream.engines.families.heatmap.decode import decode_heatmaps
from posestream.engines.topdown_outputs import flip_back, flip_shift
from posestream.engines.topdown import Outputs, TopDownEstimator
from posestream.stream.core.errors import ModelError


class HeatmapPose(TopDownEstimator):
    tasks = ("pose-heatmap",)

    def setup(self, card: ModelCard) -> None:
        self.output_name = card.output.get("name") or self.engine.outputs[0].name
        if self.output_name not in {o.name for o in self.engine.outputs}:
            raise ModelError(f"model '{card.name}': card names output '{self.output_name}', the model "
                             f"has {', '.join(o.name for o in self.engine.outputs)}")
        self.dark_kernel = int(card.output.get("dark_kernel", 11))
        self.flip_index = self.format.flip_index()

    def decode(self, outputs: Outputs, flipped: Outputs | None) -> tuple[np.ndarray, np.ndarray]:
        heatmaps = np.asarray(outputs[self.output_name], dtype=np.float32)
        height, width = heatmaps.shape[2:]
        stride = np.array([self.input_hw[1] / width, self.input_hw[0] / height])
        if flipped is not None:
            restored = flip_back(np.asarray(flipped[self.output_name], dtype=np.float32),
                                 self.flip_index, flip_shift(1.0 / stride[0]))
            heatmaps = (heatmaps + restored) / 2
        coords, scores = decode_heatmaps(heatmaps, self.refine, self.dark_kernel)
        return coords * stride, scores
