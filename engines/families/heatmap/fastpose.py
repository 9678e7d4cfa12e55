"""AlphaPose's FastPose (ResNet-50 + DUC head) rebuilt in our own torch code.

The module tree mirrors AlphaPose's so that its released checkpoints (`fast_res50_256x192.pth`,
`halpe26_fast_res50_256x192.pth`, ...) load by their state-dict names, in their order:

- `preact`: SE-ResNet-50. Bottleneck blocks [3, 4, 6, 3], stride on the 3x3 `conv2`; only the first
  block of each stage (the one with `downsample`) has a squeeze-excitation layer (reduction 1), which
  scales the `bn3` output before the residual add.
- `suffle1` (AlphaPose's spelling): PixelShuffle(2), 2048 -> 512 channels.
- `duc1`, `duc2`: conv 3x3 (no bias) + BN + ReLU + PixelShuffle(2) each.
- `conv_out`: conv 3x3 with bias to one heatmap per joint, no activation.

Input NCHW [B, 3, 256, 192] (RGB / 255 minus AlphaPose's mean, see `engines.families.heatmap.fastpose_import`),
output heatmaps [B, K, 64, 48] (stride 4).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# Heatmap channels per keypoint format for the heads AlphaPose released.
JOINTS_BY_FORMAT = {"coco17": 17, "halpe26": 26, "halpe136": 136}
INPUT_SIZE = (256, 192)  # (H, W)
HEATMAP_STRIDE = 4
_STAGE_BLOCKS = (3, 4, 6, 3)  # ResNet-50
_EXPANSION = 4


class SqueezeExcite(nn.Module):
    """Channel gate: global mean -> Linear -> ReLU -> Linear -> Sigmoid (AlphaPose `SELayer`)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(channels, channels), nn.ReLU(inplace=True),
                                nn.Linear(channels, channels), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # GlobalAveragePool + Flatten + Gemm + Unsqueeze: no Shape ops, so the export stays
        # friendly to a dynamic batch axis in ONNX Runtime and TensorRT alike.
        gate = self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return x * gate[:, :, None, None]


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 residual block; SE only when the block also downsamples."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, project: bool = False) -> None:
        super().__init__()
        out = planes * _EXPANSION
        # Attribute order is the state-dict order: conv1, bn1, conv2, bn2, conv3, bn3, se, downsample.
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.se: nn.Module | None = SqueezeExcite(out) if project else None
        self.downsample: nn.Module | None = (
            nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
            if project else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.se is not None:
            out = self.se(out)
        identity = self.downsample(x) if self.downsample is not None else x
        return F.relu(out + identity)


class SEResNet50(nn.Module):
    """The `preact` backbone: stem (7x7/2 conv, BN, ReLU, 3x3/2 max-pool) and four stages."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        for index, (planes, blocks) in enumerate(zip((64, 128, 256, 512), _STAGE_BLOCKS)):
            stride = 1 if index == 0 else 2
            stage = [Bottleneck(inplanes, planes, stride, project=True)]
            inplanes = planes * _EXPANSION
            stage += [Bottleneck(inplanes, planes) for _ in range(blocks - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*stage))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(self, name)(x)
        return x


class DUC(nn.Module):
    """Dense upsampling convolution: conv 3x3 (no bias), BN, ReLU, PixelShuffle(2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(F.relu(self.bn(self.conv(x))))


class FastPose(nn.Module):
    """FastPose-ResNet-50 with a `num_joints`-channel heatmap head."""

    def __init__(self, num_joints: int) -> None:
        super().__init__()
        if num_joints < 1:
            raise ValueError(f"num_joints must be >= 1, got {num_joints}")
        self.num_joints = num_joints
        self.preact = SEResNet50()
        self.suffle1 = nn.PixelShuffle(2)
        self.duc1 = DUC(512, 1024)
        self.duc2 = DUC(256, 512)
        self.conv_out = nn.Conv2d(128, num_joints, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.suffle1(self.preact(x))
        return self.conv_out(self.duc2(self.duc1(out)))
