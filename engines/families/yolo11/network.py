"""YOLO11-pose network, written from the architecture description (ultralytics is not imported).

The layer list comes from the YAML stored in the checkpoint (`model.yaml`) and the module
definitions below reproduce the state-dict names of the released weights, so loading is strict:
every tensor is used and none is missing. `forward` returns the decoded `[B, 56, N]` tensor
(cx, cy, w, h, person score, 17 x (x, y, conf)) in input pixels, as the reference export does.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from posestream.stream.core.errors import ModelError

BN_EPS = 1e-3  # the released weights were trained with this BatchNorm epsilon


class Conv(nn.Module):
    """Conv2d (no bias) + BatchNorm + SiLU."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, g: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=BN_EPS)
        self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


def dw_conv(c1: int, c2: int, k: int) -> Conv:
    return Conv(c1, c2, k, g=math.gcd(c1, c2))


class Bottleneck(nn.Module):
    def __init__(self, c1: int, c2: int, shortcut: bool = True, k: tuple[int, int] = (3, 3),
                 e: float = 0.5) -> None:
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden, k[0])
        self.cv2 = Conv(hidden, c2, k[1])
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3k(nn.Module):
    """CSP block with two 1x1 branches and a chain of 3x3 bottlenecks."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, e: float = 0.5) -> None:
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden)
        self.cv2 = Conv(c1, hidden)
        self.cv3 = Conv(2 * hidden, c2)
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut, (3, 3), 1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class C3k2(nn.Module):
    """Split-transform-concat block whose inner blocks are bottlenecks or (c3k) C3k blocks."""

    def __init__(self, c1: int, c2: int, n: int = 1, c3k: bool = False, e: float = 0.5,
                 shortcut: bool = True) -> None:
        super().__init__()
        self.c = int(c2 * e)
        self.cv1 = Conv(c1, 2 * self.c)
        self.cv2 = Conv((2 + n) * self.c, c2)
        self.m = nn.ModuleList(
            C3k(self.c, self.c, 2, shortcut) if c3k else Bottleneck(self.c, self.c, shortcut)
            for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        for block in self.m:
            y.append(block(y[-1]))
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling by three chained max-pools."""

    def __init__(self, c1: int, c2: int, k: int = 5) -> None:
        super().__init__()
        hidden = c1 // 2
        self.cv1 = Conv(c1, hidden)
        self.cv2 = Conv(hidden * 4, c2)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class Attention(nn.Module):
    """Multi-head self-attention over all positions, with a depth-wise positional conv on v."""

    def __init__(self, dim: int, num_heads: int, attn_ratio: float = 0.5) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.key_dim = int(self.head_dim * attn_ratio)
        self.scale = self.key_dim ** -0.5
        self.qkv = Conv(dim, dim + 2 * self.key_dim * num_heads, act=False)
        self.proj = Conv(dim, dim, act=False)
        self.pe = Conv(dim, dim, 3, g=dim, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(x).view(b, self.num_heads, 2 * self.key_dim + self.head_dim, h * w)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.head_dim], dim=2)
        attn = ((q.transpose(-2, -1) @ k) * self.scale).softmax(dim=-1)
        out = (v @ attn.transpose(-2, -1)).view(b, c, h, w) + self.pe(v.reshape(b, c, h, w))
        return self.proj(out)


