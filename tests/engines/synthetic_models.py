"""Tiny real ONNX pose models with a known answer, for testing the top-down plumbing end to end.

The "persons" are coloured Gaussian dots on a black frame. Keypoint k looks at colour channel
`colour_of(k)` (RGB order; left/right partners share a colour so flip test is meaningful):
- the heatmap model is one fixed strided convolution whose kernel is a Gaussian centred on input
  pixel 4u, so its heatmap peaks at (dot position in the crop) / 4, the convention real heatmap
  models are trained with;
- the SimCC model takes each channel's row/column maxima and projects them onto bins b = x * ratio
  with Gaussian weights (two fixed linear heads), as RTMPose's vectors do.
What they prove: crops, colour order, normalisation, batching, decoding and the way back to frame
pixels agree to sub-pixel precision with a real ONNX Runtime session. Not what a trained network
does with real people (see the FastPose test for a real architecture).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from posestream.engines.model_card import ModelCard, sha256_file

INPUT_HW = (256, 192)


def colour_of(k: int) -> int:
    return ((k + 1) // 2) % 3


def _gaussian(offsets: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-offsets ** 2 / (2 * sigma ** 2))


def _select(num_keypoints: int) -> torch.Tensor:
    select = torch.zeros(num_keypoints, 3)
    for k in range(num_keypoints):
        select[k, colour_of(k)] = 1.0
    return select


class DotHeatmaps(nn.Module):
    def __init__(self, num_keypoints: int, stride: int = 4, sigma: float = 6.0, half: int = 15) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, num_keypoints, 2 * half + 1, stride=stride, padding=half, bias=False)
        g = _gaussian(np.arange(-half, half + 1, dtype=np.float64), sigma)
        kernel = torch.tensor(np.outer(g, g) / np.outer(g, g).sum() * 60, dtype=torch.float32)
        with torch.no_grad():
            self.conv.weight.copy_(_select(num_keypoints)[:, :, None, None] * kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class DotSimcc(nn.Module):
    def __init__(self, num_keypoints: int, ratio: float = 2.0, sigma: float = 3.0) -> None:
        super().__init__()
        h, w = INPUT_HW
        def head(length: int) -> torch.Tensor:
            bins = np.arange(int(length * ratio)) / ratio
            return torch.tensor(_gaussian(np.arange(length)[:, None] - bins[None, :], sigma), dtype=torch.float32)
        self.register_buffer("head_x", head(w))  # [W, W*ratio]
        self.register_buffer("head_y", head(h))
        self.register_buffer("select", _select(num_keypoints))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        profile_x = torch.amax(x, dim=2)  # [B,3,W]
        profile_y = torch.amax(x, dim=3)  # [B,3,H]
        simcc_x = torch.matmul(self.select, torch.matmul(profile_x, self.head_x))
        simcc_y = torch.matmul(self.select, torch.matmul(profile_y, self.head_y))
        return simcc_x, simcc_y


def export(module: nn.Module, path: Path, outputs: list[str], batch: int | None = None) -> Path:
    dummy = torch.zeros(batch or 1, 3, *INPUT_HW)
    dynamic = None if batch else {name: {0: "batch"} for name in ["input", *outputs]}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (dummy,), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=outputs, dynamic_axes=dynamic)
    return path


def install(home: Path, name: str, task: str, onnx_file: Path, output: dict, fmt: str = "coco17",
            input_spec: dict | None = None, batch: int | None = None) -> Path:
    """Put `onnx_file` into the model cache under `name` with a card, as `models import` would."""
    directory = home / "models" / name
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / onnx_file.name
    target.write_bytes(onnx_file.read_bytes())
    ModelCard(name=name, task=task, keypoint_format=fmt,
              files={"main": {"file": target.name, "sha256": sha256_file(target),
                              "input_shape": [batch, 3, *INPUT_HW]}},
              input=input_spec or {"size": list(INPUT_HW), "color": "RGB", "scale": 1 / 255,
                                   "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
              output=output, licence="test model (no weights learned)",
              source={"kind": "synthetic", "by": "tests/engines/synthetic_models.py"}).save(directory)
    return directory


def draw_person(frame: np.ndarray, dots_rgb: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """Draw three Gaussian dots (R, G, B at sub-pixel positions dots_rgb [3,2]) into a BGR frame;
    returns where keypoints [17,2] must be found."""
    ys, xs = np.mgrid[0:frame.shape[0], 0:frame.shape[1]]
    for rgb_channel, (x, y) in enumerate(dots_rgb):
        blob = 255 * _gaussian(np.hypot(xs - x, ys - y), sigma)
        bgr = 2 - rgb_channel
        frame[..., bgr] = np.maximum(frame[..., bgr], blob.round().astype(np.uint8))
    return np.array([dots_rgb[colour_of(k)] for k in range(17)])
