"""Image pre-processing for detector inputs, as plain numpy/cv2 functions (no model needed to test).

Letterboxing keeps the aspect ratio: the image is scaled to fit and centred on a canvas filled with
the pad value. With `rectangular` sizing the canvas follows the frame's aspect (e.g. 640x384 for
16:9 video) instead of a square, which the dynamic-shape model accepts and which costs less.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from posestream.engines.model_card import Normalisation


# A person is in the picture when at least this share of its box lies in the frame: a model can see
# one in the letterbox padding (on a 1-pixel-wide frame, the frame's edge against the pad made a
# 0.11-score "person" 218 px wide of which 1 px lay in the frame); real people at a frame's edge keep
# 0.96 or more of their box inside (every detection on the shared images and videos, docs/eval.md).
MIN_IN_PICTURE = 0.5


@dataclass(frozen=True)
class Letterbox:
    """How a frame was placed on the canvas: canvas = frame * scale + (pad_x, pad_y)."""

    scale: float
    pad_x: float
    pad_y: float

    def to_frame(self, xy: np.ndarray) -> np.ndarray:
        """Map canvas coordinates (..., 2+) back to frame pixels (x, y in the first two columns)."""
        out = np.array(xy, dtype=np.float32, copy=True)
        out[..., 0] = (out[..., 0] - self.pad_x) / self.scale
        out[..., 1] = (out[..., 1] - self.pad_y) / self.scale
        return out

    def boxes_to_frame(self, corners: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Canvas boxes x1, y1, x2, y2 [N, 4] -> frame boxes clipped to the frame as x, y, w, h
        (float32), and which of them have at least `MIN_IN_PICTURE` of their area in the frame (the
        others were seen in the padding: drop them)."""
        frame = self.to_frame(np.asarray(corners, np.float32).reshape(-1, 2, 2)).reshape(-1, 4)
        area = (frame[:, 2] - frame[:, 0]) * (frame[:, 3] - frame[:, 1])
        frame[:, [0, 2]] = frame[:, [0, 2]].clip(0, width)
        frame[:, [1, 3]] = frame[:, [1, 3]].clip(0, height)
        inside = (frame[:, 2] - frame[:, 0]) * (frame[:, 3] - frame[:, 1])
        xywh = np.concatenate([frame[:, :2], frame[:, 2:] - frame[:, :2]], axis=1)
        return xywh.astype(np.float32), inside >= MIN_IN_PICTURE * area


def canvas_size(height: int, width: int, long_side: int, stride: int = 32,
                rectangular: bool = True) -> tuple[int, int]:
    """(H, W) of the network input for a frame: square `long_side`, or the frame's aspect rounded
    up to a multiple of `stride`."""
    if not rectangular:
        return long_side, long_side
    scale = long_side / max(height, width)
    return (int(math.ceil(height * scale / stride) * stride),
            int(math.ceil(width * scale / stride) * stride))


def letterbox(image: np.ndarray, out_hw: tuple[int, int], pad: int = 114) -> tuple[np.ndarray, Letterbox]:
    """Scale `image` (H, W, 3) to fit `out_hw` and centre it on a `pad`-filled canvas."""
    h, w = image.shape[:2]
    out_h, out_w = out_hw
    scale = min(out_h / h, out_w / w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    resized = image if (new_w, new_h) == (w, h) else cv2.resize(
        image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    pad_x, pad_y = (out_w - new_w) // 2, (out_h - new_h) // 2
    canvas = np.full((out_h, out_w, 3), pad, dtype=np.uint8)
    canvas[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = resized
    return canvas, Letterbox(scale, float(pad_x), float(pad_y))


# What `to_input` computes, for an engine that folds it into the model (`Engine.accept_images`).
TO_INPUT = Normalisation(rgb=True, scale=1 / 255, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def normalise(images_bgr: np.ndarray, normalisation: Normalisation, dtype: np.dtype = np.float32) -> np.ndarray:
    """BGR uint8 images [N,H,W,3] -> the model's contiguous NCHW input, (pixel * scale - mean) / std
    in the card's colour order: the numpy twin of what `Engine.accept_images` puts inside a model,
    for every family (one place, so the two paths cannot drift apart)."""
    images = images_bgr[..., ::-1] if normalisation.rgb else images_bgr
    x = np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) * np.float32(normalisation.scale)
    if any(normalisation.mean):
        x -= np.asarray(normalisation.mean, dtype=np.float32).reshape(1, -1, 1, 1)
    if any(v != 1.0 for v in normalisation.std):
        x /= np.asarray(normalisation.std, dtype=np.float32).reshape(1, -1, 1, 1)
    return x.astype(dtype, copy=False)


def to_input(canvases_bgr: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """BGR uint8 canvases -> float32 NCHW RGB in [0, 1], contiguous (`TO_INPUT`)."""
    batch = np.stack(canvases_bgr) if isinstance(canvases_bgr, list) else canvases_bgr
    return normalise(batch[None] if batch.ndim == 3 else batch, TO_INPUT)
