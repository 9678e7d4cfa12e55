"""Decoding of YOLO-pose raw output `[5 + 3K, N]` into persons, as plain numpy/cv2 functions."""
from __future__ import annotations

import numpy as np

from posestream.engines.preprocess import Letterbox
from posestream.stream.core.similarity import iou_matrix


def box_nms(xywh: np.ndarray, scores: np.ndarray, score_threshold: float, iou_threshold: float,
            top_k: int) -> np.ndarray:
    """Greedy box NMS over x, y, w, h boxes -> indices of the kept boxes, best first. The rules of
    OpenCV's `cv2.dnn.NMSBoxes`, which this replaced so that IoU has one implementation
    (`core.similarity.iou_matrix`): only scores above `score_threshold` (compared in float32) take
    part, the best `top_k` (0 = all) of them by score (ties in input order), and a box is kept when
    its IoU with every kept box is at most `iou_threshold`."""
    scores32 = np.asarray(scores, dtype=np.float32)
    candidates = np.flatnonzero(scores32 > np.float32(score_threshold))
    order = candidates[np.argsort(-scores32[candidates], kind="stable")]
    if top_k > 0:
        order = order[:top_k]
    if order.size == 0:
        return order
    overlaps = iou_matrix(xywh[order], xywh[order])
    suppressed = np.zeros(order.size, dtype=bool)
    keep = []
    for i in range(order.size):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= overlaps[i] > np.float32(iou_threshold)
    return order[keep]


def decode_yolo_pose(output: np.ndarray, score_threshold: float, iou_threshold: float, max_persons: int,
                     num_keypoints: int = 17) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's output `[5 + 3K, N]` -> boxes `[M, 4]` (x1, y1, x2, y2), scores `[M]`,
    keypoints `[M, K, 3]`, all in canvas pixels, after score filtering and box NMS."""
    if output.ndim != 2 or output.shape[0] != 5 + 3 * num_keypoints:
        raise ValueError(f"expected YOLO-pose output [{5 + 3 * num_keypoints}, N], got {list(output.shape)}")
    scores = output[4]
    keep = np.flatnonzero(scores >= score_threshold)
    if keep.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, num_keypoints, 3), np.float32)
    cand = output[:, keep].T  # [M, 56]
    cx, cy, w, h = cand[:, 0], cand[:, 1], cand[:, 2], cand[:, 3]
    xywh = np.stack([cx - w / 2, cy - h / 2, w, h], axis=1)
    chosen = box_nms(xywh, cand[:, 4], score_threshold, iou_threshold, max_persons)
    boxes = np.stack([xywh[chosen, 0], xywh[chosen, 1], xywh[chosen, 0] + xywh[chosen, 2],
                      xywh[chosen, 1] + xywh[chosen, 3]], axis=1).astype(np.float32)
    keypoints = cand[chosen, 5:].reshape(-1, num_keypoints, 3).astype(np.float32)
    return boxes, cand[chosen, 4].astype(np.float32), keypoints


def to_frame_pixels(boxes_xyxy: np.ndarray, scores: np.ndarray, keypoints: np.ndarray, box: Letterbox,
                    height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map canvas persons to frame pixels -> boxes clipped to the frame as x, y, w, h, scores and
    keypoints, without the persons seen in the letterbox padding (`Letterbox.boxes_to_frame`)."""
    xywh, keep = box.boxes_to_frame(boxes_xyxy, height, width)
    return xywh[keep], scores[keep], box.to_frame(keypoints[keep])
