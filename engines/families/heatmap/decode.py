"""Turn heatmaps into keypoints: argmax + quarter offset, or DARK.

Plain numpy/cv2 on batches, no model needed. Coordinates come back in heatmap pixels; the caller
maps them into the crop/frame.
"""
from __future__ import annotations

import cv2
import numpy as np

from posestream.engines.topdown_outputs import LOG_FLOOR, check_rank
from posestream.stream.core.errors import InputError
from posestream.stream.core.settings import REFINEMENTS

def heatmap_argmax(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer peak (x, y) [N,K,2] and peak value [N,K] of heatmaps [N,K,H,W]."""
    check_rank("heatmaps", heatmaps, 4)
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, h * w)
    index = flat.argmax(axis=2)
    scores = np.take_along_axis(flat, index[..., None], axis=2)[..., 0]
    coords = np.stack([index % w, index // w], axis=-1).astype(np.float64)
    return coords, scores.astype(np.float64)


def _neighbour(maps: np.ndarray, coords: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Values of edge-padded maps [N,K,H+2,W+2] at integer coords (x+dx, y+dy) [N,K]."""
    n, k = coords.shape[:2]
    x = coords[..., 0].astype(np.int64) + 1 + dx
    y = coords[..., 1].astype(np.int64) + 1 + dy
    return maps[np.arange(n)[:, None], np.arange(k)[None, :], y, x]


def quarter_offset(heatmaps: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Move each integer peak a quarter pixel towards its higher neighbour, per axis (SimpleBaseline);
    halves the expected quantisation error at no cost. Peaks on the border stay put on that axis."""
    padded = np.pad(heatmaps, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    gx = _neighbour(padded, coords, 1, 0) - _neighbour(padded, coords, -1, 0)
    gy = _neighbour(padded, coords, 0, 1) - _neighbour(padded, coords, 0, -1)
    return coords + 0.25 * np.stack([np.sign(gx), np.sign(gy)], axis=-1)


def gaussian_modulation(heatmaps: np.ndarray, kernel: int) -> np.ndarray:
    """DARK step 1: blur each map (zero outside) and rescale it to its original maximum, so a noisy or
    flat-topped peak becomes Gaussian-shaped and the Taylor step below fits it."""
    if kernel < 3 or kernel % 2 == 0:
        raise InputError(f"DARK blur kernel must be an odd size >= 3, got {kernel}")
    n, k, h, w = heatmaps.shape
    border = kernel // 2
    out = np.empty((n, k, h, w), dtype=np.float64)
    for i in range(n):
        for j in range(k):
            padded = np.zeros((h + 2 * border, w + 2 * border), dtype=np.float64)
            padded[border:-border, border:-border] = heatmaps[i, j]
            out[i, j] = cv2.GaussianBlur(padded, (kernel, kernel), 0)[border:-border, border:-border]
    original_max = heatmaps.reshape(n, k, -1).max(axis=2)
    blurred_max = out.reshape(n, k, -1).max(axis=2)
    ratio = np.divide(original_max, blurred_max, out=np.ones_like(original_max), where=blurred_max > 0)
    return out * ratio[..., None, None]


def dark_refine(heatmaps: np.ndarray, coords: np.ndarray, kernel: int = 11) -> np.ndarray:
    """DARK (Zhang et al., CVPR 2020): second-order Taylor expansion of the log-heatmap at the integer
    peak, after Gaussian modulation. Exact for Gaussian peaks; offsets are clipped to one pixel."""
    logs = np.log(np.maximum(gaussian_modulation(heatmaps, kernel), LOG_FLOOR))
    padded = np.pad(logs, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    centre = _neighbour(padded, coords, 0, 0)
    right, left = _neighbour(padded, coords, 1, 0), _neighbour(padded, coords, -1, 0)
    down, up = _neighbour(padded, coords, 0, 1), _neighbour(padded, coords, 0, -1)
    dx = 0.5 * (right - left)
    dy = 0.5 * (down - up)
    dxx = right - 2 * centre + left
    dyy = down - 2 * centre + up
    dxy = 0.25 * (_neighbour(padded, coords, 1, 1) - _neighbour(padded, coords, -1, 1)
                  - _neighbour(padded, coords, 1, -1) + _neighbour(padded, coords, -1, -1))
    det = dxx * dyy - dxy * dxy
    ok = (det > 1e-12) & (dxx < 0)  # a real maximum: negative-definite Hessian
    safe = np.where(ok, det, 1.0)
    off_x = np.where(ok, -(dyy * dx - dxy * dy) / safe, 0.0)
    off_y = np.where(ok, -(dxx * dy - dxy * dx) / safe, 0.0)
    offsets = np.clip(np.stack([off_x, off_y], axis=-1), -1.0, 1.0)
    return coords + offsets


def decode_heatmaps(heatmaps: np.ndarray, refine: str = "none",
                    dark_kernel: int = 11) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints (x, y) [N,K,2] in heatmap pixels and scores [N,K] (peak values, floored at 0)."""
    if refine not in REFINEMENTS:
        raise InputError(f"unknown refinement '{refine}' (valid: {', '.join(REFINEMENTS)})")
    heatmaps = np.asarray(heatmaps, dtype=np.float64)
    coords, scores = heatmap_argmax(heatmaps)
    if refine == "dark":
        coords = dark_refine(heatmaps, coords, dark_kernel)
    else:
        coords = quarter_offset(heatmaps, coords)
    return coords, np.maximum(scores, 0.0)
