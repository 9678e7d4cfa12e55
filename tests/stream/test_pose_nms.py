"""Pose NMS on COCO val2017 image 197388 (five overlapping cross-country skiers, GT poses) plus
constructed duplicates: duplicates collapse into one merged pose, distinct people survive."""
import json

import numpy as np
import pytest

from posestream.stream.core.config import load_config
from posestream.stream.core.errors import ConfigError
from posestream.stream.core.keypoints import COCO17
from posestream.stream.pose_nms import (make_pose_nms, oks_nms,
                             parametric_pose_nms)
from posestream.stream.core.results import Poses
from posestream.stream.core.similarity import oks_matrix

ALPHAPOSE = load_config().pose_nms  # AlphaPose's constants, the shipped defaults

SKIERS_IMAGE = 197388


@pytest.fixture(scope="module")
def skiers(shared) -> Poses:
    """The GT skiers as model-like output: labelled keypoints scored 0.6..0.95, unlabelled ones put at
    the person's mean keypoint with score 0.05 (a model always outputs a location)."""
    gt = json.loads((shared / "data/coco/person_keypoints.json").read_text())
    anns = [a for a in gt["annotations"] if a["image_id"] == SKIERS_IMAGE and a["num_keypoints"] > 0]
    assert len(anns) == 5
    rng = np.random.default_rng(1)
    keypoints = []
    for ann in anns:
        kp = np.array(ann["keypoints"], dtype=np.float64).reshape(17, 3)
        labelled = kp[:, 2] > 0
        kp[~labelled, :2] = kp[labelled, :2].mean(axis=0)
        kp[:, 2] = np.where(labelled, rng.uniform(0.6, 0.95, 17), 0.05)
        keypoints.append(kp)
    keypoints = np.stack(keypoints)
    return Poses(np.array([a["bbox"] for a in anns]), np.full(5, 0.9), keypoints,
                 keypoints[..., 2].mean(axis=1), np.arange(5))


def with_duplicates(poses: Poses, copies: int, jitter: float, seed: int = 0) -> Poses:
    """Each pose plus `copies` jittered, slightly weaker copies (ids 100 + original id)."""
    rng = np.random.default_rng(seed)
    parts = [poses]
    for _ in range(copies):
        kp = poses.keypoints.copy()
        kp[..., :2] += rng.normal(0, jitter, kp[..., :2].shape)
        kp[..., 2] *= rng.uniform(0.8, 0.98, kp[..., 2].shape)
        boxes = poses.boxes + rng.normal(0, jitter, poses.boxes.shape)
        parts.append(Poses(boxes, poses.box_scores * 0.95, kp, poses.scores * 0.9, poses.ids + 100))
    return Poses(*(np.concatenate([getattr(p, f) for p in parts])
                   for f in ("boxes", "box_scores", "keypoints", "scores", "ids")))


def nearest_gt(result: Poses, gt: Poses) -> np.ndarray:
    d = np.linalg.norm(result.keypoints[:, None, :, :2] - gt.keypoints[None, :, :, :2], axis=-1).mean(-1)
    return d.argmin(axis=1)


def test_distinct_overlapping_skiers_all_survive(skiers):
    out = parametric_pose_nms(skiers, ALPHAPOSE)
    assert sorted(out.ids.tolist()) == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(out.keypoints[np.argsort(out.ids)], skiers.keypoints, atol=1e-4)


def test_jittered_duplicates_collapse_into_one_merged_pose_each(skiers):
    noisy = with_duplicates(skiers, copies=3, jitter=2.0)
    assert len(noisy) == 20
    out = parametric_pose_nms(noisy, ALPHAPOSE)
    assert len(out) == 5
    assert sorted(nearest_gt(out, skiers).tolist()) == [0, 1, 2, 3, 4]
    # Merging averages the copies' jitter away: the survivors sit closer to the truth than the copies.
    order = np.argsort(nearest_gt(out, skiers))
    labelled = skiers.keypoints[..., 2] > 0.5
    merged_error = np.linalg.norm(out.keypoints[order, :, :2] - skiers.keypoints[..., :2], axis=-1)[labelled]
    copy_error = np.linalg.norm(noisy.keypoints[5:, :, :2] - np.tile(skiers.keypoints[..., :2], (3, 1, 1)),
                                axis=-1)[np.tile(labelled, (3, 1))]
    assert merged_error.mean() < 0.8 * copy_error.mean()


