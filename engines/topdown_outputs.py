"""What the top-down families' decoders share: input rank checks and the flip test's way back.

Plain numpy on batches, no model needed (`families/heatmap/decode.py`, `families/simcc/decode.py`).
"""
from __future__ import annotations

import numpy as np

from posestream.stream.core.errors import InputError

LOG_FLOOR = 1e-10  # log() of a non-positive output value is taken at this floor


def check_rank(name: str, array: np.ndarray, rank: int) -> None:
    if array.ndim != rank:
        raise InputError(f"{name}: expected a {rank}-d array, got shape {list(array.shape)}")


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
