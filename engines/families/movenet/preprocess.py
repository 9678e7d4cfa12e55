"""MoveNet's inputs as plain numpy functions: a square crop around a person box (single-pose) and
the whole frame letterboxed to sides that are multiples of 32 (multi-pose).

`sample_square` is the documented, interpolation-free crop the parity fixture was made with
(nearest pixel by index arithmetic, black outside the image), so the fixture's inputs can be
rebuilt exactly on any machine; the plugins crop with OpenCV's bilinear warp instead.
"""
from __future__ import annotations

import numpy as np


def sample_square(image: np.ndarray, centre: tuple[float, float], side: float, size: int) -> np.ndarray:
    """A `size` x `size` crop showing `side` pixels around `centre` (x, y): pixel (i, j) of the crop
    is image pixel floor(top + (i + 0.5) * side / size) (rows; columns alike); zero outside."""
    step = side / size
    rows = np.floor(centre[1] - side / 2 + (np.arange(size) + 0.5) * step).astype(np.int64)
    cols = np.floor(centre[0] - side / 2 + (np.arange(size) + 0.5) * step).astype(np.int64)
    out = np.zeros((size, size, image.shape[2]), dtype=image.dtype)
    r_ok = (rows >= 0) & (rows < image.shape[0])
    c_ok = (cols >= 0) & (cols < image.shape[1])
    out[np.ix_(r_ok, c_ok)] = image[np.ix_(rows[r_ok], cols[c_ok])]
    return out


def multipose_canvas(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(H, W) of the multi-pose input for a frame: the long side `long_side`, the other scaled to
    keep the aspect and rounded up to a multiple of 32 (MoveNet's stride)."""
    scale = long_side / max(height, width)
    return (int(-(-round(height * scale) // 32) * 32), int(-(-round(width * scale) // 32) * 32))
