"""Pairwise similarities between poses (OKS, box IoU) and their optimal one-to-one assignment.

Plain numpy functions over stacked arrays, so they are unit-tested without a tracker and cost
microseconds for tens of persons. The assignment itself is scipy's `linear_sum_assignment`.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

def iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU of every box in `boxes_a` [N, 4] with every box in `boxes_b` [M, 4] (x, y, w, h) -> [N, M]."""
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    left = np.maximum(a[:, None, 0], b[None, :, 0])
    top = np.maximum(a[:, None, 1], b[None, :, 1])
    right = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2])
    bottom = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3])
    inter = np.maximum(right - left, 0.0) * np.maximum(bottom - top, 0.0)
    area_a = np.maximum(a[:, 2], 0.0) * np.maximum(a[:, 3], 0.0)
    area_b = np.maximum(b[:, 2], 0.0) * np.maximum(b[:, 3], 0.0)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def oks_matrix(keypoints_a: np.ndarray, keypoints_b: np.ndarray, boxes_a: np.ndarray,
               boxes_b: np.ndarray, sigmas: np.ndarray, min_score: float) -> np.ndarray:
    """Object keypoint similarity of every pose in `keypoints_a` [N, K, 3] with every pose in
    `keypoints_b` [M, K, 3] -> [N, M]; `boxes_a` [N, 4] and `boxes_b` [M, 4] are their boxes.

    COCO's formula, symmetric for tracking: the scale is the mean of the two box areas, and a
    keypoint counts only when both poses see it with score >= `min_score` (neither side is ground
    truth). Pairs without a common visible keypoint get 0. Pairs whose box centres lie farther apart
    than the sum of the two box diagonals are not evaluated and get 0: for poses inside their boxes
    every keypoint is then at least one diagonal off, where OKS is below 1e-6. That keeps the cost
    proportional to the pairs that can match, not to N * M.
    """
    a = np.asarray(keypoints_a, dtype=np.float64)
    b = np.asarray(keypoints_b, dtype=np.float64)
    box_a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    box_b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    result = np.zeros((len(a), len(b)))
    if len(a) == 0 or len(b) == 0:
        return result
    centre_a = box_a[:, :2] + box_a[:, 2:] / 2
    centre_b = box_b[:, :2] + box_b[:, 2:] / 2
    squared_distance = ((centre_a[:, None, :] - centre_b[None, :, :]) ** 2).sum(-1)
    reach = np.hypot(box_a[:, 2], box_a[:, 3])[:, None] + np.hypot(box_b[:, 2], box_b[:, 3])[None, :]
    rows, cols = np.nonzero(squared_distance <= reach ** 2)
    if len(rows) == 0:
        return result
    pa, pb = a[rows], b[cols]  # [P, K, 3] candidate pairs only
    scale = (box_a[rows, 2] * box_a[rows, 3] + box_b[cols, 2] * box_b[cols, 3]) / 2
    squared = ((pa[:, :, :2] - pb[:, :, :2]) ** 2).sum(-1)
    variances = (2 * np.asarray(sigmas, dtype=np.float64)) ** 2
    error = squared / (2 * variances * (scale[:, None] + np.finfo(np.float64).eps))
    visible = (pa[:, :, 2] >= min_score) & (pb[:, :, 2] >= min_score)
    count = visible.sum(-1)
    total = (np.exp(-error) * visible).sum(-1)
    result[rows, cols] = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return result


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
