"""MoveNet's networks: which TensorFlow.js graph each model is, and the part of it we rebuild.

The graphs start with a cast of the int32 image and end with MoveNet's decoding (argmax, gathers);
we rebuild what lies between the float image (`input_node`) and the heads (`heads`, in the order
the ONNX outputs are named) with `TfjsNet`, and decode in numpy (`decode.py`). Single-pose models
take a fixed square input; the multi-pose model takes any size that is a multiple of 32.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from posestream.engines.formats.tfjs_graph import TfjsGraph, TfjsNet
from posestream.stream.core.errors import ModelError

_P = "StatefulPartitionedCall/"


@dataclass(frozen=True)
class MoveNetModel:
    """One MoveNet graph model in the package and the nodes we rebuild from it."""

    member: str                 # model.json path inside the npm package (shards lie beside it)
    kind: str                   # "single" (SPPE, fixed square input) or "multi" (detector)
    size: int                   # input side (single) / default long side (multi)
    input_node: str             # the float image [1, H, W, 3], RGB 0..255
    heads: dict[str, str]       # ONNX output name -> graph node
    description: str


_SINGLE_HEADS = {"heatmaps": _P + "Sigmoid", "centers": _P + "truediv_2",
                 "regression": _P + "kpt_regress_0/conv2d_6/BiasAdd",
                 "offsets": _P + "kpt_offset_0/conv2d_7/BiasAdd"}
DISTANCE_OFFSET_NODE = _P + "add_5/y"  # single-pose: keypoint weight = 1 / (distance + this)

MODELS: dict[str, MoveNetModel] = {
    "movenet-thunder": MoveNetModel(
        "models/movenet-thunder.json", "single", 256, _P + "stack", _SINGLE_HEADS,
        "MoveNet SinglePose Thunder: 17 COCO keypoints of the person in a square 256x256 crop"),
    "movenet-lightning": MoveNetModel(
        "models/movenet-lightning.json", "single", 192, _P + "stack", _SINGLE_HEADS,
        "MoveNet SinglePose Lightning: 17 COCO keypoints of the person in a square 192x192 crop"),
    "movenet-multipose": MoveNetModel(
        "models/movenet-multipose.json", "multi", 256, _P + "Cast",
        {"heatmaps": _P + "Sigmoid_1", "centers": _P + "Sigmoid",
         "regression": _P + "kpt_regress_0/conv2d_8/BiasAdd", "offsets": _P + "kpt_offset_0/conv2d_9/BiasAdd",
         "box_offsets": _P + "box_offset_0/conv2d_6/BiasAdd", "box_scales": _P + "box_scale_0/conv2d_5/BiasAdd"},
        "MoveNet MultiPose Lightning: up to 6 persons with boxes and 17 COCO keypoints per image "
        "(input sides multiples of 32)"),
}


class MoveNetHeads(torch.nn.Module):
    """The rebuilt network: RGB float image [B, 3, H, W] in 0..255 -> the heads, NCHW."""

    def __init__(self, graph: TfjsGraph, spec: MoveNetModel) -> None:
        super().__init__()
        self.net = TfjsNet(graph, spec.input_node, list(spec.heads.values()))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.net(x)


def distance_offset(graph: TfjsGraph) -> float:
    """The single-pose decoder's constant, read from the graph (1.8 stored as float16)."""
    value = graph.const(DISTANCE_OFFSET_NODE)
    if value.size != 1:
        raise ModelError(f"'{DISTANCE_OFFSET_NODE}' is not a scalar")
    return float(value.reshape(()))
