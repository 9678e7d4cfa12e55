"""Pairwise similarities between poses (OKS, box IoU) and their optimal one-to-one assignment.

Plain numpy functions over stacked arrays, so they are unit-tested without a tracker and cost
microseconds for tens of persons. The assignment itself is scipy's `linear_sum_assignment`.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

# Cost of a pair below the similarity gate: larger than any sum of feasible costs (each <= 1), so the
# solver first maximises the number of feasible pairs and only then their total similarity.
_INFEASIBLE = 1e6


def iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU of every box in `boxes_a` [N, 4] with every box in `boxes_b` [M, 4] (x, y, w, h) -> [N, M]."""
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    left = np.maximum(a[:, None, 0], b[None, :, 0])
    top = np.maximum(a[:, None, 1], b[None, :, 1])
    right = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2])
    bottom = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3])
    inter = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    area_a = np.clip(a[:, 2], 0, None) * np.clip(a[:, 3], 0, None)
    area_b = np.clip(b[:, 2], 0, None) * np.clip(b[:, 3], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def oks_matrix(keypoints_a: np.ndarray, keypoints_b: np.ndarray, areas_a: np.ndarray,
               areas_b: np.ndarray, sigmas: np.ndarray, min_score: float) -> np.ndarray:
    """Object keypoint similarity of every pose in `keypoints_a` [N, K, 3] with every pose in
    `keypoints_b` [M, K, 3] -> [N, M].

    COCO's formula, symmetric for tracking: the scale is the mean of the two box areas, and a
    keypoint counts only when both poses see it with score >= `min_score` (neither side is ground
    truth). Pairs without a common visible keypoint get 0.
    """
    a = np.asarray(keypoints_a, dtype=np.float64)
    b = np.asarray(keypoints_b, dtype=np.float64)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    scale = (np.asarray(areas_a, np.float64)[:, None] + np.asarray(areas_b, np.float64)[None, :]) / 2
    squared = ((a[:, None, :, :2] - b[None, :, :, :2]) ** 2).sum(-1)  # [N, M, K]
    variances = (2 * np.asarray(sigmas, dtype=np.float64)) ** 2
    error = squared / (2 * variances * (scale[:, :, None] + np.finfo(np.float64).eps))
    visible = (a[:, None, :, 2] >= min_score) & (b[None, :, :, 2] >= min_score)
    count = visible.sum(-1)
    total = np.where(visible, np.exp(-error), 0.0).sum(-1)
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


def assign(similarity: np.ndarray, min_similarity: float) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-similarity one-to-one matching of rows to columns, keeping only pairs whose
    similarity is >= `min_similarity`. Returns matched `(rows, cols)` index arrays."""
    similarity = np.asarray(similarity, dtype=np.float64)
    if similarity.size == 0:
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty
    feasible = similarity >= min_similarity
    cost = np.where(feasible, 1.0 - similarity, _INFEASIBLE)
    rows, cols = linear_sum_assignment(cost)
    keep = feasible[rows, cols]
    return rows[keep], cols[keep]
