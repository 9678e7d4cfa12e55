"""The detector's box NMS (on `core.similarity.iou_matrix`) keeps exactly what OpenCV's
`cv2.dnn.NMSBoxes`, which it replaced, keeps: same order, same ties, same top_k."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from posestream.engines.families.yolo11.decode import box_nms


def crowded_boxes(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` float32 x, y, w, h boxes jittered around a few people, like YOLO's raw candidates, with
    scores rounded to 2 decimals so that ties occur."""
    rng = np.random.default_rng(seed)
    people = rng.uniform([0, 0, 20, 40], [600, 400, 120, 300], (max(1, n // 12), 4))
    boxes = people[rng.integers(0, len(people), n)] + rng.normal(0, 6, (n, 4))
    boxes[:, 2:] = np.abs(boxes[:, 2:]) + 1
    scores = np.round(rng.uniform(0.0, 1.0, n), 2)
    return boxes.astype(np.float32), scores.astype(np.float32)


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("score_threshold, iou_threshold, top_k", [
    (0.25, 0.6, 100), (0.25, 0.45, 3), (0.5, 0.7, 0), (0.0, 0.3, 100), (0.99, 0.6, 100),
])
def test_box_nms_keeps_what_opencv_keeps(seed: int, score_threshold: float, iou_threshold: float,
                                         top_k: int) -> None:
    boxes, scores = crowded_boxes(seed, 20 + 7 * seed)
    expected = np.asarray(cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), score_threshold,
                                           iou_threshold, top_k=top_k), dtype=np.int64).reshape(-1)
    got = box_nms(boxes, scores, score_threshold, iou_threshold, top_k)
    np.testing.assert_array_equal(got, expected)
