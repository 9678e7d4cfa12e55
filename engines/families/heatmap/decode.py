"""Turn SPPE outputs into keypoints: heatmaps (argmax + quarter offset, or DARK) and SimCC vectors.

Plain numpy/cv2 on batches, no model needed. Coordinates come back in the units of the output
(heatmap pixels, SimCC bins converted to input pixels); the caller maps them into the crop/frame.
"""
from __future__ import annotations

import cv2
import numpy as np

from posestream.stream.core.errors import InputError
from posestream.stream.core.settings import REFINEMENTS

_LOG_FLOOR = 1e-10


def _check_rank(name: str, array: np.ndarray, rank: int) -> None:
    if array.ndim != rank:
        raise InputError(f"{name}: expected a {rank}-d array, got shape {list(array.shape)}")


def heatmap_argmax(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer peak (x, y) [N,K,2] and peak value [N,K] of heatmaps [N,K,H,W]."""
    _check_rank("heatmaps", heatmaps, 4)
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
    logs = np.log(np.maximum(gaussian_modulation(heatmaps, kernel), _LOG_FLOOR))
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


def _shift_last_axis(array: np.ndarray, shift: int) -> np.ndarray:
    """out[..., i] = array[..., i - shift], repeating the edge value where nothing shifts in."""
    if shift == 0:
        return array.copy()
    out = np.empty_like(array)
    if shift > 0:
        out[..., shift:] = array[..., :-shift]
        out[..., :shift] = array[..., :1]
    else:
        out[..., :shift] = array[..., -shift:]
        out[..., shift:] = array[..., -1:]
    return out


def flip_shift(bins_per_pixel: float) -> float:
    """Shift, in bins, that re-aligns an output of a mirrored input with the original.

    A pixel x mirrors to W-1-x, but reversing an output of `b` bins per pixel mirrors bin u to
    W*b-1-u; the two differ by (1 - b) bins: 0.75 for stride-4 heatmaps (SimpleBaseline and AlphaPose
    round it to 1, which biases the flip-averaged peak by 1/8 heatmap pixel), -1 for SimCC at ratio 2.
    """
    return 1.0 - bins_per_pixel


def flip_back(outputs: np.ndarray, flip_index: np.ndarray, shift: float) -> np.ndarray:
    """Outputs [N,K,...,X] of horizontally mirrored crops, turned back into the original's frame:
    reverse the last (x) axis, swap left/right keypoints, shift by `flip_shift` bins (a fractional
    shift interpolates linearly between the two whole-bin shifts around it)."""
    restored = np.ascontiguousarray(outputs[:, flip_index, ..., ::-1])
    low = int(np.floor(shift))
    fraction = shift - low
    shifted = _shift_last_axis(restored, low)
    if fraction > 1e-9:
        shifted = (1 - fraction) * shifted + fraction * _shift_last_axis(restored, low + 1)
    return shifted


def _vector_refine(vectors: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Sub-bin peak from a parabola through the log of the peak and its two neighbours (exact for
    Gaussian-shaped vectors); peaks on the ends or non-positive values stay on their bin."""
    logs = np.log(np.maximum(vectors, _LOG_FLOOR))
    padded = np.pad(logs, ((0, 0), (0, 0), (1, 1)), mode="edge")
    pick = lambda d: np.take_along_axis(padded, (index + 1 + d)[..., None], axis=2)[..., 0]  # noqa: E731
    left, centre, right = pick(-1), pick(0), pick(1)
    curvature = left - 2 * centre + right
    inner = (index > 0) & (index < vectors.shape[2] - 1)
    ok = inner & (curvature < -1e-12) & (np.take_along_axis(vectors, index[..., None], 2)[..., 0] > 0)
    offset = np.where(ok, 0.5 * (left - right) / np.where(ok, curvature, 1.0), 0.0)
    return index + np.clip(offset, -1.0, 1.0)


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray, split_ratio: float,
                 refine: str = "none") -> tuple[np.ndarray, np.ndarray]:
    """Keypoints (x, y) [N,K,2] in input pixels and scores [N,K] from SimCC vectors [N,K,Wx], [N,K,Hy].

    Location = argmax bin / split ratio; score = the smaller of the two peak values (mmpose), floored
    at 0. `refine="dark"` adds a sub-bin log-parabola fit.
    """
    if refine not in REFINEMENTS:
        raise InputError(f"unknown refinement '{refine}' (valid: {', '.join(REFINEMENTS)})")
    _check_rank("simcc_x", simcc_x, 3)
    _check_rank("simcc_y", simcc_y, 3)
    if simcc_x.shape[:2] != simcc_y.shape[:2]:
        raise InputError(f"simcc_x {list(simcc_x.shape)} and simcc_y {list(simcc_y.shape)} disagree on [N, K]")
    simcc_x = np.asarray(simcc_x, dtype=np.float64)
    simcc_y = np.asarray(simcc_y, dtype=np.float64)
    ix, iy = simcc_x.argmax(axis=2), simcc_y.argmax(axis=2)
    scores = np.minimum(simcc_x.max(axis=2), simcc_y.max(axis=2))
    if refine == "dark":
        bins = np.stack([_vector_refine(simcc_x, ix), _vector_refine(simcc_y, iy)], axis=-1)
    else:
        bins = np.stack([ix, iy], axis=-1).astype(np.float64)
    return bins / split_ratio, np.maximum(scores, 0.0)