def test_merge_is_the_score_weighted_mean():
    kp = np.zeros((2, 17, 3))
    kp[:, :, 0] = np.arange(17) * 10.0
    kp[:, :, 1] = 50.0
    kp[0, :, 2], kp[1, :, 2] = 0.9, 0.3
    kp[1, :, 0] += 3.0  # the weaker copy is 3 px to the right
    # The clearer pose (higher keypoint scores) survives; it takes the cluster's best pose score.
    poses = Poses(np.array([[0, 0, 170, 100]] * 2), [0.5, 0.8], kp, [0.45, 0.6], [7, 8])
    out = parametric_pose_nms(poses, ALPHAPOSE)
    assert out.ids.tolist() == [7] and out.box_scores[0] == pytest.approx(0.5)
    assert out.scores[0] == pytest.approx(0.6)
    np.testing.assert_allclose(out.keypoints[0, :, 0], np.arange(17) * 10.0 + 3.0 * 0.3 / 1.2, atol=1e-5)
    np.testing.assert_allclose(out.keypoints[0, :, 2], (0.9 ** 2 + 0.3 ** 2) / 1.2, atol=1e-5)


def test_score_and_area_filters(skiers):
    weak = Poses(skiers.boxes[:1], [0.9], np.concatenate(
        [skiers.keypoints[:1, :, :2], np.full((1, 17, 1), 0.2)], axis=-1), [0.2], [9])
    assert len(parametric_pose_nms(weak, ALPHAPOSE)) == 0  # best keypoint 0.2 < score_threshold 0.3
    areas = [1.5 ** 2 * np.prod(np.ptp(k[:, :2], axis=0)) for k in skiers.keypoints]
    cut = float(np.median(areas))
    out = parametric_pose_nms(skiers, ALPHAPOSE.with_values(area_threshold=cut))
    assert len(out) == sum(a >= cut for a in areas) == 3


def test_empty_input():
    assert len(parametric_pose_nms(Poses.empty(), ALPHAPOSE)) == 0
    assert len(oks_nms(Poses.empty())) == 0


def test_oks_nms_collapses_duplicates_and_keeps_skiers(skiers):
    assert len(oks_nms(skiers, 0.9, COCO17)) == 5
    out = oks_nms(with_duplicates(skiers, copies=2, jitter=1.0), 0.9, COCO17)
    assert sorted(out.ids.tolist()) == [0, 1, 2, 3, 4]  # the originals score highest and survive


def test_oks_matrix_is_one_on_the_diagonal_and_symmetric(skiers):
    oks = oks_matrix(skiers.keypoints, skiers.keypoints, skiers.boxes, skiers.boxes,
                     COCO17.sigma_array, 0.2)
    np.testing.assert_allclose(np.diag(oks), 1.0)
    np.testing.assert_allclose(oks, oks.T)
    assert oks[~np.eye(5, dtype=bool)].max() < 0.5


@pytest.mark.parametrize("overrides, survivors, error", [
    ({}, 5, None),
    ({"pose_nms.kind": "oks"}, 5, None),
    ({"pose_nms.kind": "none"}, 15, None),
    ({"pose_nms.kind": "soft"}, None, "not one of"),
    ({"pose_nms.delta2": 0.0}, None, "pose_nms.delta2"),
    ({"pose_nms.match_threshold": 0}, None, "pose_nms.match_threshold"),
    ({"pose_nms.kind": "oks", "pose_nms.oks_threshold": 1.5}, None, "oks_threshold"),
])
def test_make_pose_nms_from_config(skiers, overrides, survivors, error):
    if error:
        with pytest.raises(ConfigError, match=error):
            make_pose_nms(load_config(overrides=overrides))
        return
    nms = make_pose_nms(load_config(overrides=overrides))
    assert len(nms(with_duplicates(skiers, copies=2, jitter=1.0))) == survivors
