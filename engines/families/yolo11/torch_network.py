"""YOLO11-pose for the torch backend: the network rebuilt from the checkpoint, optionally in FP16
with FP32 decoding (`engines.backends.torch_engine` asks for it through `engines.family`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from posestream.engines.families.yolo11.prepare import build_network
from posestream.engines.family import TorchNetwork
from posestream.engines.model_card import ModelCard


def _to_float32(_module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
    return output.float()


def half_with_fp32_decode(network: torch.nn.Module) -> torch.nn.Module:
    """FP16 everywhere except the pose head's decoding: the last conv of each branch hands FP32 on,
    DFL runs in FP32 and the anchor grid is made in FP32, so boxes and keypoints keep sub-pixel
    precision at 640 px inputs and no operation mixes FP16 and FP32 operands (an exported ONNX graph
    does not promote types as torch does: TensorRT 11's strong typing and ONNX Runtime reject it)."""
    network.half()
    head = network.model[-1]
    for branch in (*head.cv2, *head.cv3, *head.cv4):
        branch.register_forward_hook(_to_float32)
    head.dfl.float()
    anchors = head._anchors  # bound method; it reads only the feature maps' shapes, dtype and device
    head._anchors = lambda feats: anchors([f.float() for f in feats])
    return network


def torch_network(card: ModelCard, checkpoint: Path, half: bool) -> TorchNetwork:
    """The card's network from `checkpoint`: input `images` [B, 3, H, W] RGB 0..1, output `output0`
    [B, 5 + 3K, N], as the prepared ONNX files have them."""
    network = build_network(checkpoint)
    if half:
        network = half_with_fp32_decode(network)
    keypoints = int(card.output.get("num_keypoints", 17))
    return TorchNetwork(network, "images", "output0", (None, 5 + 3 * keypoints, None),
                        {0: "batch", 2: "anchors"})
