"""Person crops for top-down SPPEs: box -> centre/scale -> affine warp, and the way back.

Conventions: coordinates are pixel indices (pixel i has its centre at i) in the frame and in the crop,
which is what `cv2.warpAffine` uses, so a keypoint mapped into the crop and back lands where it was.
A crop shows the region `centre +- scale / 2` of the frame, stretched to the model's input `(H, W)`.
"""
from __future__ import annotations

import cv2
import numpy as np

from posestream.stream.core.errors import InputError


def box_to_centre_scale(boxes: np.ndarray, aspect: float, expand: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    """Centres [N,2] and region sizes [N,2] (w, h) for `boxes` [N,4] as x, y, w, h.

    The box grows along one side to the model's aspect (width / height), so the person is not
    distorted, then by `expand` on both sides for context (SimpleBaseline/AlphaPose use 1.25).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if aspect <= 0 or expand <= 0:
        raise InputError(f"crop aspect and expand factor must be positive, got {aspect} and {expand}")
    centres = boxes[:, :2] + boxes[:, 2:] / 2.0
    w = np.maximum(boxes[:, 2], 1.0)
    h = np.maximum(boxes[:, 3], 1.0)
    wider = w > aspect * h
    h = np.where(wider, w / aspect, h)
    w = np.where(wider, w, h * aspect)
    return centres, np.stack([w, h], axis=1) * expand


def crop_matrices(centres: np.ndarray, scales: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Affine matrices [N,2,3] that map frame pixels to crop pixels (no rotation)."""
    out_h, out_w = out_hw
    sx = out_w / scales[:, 0]
    sy = out_h / scales[:, 1]
    matrices = np.zeros((len(centres), 2, 3), dtype=np.float64)
    matrices[:, 0, 0] = sx
    matrices[:, 0, 2] = out_w / 2.0 - centres[:, 0] * sx
    matrices[:, 1, 1] = sy
    matrices[:, 1, 2] = out_h / 2.0 - centres[:, 1] * sy
    return matrices


def warp_crops(frame: np.ndarray, boxes: np.ndarray, out_hw: tuple[int, int],
               expand: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    """Crops uint8 [N,H,W,3] of the persons in `boxes` (x, y, w, h) and their frame->crop matrices.

    Outside the frame the crop is black (zero), as in AlphaPose and mmpose.
    """
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise InputError(f"expected a frame of shape [H, W, 3], got {list(frame.shape)}")
    out_h, out_w = out_hw
    centres, scales = box_to_centre_scale(boxes, out_w / out_h, expand)
    matrices = crop_matrices(centres, scales, out_hw)
    crops = np.empty((len(matrices), out_h, out_w, 3), dtype=np.uint8)
    for i, matrix in enumerate(matrices):
        cv2.warpAffine(frame, matrix, (out_w, out_h), dst=crops[i], flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return crops, matrices


def crop_to_frame(points: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """Map crop-pixel points [N,K,2] back to frame pixels with the inverse of each crop's matrix."""
    points = np.asarray(points, dtype=np.float64)
    inverse = np.linalg.inv(matrices[:, :, :2])  # [N,2,2]
    return (points - matrices[:, None, :, 2]) @ inverse.transpose(0, 2, 1)


def frame_to_crop(points: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """Map frame-pixel points [N,K,2] into each crop (for tests and target building)."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrices[:, :, :2].transpose(0, 2, 1) + matrices[:, None, :, 2]


def rotated_crop_matrices(centres: np.ndarray, sides: np.ndarray, angles: np.ndarray,
                          out_size: int) -> np.ndarray:
    """Affine matrices [N,2,3] mapping frame pixels into square crops of `out_size` that show a
    `side`-wide square around each centre, turned by `-angle` (radians) so that a direction at
    `angle` from "up" in the frame points up in the crop (MediaPipe's ROI alignment)."""
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    scale = out_size / np.maximum(np.asarray(sides, dtype=np.float64).reshape(-1), 1.0)
    cos, sin = np.cos(angles), np.sin(angles)
    matrices = np.empty((len(centres), 2, 3), dtype=np.float64)
    matrices[:, 0, 0], matrices[:, 0, 1] = scale * cos, scale * sin
    matrices[:, 1, 0], matrices[:, 1, 1] = -scale * sin, scale * cos
    half = (out_size - 1) / 2.0
    matrices[:, :, 2] = half - np.einsum("nij,nj->ni", matrices[:, :, :2], centres)
    return matrices


def warp_with(frame: np.ndarray, matrices: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Crops uint8 [N,H,W,3] of `frame` under the given frame->crop matrices (black outside)."""
    out_h, out_w = out_hw
    crops = np.empty((len(matrices), out_h, out_w, 3), dtype=np.uint8)
    for i, matrix in enumerate(matrices):
        cv2.warpAffine(frame, matrix, (out_w, out_h), dst=crops[i], flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return crops
