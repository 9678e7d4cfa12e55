"""Optimal one-to-one assignment of poses to tracks from a similarity matrix.

The similarities themselves (OKS, box IoU) live in `posestream.stream.core.similarity`, shared with
the pose NMS and the detector. A plain numpy function, unit-tested without a tracker; the
assignment itself is scipy's `linear_sum_assignment`.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def assign(similarity: np.ndarray, min_similarity: float) -> tuple[np.ndarray, np.ndarray]:
    """Optimal one-to-one matching of rows to columns; only pairs with similarity >=
    `min_similarity` can match. Returns matched `(rows, cols)` index arrays.

    Each pair is worth its margin over the gate (`similarity - min_similarity`) and the total is
    maximised: leaving a row and a column unmatched is as good as a pair exactly at the gate. That
    is the "extended cost" of lapjv-based trackers; unlike maximising the number of pairs first, it
    never trades one sure match for two doubtful ones.
    """
    similarity = np.asarray(similarity, dtype=np.float64)
    if similarity.size == 0:
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty
    feasible = similarity >= min_similarity
    margin = np.where(feasible, similarity - min_similarity, 0.0)
    rows, cols = linear_sum_assignment(margin, maximize=True)
    keep = feasible[rows, cols]
    return rows[keep], cols[keep]
