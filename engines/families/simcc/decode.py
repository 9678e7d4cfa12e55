"""Turn SimCC vectors into keypoints (argmax bin / split ratio, optional sub-bin refinement).

Plain numpy on batches, no model needed; coordinates come back in input pixels.
"""
from __future__ import annotations

import numpy as np

from posestream.engines.topdown_outputs import LOG_FLOOR, check_rank
from posestream.stream.core.errors import InputError
from posestream.stream.core.settings import REFINEMENTS


def _vector_refine(vectors: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Sub-bin peak from a parabola through the log of the peak and its two neighbours (exact for
    Gaussian-shaped vectors); peaks on the ends or non-positive values stay on their bin."""
    logs = np.log(np.maximum(vectors, LOG_FLOOR))
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
    check_rank("simcc_x", simcc_x, 3)
    check_rank("simcc_y", simcc_y, 3)
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
