"""Pose NMS: remove duplicate poses of the same person, per frame.

`parametric_pose_nms` is AlphaPose's (RMPE, Fang et al. ICCV 2017): greedy, highest mean keypoint
score first; a candidate is eliminated when its pose similarity to the kept pose exceeds `gamma` or
when at least `match_threshold` of its keypoints lie within a box-relative radius of the kept pose's;
each kept pose is then replaced by the score-weighted merge of the cluster it eliminated, and
weak or tiny results are dropped. `oks_nms` is the simple alternative (greedy by pose score on OKS).
Both work on all pairs at once with numpy; only the greedy loop is Python, one step per survivor.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from posestream.stream.core.settings import PoseNmsSettings, Settings
from posestream.stream.core.keypoints import KeypointFormat, get_format
from posestream.stream.core.results import Poses
from posestream.stream.core.similarity import oks_matrix

_MATCH_RADIUS_CAP = 7.0  # px; AlphaPose caps the keypoint-matching radius (PCK_match)
_MERGE_RADIUS_CAP = 15.0  # px; ... and the radius within which cluster keypoints are merged (p_merge)
_ZERO_SCORE = 1e-5  # AlphaPose lifts zero keypoint scores so that merge weights never sum to zero


def _pairwise_distances(points: np.ndarray) -> np.ndarray:
    """[N,N,K] distance between keypoint k of pose i and keypoint k of pose j."""
    return np.sqrt(((points[:, None] - points[None, :]) ** 2).sum(axis=-1))


def parametric_pose_nms(poses: Poses, params: PoseNmsSettings) -> Poses:
    """AlphaPose's parametric pose NMS. Survivors keep their box, box score and id; their keypoints
    become the merge of their cluster and their pose score the best pose score in it (ranking by mean
    keypoint score may pick a pose from a weaker box; measured on COCO val boxes (AP_H_56, yolo-crop):
    AP 0.703 this way against 0.623 keeping the survivor's own score, 0.695 without NMS; ranking by
    pose score instead: 0.700, and in one-stage mode it keeps, at PoseTrack 000001 frame 3, the 0.54
    box spanning two tackling players over the tight 0.13 box of one, which costs the tracker an id).

    One deliberate difference from AlphaPose's code: the keypoint-score term counts keypoints within
    the box-relative radius `alpha * max(w, h)` as the RMPE paper defines it; the code uses 1 px, which
    makes the term vanish for anything but near-identical poses.
    """
    n = len(poses)
    if n == 0:
        return poses
    points = poses.keypoints[..., :2].astype(np.float64)
    scores = poses.keypoints[..., 2].astype(np.float64)
    scores[scores == 0] = _ZERO_SCORE
    radius = params.alpha * poses.boxes[:, 2:].max(axis=1).astype(np.float64)  # [N]
    distances = _pairwise_distances(points)  # [N,N,K]
    confidence = np.tanh(scores / params.delta1)  # [N,K]
    score_term = (confidence[:, None] * confidence[None, :] * (distances <= radius[:, None, None])).sum(-1)
    spatial_term = params.mu * np.exp(-distances / params.delta2).sum(-1)
    similarity = score_term + spatial_term  # [N,N]: row = kept candidate
    matches = (distances <= np.minimum(radius, _MATCH_RADIUS_CAP)[:, None, None]).sum(-1)
    duplicate = (similarity > params.gamma) | (matches >= params.match_threshold)

    remaining = np.ones(n, dtype=bool)
    ranking = scores.mean(axis=1)
    keep: list[int] = []
    merged_points: list[np.ndarray] = []
    merged_scores: list[np.ndarray] = []
    best_scores: list[float] = []
    while remaining.any():
        pick = int(np.flatnonzero(remaining)[ranking[remaining].argmax()])
        members = remaining & duplicate[pick]
        members[pick] = True
        cluster = np.flatnonzero(members)
        remaining[cluster] = False
        if scores[pick].max() < params.score_threshold:
            continue
        near = distances[pick, cluster] <= min(radius[pick], _MERGE_RADIUS_CAP)  # [C,K]; pick itself is near
        weights = scores[cluster] * near
        normed = weights / weights.sum(axis=0)
        merged_xy = (points[cluster] * normed[..., None]).sum(axis=0)
        merged_score = (weights * normed).sum(axis=0)
        if merged_score.max() < params.score_threshold:
            continue
        extent = merged_xy.max(axis=0) - merged_xy.min(axis=0)
        if 1.5 ** 2 * extent[0] * extent[1] < params.area_threshold:
            continue
        keep.append(pick)
        best_scores.append(poses.scores[cluster].max())
        merged_points.append(merged_xy)
        merged_scores.append(merged_score)
    if not keep:
        return poses.select(np.zeros(0, dtype=np.int64))
    out = poses.select(np.array(keep))
    out.keypoints = np.concatenate(
        [np.stack(merged_points), np.stack(merged_scores)[..., None]], axis=-1).astype(np.float32)
    out.scores = np.asarray(best_scores, dtype=np.float32)
    return out


def oks_nms(poses: Poses, threshold: float = 0.9, fmt: KeypointFormat | None = None,
            keypoint_score: float = 0.2) -> Poses:
    """Greedy NMS by pose score: a pose whose OKS with a kept, higher-scored pose exceeds `threshold`
    is dropped. OKS is `core.similarity.oks_matrix` (keypoints scoring at least `keypoint_score` in
    both poses). Survivors come out in descending score order."""
    if len(poses) == 0:
        return poses
    fmt = fmt or get_format(poses.format)
    if poses.keypoints.shape[1] != fmt.num_keypoints:
        raise ValueError(f"poses have {poses.keypoints.shape[1]} keypoints, format '{fmt.name}' has "
                         f"{fmt.num_keypoints}")
    oks = oks_matrix(poses.keypoints, poses.keypoints, poses.boxes, poses.boxes, fmt.sigma_array,
                     keypoint_score)
    order = np.argsort(-poses.scores, kind="stable")
    suppressed = np.zeros(len(poses), dtype=bool)
    keep = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= oks[i] > threshold
    return poses.select(np.array(keep))


def make_pose_nms(settings: Settings) -> Callable[[Poses], Poses]:
    """The pose NMS chosen by `[pose_nms] kind` (AlphaPose's constants are its table's defaults)."""
    table = settings.pose_nms
    if table.kind == "parametric":
        return lambda poses: parametric_pose_nms(poses, table)
    if table.kind == "oks":
        return lambda poses: oks_nms(poses, table.oks_threshold, keypoint_score=table.keypoint_score)
    return lambda poses: poses
