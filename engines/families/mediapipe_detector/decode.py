"""The person detector's post-processing as plain numpy functions: MediaPipe's SSD anchors for
pose detection (224x224 input; strides 8, 16, 32, 32, 32; fixed anchor size), box and keypoint
decoding, and MediaPipe's weighted non-maximum suppression.

A detection is the region MediaPipe's pose pipeline crops: keypoint 0 is the hip centre, keypoint 1
a point whose distance to it is the radius of a circle around the whole body, and the direction
from 0 to 1 is the body's "up". Keypoints 2 and 3 do the same for the upper body.
"""
from __future__ import annotations

import numpy as np

SIZE = 224
STRIDES = (8, 16, 32, 32, 32)   # MediaPipe's pose_detection anchor options (layers of one stride merge)
ANCHORS_PER_LAYER = 2           # one aspect ratio (1.0) + the interpolated scale
MIN_SUPPRESSION_IOU = 0.3       # MediaPipe's NMS threshold for pose detection
KEYPOINTS = 4


def anchors(size: int = SIZE) -> np.ndarray:
    """Anchor centres [N, 2] (x, y) in [0, 1], in the order of the network's outputs."""
    centres = []
    layer = 0
    while layer < len(STRIDES):
        stride, repeats = STRIDES[layer], 0
        while layer < len(STRIDES) and STRIDES[layer] == stride:
            repeats += ANCHORS_PER_LAYER
            layer += 1
        cells = -(-size // stride)
        ys, xs = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], 1)
        centres.append(np.repeat(grid, repeats, axis=0))
    return np.concatenate(centres).astype(np.float32)


def decode_detections(scores: np.ndarray, regressors: np.ndarray, anchor_xy: np.ndarray,
                      min_score: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's raw outputs ([N, 1], [N, 12]) -> boxes [M, 4] (x0, y0, x1, y1), keypoints [M, 4, 2]
    (x, y), scores [M], all in [0, 1] of the input, for anchors scoring at least `min_score`."""
    logits = np.clip(np.asarray(scores, dtype=np.float64).reshape(-1), -100.0, 100.0)
    probability = 1.0 / (1.0 + np.exp(-logits))
    keep = probability >= min_score
    raw = np.asarray(regressors, dtype=np.float64)[keep] / SIZE
    centre = anchor_xy[keep]
    cx, cy = raw[:, 0] + centre[:, 0], raw[:, 1] + centre[:, 1]
    w, h = raw[:, 2], raw[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    keypoints = raw[:, 4:4 + 2 * KEYPOINTS].reshape(-1, KEYPOINTS, 2) + centre[:, None, :]
    return boxes, keypoints, probability[keep]


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], others[:, 0])
    y0 = np.maximum(box[1], others[:, 1])
    x1 = np.minimum(box[2], others[:, 2])
    y1 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda b: np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)  # noqa: E731
    union = area(box) + area(others) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                 iou_threshold: float = MIN_SUPPRESSION_IOU) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's weighted NMS: take the best remaining detection, average the boxes and keypoints
    of every remaining one overlapping it by more than `iou_threshold` (weighted by score), keep the
    best one's score, drop the cluster; repeat."""
    order = np.argsort(-scores, kind="stable")
    out_boxes, out_points, out_scores = [], [], []
    while len(order):
        best = order[0]
        overlap = _iou(boxes[best], boxes[order]) > iou_threshold
        cluster = order[overlap]
        weights = scores[cluster][:, None]
        out_boxes.append((boxes[cluster] * weights).sum(0) / weights.sum())
        out_points.append((keypoints[cluster] * weights[:, :, None]).sum(0) / weights.sum())
        out_scores.append(scores[best])
        order = order[~overlap]
    if not out_scores:
        return np.zeros((0, 4)), np.zeros((0, KEYPOINTS, 2)), np.zeros(0)
    return np.array(out_boxes), np.array(out_points), np.array(out_scores)


def body_boxes(keypoints: np.ndarray) -> np.ndarray:
    """Square boxes [M, 4] (x, y, w, h) around the whole-body circle: centre keypoint 0, radius the
    distance to keypoint 1 (the region MediaPipe crops before its 1.25 scaling)."""
    radius = np.linalg.norm(keypoints[:, 1] - keypoints[:, 0], axis=1)
    return np.stack([keypoints[:, 0, 0] - radius, keypoints[:, 0, 1] - radius, 2 * radius, 2 * radius], 1)
