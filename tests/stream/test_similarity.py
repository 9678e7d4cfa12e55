"""`core.similarity`: IoU and OKS (one implementation each, one visibility rule) against
hand-computed values, and the detector's box NMS against OpenCV's, which it replaced."""
from __future__ import annotations

import numpy as np
import pytest

from posestream.stream.core.keypoints import get_format
from posestream.stream.core.similarity import iou_matrix, oks_matrix, visible

SIGMAS = get_format("coco17").sigma_array


@pytest.mark.parametrize("a, b, expected", [
    ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
    ([0, 0, 10, 10], [5, 0, 10, 10], 50 / 150),
    ([0, 0, 10, 10], [0, 5, 10, 10], 50 / 150),
    ([0, 0, 10, 10], [2, 2, 4, 4], 16 / 100),
    ([0, 0, 10, 10], [10, 0, 10, 10], 0.0),   # touching edges
    ([0, 0, 10, 10], [50, 50, 5, 5], 0.0),
    ([0, 0, 0, 0], [0, 0, 0, 0], 0.0),        # degenerate boxes: no division by zero
])
def test_iou_values(a, b, expected):
    assert iou_matrix(np.array([a]), np.array([b]))[0, 0] == pytest.approx(expected)


def test_iou_matrix_shape_and_symmetry():
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.uniform(0, 100, (5, 2)), rng.uniform(1, 50, (5, 2))], axis=1)
    b = np.concatenate([rng.uniform(0, 100, (3, 2)), rng.uniform(1, 50, (3, 2))], axis=1)
    m = iou_matrix(a, b)
    assert m.shape == (5, 3)
    np.testing.assert_allclose(m, iou_matrix(b, a).T)
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 3)


def pose(offset=(0.0, 0.0), score=0.9):
    """17 random keypoints inside the box (offset, offset + 100)."""
    rng = np.random.default_rng(1)
    points = rng.uniform(0, 100, (17, 2)) + np.asarray(offset)
    return np.concatenate([points, np.full((17, 1), score)], axis=1)


def box(offset=(0.0, 0.0), size=100.0):
    return np.array([offset[0], offset[1], size, size])


def test_oks_identical_is_one_and_far_is_zero():
    p = pose()
    m = oks_matrix(np.stack([p, pose((1000, 0))]), p[None], np.stack([box(), box((1000, 0))]),
                   box()[None], SIGMAS, 0.3)
    assert m[0, 0] == pytest.approx(1.0)
    assert m[1, 0] == 0.0


def test_oks_matches_coco_formula_for_one_shift():
    a = pose()
    b = a.copy()
    b[:, 0] += 3.0  # every keypoint 3 px to the right
    box_a, box_b = np.array([0, 0, 40, 100]), np.array([3, 0, 60, 100])
    scale = (4000.0 + 6000.0) / 2  # mean box area
    expected = np.mean(np.exp(-9.0 / (2 * (2 * SIGMAS) ** 2 * scale)))
    m = oks_matrix(a[None], b[None], box_a[None], box_b[None], SIGMAS, 0.3)
    assert m[0, 0] == pytest.approx(expected)


@pytest.mark.parametrize("shift", [50.0, 150.0, 250.0, 290.0])
def test_oks_gate_drops_only_negligible_pairs(shift):
    # Gate: centres farther apart than the two diagonals (2 * 141 px here) are not evaluated.
    a, b = pose(), pose((shift, 0))
    gated = oks_matrix(a[None], b[None], box()[None], box((shift, 0))[None], SIGMAS, 0.3)[0, 0]
    scale = 100.0 * 100.0
    ungated = np.mean(np.exp(-(shift ** 2) / (2 * (2 * SIGMAS) ** 2 * scale)))
    assert gated == pytest.approx(ungated, abs=1e-6)
    assert (gated == 0.0) == (shift > 2 * np.hypot(100, 100))


def test_oks_ignores_keypoints_either_side_cannot_see():
    a, b = pose(), pose()
    b[:8, :2] += 60           # wrong, but...
    b[:8, 2] = 0.1            # ...below the keypoint score threshold
    boxes = box()[None]
    assert oks_matrix(a[None], b[None], boxes, boxes, SIGMAS, 0.3)[0, 0] == pytest.approx(1.0)
    b[:, 2] = 0.1             # nothing visible in common
    assert oks_matrix(a[None], b[None], boxes, boxes, SIGMAS, 0.3)[0, 0] == 0


def test_oks_matrix_layout():
    poses = np.stack([pose((dx, 0)) for dx in (0, 5, 10)])
    boxes = np.stack([box((dx, 0)) for dx in (0, 5, 10)])
    m = oks_matrix(poses, poses[:2], boxes, boxes[:2], SIGMAS, 0.3)
    assert m.shape == (3, 2)
    np.testing.assert_allclose(np.diag(m[:2]), 1.0)
    assert m[2, 0] < m[1, 0] < 1.0 and m[2, 1] == pytest.approx(m[0, 1])
    assert oks_matrix(np.zeros((0, 17, 3)), pose()[None], np.zeros((0, 4)), box()[None], SIGMAS,
                      0.3).shape == (0, 1)


def test_visibility_rule_is_at_least_the_threshold():
    """One rule for every OKS user: a keypoint scoring exactly the threshold counts."""
    np.testing.assert_array_equal(visible(np.array([0.29, 0.3, 0.31]), 0.3), [False, True, True])
    a, b = pose(score=0.3), pose(score=0.3)
    b[:, 0] += 3.0
    boxes = box()[None]
    assert 0 < oks_matrix(a[None], b[None], boxes, boxes, SIGMAS, 0.3)[0, 0] < 1
    assert oks_matrix(a[None], b[None], boxes, boxes, SIGMAS, 0.3 + 1e-9)[0, 0] == 0


def test_oks_rejects_keypoints_that_do_not_match_the_sigmas():
    with pytest.raises(ValueError, match=r"expected shape \[\?, 17, 3\]"):
        oks_matrix(np.zeros((1, 26, 3)), pose()[None], box()[None], box()[None], SIGMAS, 0.3)