class PSABlock(nn.Module):
    def __init__(self, c: int, num_heads: int) -> None:
        super().__init__()
        self.attn = Attention(c, num_heads)
        self.ffn = nn.Sequential(Conv(c, c * 2), Conv(c * 2, c, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.ffn(x)


class C2PSA(nn.Module):
    def __init__(self, c1: int, c2: int, n: int = 1, e: float = 0.5) -> None:
        super().__init__()
        if c1 != c2:
            raise ModelError(f"C2PSA needs equal in/out channels, got {c1} and {c2}")
        self.c = int(c1 * e)
        self.cv1 = Conv(c1, 2 * self.c)
        self.cv2 = Conv(2 * self.c, c1)
        self.m = nn.Sequential(*(PSABlock(self.c, max(self.c // 64, 1)) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.cv1(x).split((self.c, self.c), dim=1)
        return self.cv2(torch.cat((a, self.m(b)), 1))


class Concat(nn.Module):
    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, 1)


class DFL(nn.Module):
    """Distribution focal loss integral: expected value of a 16-bin distribution per box side."""

    def __init__(self, bins: int = 16) -> None:
        super().__init__()
        self.bins = bins
        self.conv = nn.Conv2d(bins, 1, 1, bias=False).requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.bins, a).transpose(2, 1).softmax(1)).view(b, 4, a)


class PoseHead(nn.Module):
    """Box (DFL), class and keypoint branches per level, decoded to input pixels."""

    def __init__(self, nc: int, kpt_shape: tuple[int, int], ch: list[int],
                 strides: tuple[float, ...] = (8.0, 16.0, 32.0)) -> None:
        super().__init__()
        self.nc, self.kpt_shape, self.strides = nc, tuple(kpt_shape), strides
        self.reg_max = 16
        self.nk = kpt_shape[0] * kpt_shape[1]
        c2 = max(16, ch[0] // 4, self.reg_max * 4)
        c3 = max(ch[0], min(nc, 100))
        c4 = max(ch[0] // 4, self.nk)
        self.cv2 = nn.ModuleList(
            nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * self.reg_max, 1)) for x in ch)
        self.cv3 = nn.ModuleList(
            nn.Sequential(nn.Sequential(dw_conv(x, x, 3), Conv(x, c3, 1)),
                          nn.Sequential(dw_conv(c3, c3, 3), Conv(c3, c3, 1)),
                          nn.Conv2d(c3, nc, 1)) for x in ch)
        self.cv4 = nn.ModuleList(
            nn.Sequential(Conv(x, c4, 3), Conv(c4, c4, 3), nn.Conv2d(c4, self.nk, 1)) for x in ch)
        self.dfl = DFL(self.reg_max)

    def _anchors(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        points, strides = [], []
        for feat, stride in zip(feats, self.strides):
            h, w = feat.shape[2], feat.shape[3]
            sx = torch.arange(w, dtype=feat.dtype, device=feat.device) + 0.5
            sy = torch.arange(h, dtype=feat.dtype, device=feat.device) + 0.5
            yy, xx = torch.meshgrid(sy, sx, indexing="ij")
            points.append(torch.stack((xx, yy), -1).view(-1, 2))
            strides.append(torch.full((h * w, 1), stride, dtype=feat.dtype, device=feat.device))
        return torch.cat(points).transpose(0, 1), torch.cat(strides).transpose(0, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        b = feats[0].shape[0]
        anchors, strides = self._anchors(feats)
        box = torch.cat([self.cv2[i](f).view(b, 4 * self.reg_max, -1) for i, f in enumerate(feats)], 2)
        cls = torch.cat([self.cv3[i](f).view(b, self.nc, -1) for i, f in enumerate(feats)], 2)
        kpt = torch.cat([self.cv4[i](f).view(b, self.nk, -1) for i, f in enumerate(feats)], 2)
        lt, rb = self.dfl(box).chunk(2, 1)
        x1y1, x2y2 = anchors.unsqueeze(0) - lt, anchors.unsqueeze(0) + rb
        dbox = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * strides
        k = self.kpt_shape[1]
        kpt = kpt.view(b, self.kpt_shape[0], k, -1)
        kx = (kpt[:, :, 0] * 2.0 + (anchors[0] - 0.5)) * strides
        ky = (kpt[:, :, 1] * 2.0 + (anchors[1] - 0.5)) * strides
        parts = [kx, ky] + ([kpt[:, :, 2].sigmoid()] if k == 3 else [])
        kpt = torch.stack(parts, 2).view(b, self.nk, -1)
        return torch.cat((dbox, cls.sigmoid(), kpt), 1)


def _divisible(x: float, divisor: int = 8) -> int:
    return int(math.ceil(x / divisor) * divisor)


class YoloPose(nn.Module):
    """The whole network, built from a YOLO11 layer list (`yaml`) at one scale."""

    def __init__(self, yaml: dict[str, Any], nc: int = 1) -> None:
        super().__init__()
        scale = yaml.get("scale", "n")
        try:
            depth, width, max_channels = yaml["scales"][scale]
        except KeyError:
            raise ModelError(f"model YAML has no scale '{scale}'") from None
        kpt_shape = tuple(yaml.get("kpt_shape", (17, 3)))
        channels = [yaml.get("ch", 3)]
        layers, self.sources = [], []
        for index, (source, repeats, kind, args) in enumerate(yaml["backbone"] + yaml["head"]):
            repeats = max(round(repeats * depth), 1) if repeats > 1 else repeats
            inputs = [channels[s] if s == -1 else channels[s + 1] for s in
                      (source if isinstance(source, list) else [source])]
            if kind in ("Conv", "C3k2", "SPPF", "C2PSA"):
                c2 = _divisible(min(args[0], max_channels) * width)
                if kind == "Conv":
                    layer: nn.Module = Conv(inputs[0], c2, *args[1:])
                elif kind == "C3k2":
                    c3k = bool(args[1]) if len(args) > 1 else False
                    c3k = c3k or scale in "mlx"
                    e = args[2] if len(args) > 2 else 0.5
                    layer = C3k2(inputs[0], c2, repeats, c3k, e)
                elif kind == "SPPF":
                    layer = SPPF(inputs[0], c2, *args[1:])
                else:
                    layer = C2PSA(inputs[0], c2, repeats)
            elif kind == "nn.Upsample":
                layer, c2 = nn.Upsample(scale_factor=args[1], mode=args[2]), inputs[0]
            elif kind == "Concat":
                layer, c2 = Concat(), sum(inputs)
            elif kind == "Pose":
                layer, c2 = PoseHead(nc, kpt_shape, inputs), 0
            else:
                raise ModelError(f"layer {index}: module '{kind}' is not part of YOLO11-pose")
            self.sources.append(source)
            layers.append(layer)
            channels.append(c2)
        self.model = nn.ModuleList(layers)
        self._keep = {s for src in self.sources for s in (src if isinstance(src, list) else [src]) if s != -1}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs: list[torch.Tensor | None] = []
        for layer, source in zip(self.model, self.sources):
            if isinstance(source, list):
                x = layer([x if s == -1 else outputs[s] for s in source])
            elif source != -1:
                x = layer(outputs[source])
            else:
                x = layer(x)
            outputs.append(x if len(outputs) in self._keep else None)
        return x
