"""Pairwise similarities between persons: box IoU and keypoint OKS, one implementation each.

Used by the detector's box NMS (`engines/families/yolo11/decode.py`), the top-down crop matcher
(`engines/families/yolo11/crop_pose.py`), the OKS pose NMS (`stream/pose_nms.py`) and the tracker's
association (`plugins/trackers/oks_byte.py`). Plain numpy over stacked arrays, float64 throughout.

Visibility rule (one for every OKS user): a keypoint counts when its score is **at least** the
threshold (`score >= min_score`), in both poses. Why `>=`: it is what the default tracker always
used, so the default `posestream run` output stays byte-identical, and it is what the config keys
say (`tracker.keypoint_score`, `pose_nms.keypoint_score`: "keypoints below this are left out").
The OKS pose NMS used `>` before; it differs only for a score exactly equal to the threshold.
"""
from __future__ import annotations

import numpy as np


def visible(scores: np.ndarray, min_score: float) -> np.ndarray:
    """Which keypoints count in OKS: score >= `min_score` (see the module docstring)."""
    return np.asarray(scores) >= min_score


def iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU of every box in `boxes_a` [N, 4] with every box in `boxes_b` [M, 4] (x, y, w, h) -> [N, M].
    Boxes with no area have IoU 0 with everything."""
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
    `keypoints_b` [M, K, 3] -> [N, M]; `boxes_a` [N, 4] and `boxes_b` [M, 4] (x, y, w, h) are their
    boxes and `sigmas` [K] the format's OKS sigmas.

    COCO's formula made symmetric (neither side is ground truth): the scale is the mean of the two
    box areas, and a keypoint counts only when `visible` in both poses. Pairs without a common
    visible keypoint get 0. Pairs whose box centres lie farther apart than the sum of the two box
    diagonals are not evaluated and get 0: for poses inside their boxes every keypoint is then at
    least one diagonal off, where OKS is below 1e-6. That keeps the cost proportional to the pairs
    that can match, not to N * M.
    """
    a = np.asarray(keypoints_a, dtype=np.float64)
    b = np.asarray(keypoints_b, dtype=np.float64)
    box_a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    box_b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    sigmas = np.asarray(sigmas, dtype=np.float64)
    for name, points in (("keypoints_a", a), ("keypoints_b", b)):
        if points.size and (points.ndim != 3 or points.shape[1:] != (len(sigmas), 3)):
            raise ValueError(f"{name}: expected shape [?, {len(sigmas)}, 3] (one sigma per "
                             f"keypoint), got {list(points.shape)}")
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
    variances = (2 * sigmas) ** 2
    error = squared / (2 * variances * (scale[:, None] + np.finfo(np.float64).eps))
    both = visible(pa[:, :, 2], min_score) & visible(pb[:, :, 2], min_score)
    count = both.sum(-1)
    total = (np.exp(-error) * both).sum(-1)
    result[rows, cols] = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return result
