"""A cheap appearance cue guided by the pose: the colours of a person's torso and limbs.

Pixels are sampled along the skeleton (shoulders to hips for the torso, each bone for the limbs,
a few points along each segment and to either side of it), turned into CIE Lab, and averaged per
body part. Two people who swap places in a crossing, or a person who comes back after an occlusion,
keep their shirt and trousers: comparing these few numbers re-identifies lost tracks and breaks
ties that box overlap and keypoint distance cannot. Left and right limbs share a part (a person
turning round swaps them). Lightness counts half as much as colour (shadows and light change it).

Plain numpy/OpenCV functions: `describe` per frame, `similarity` between descriptors, `blend` to
keep a track's descriptor as a running average. A part seen in neither descriptor does not count;
pairs that share no part get NaN (no opinion).
"""
from __future__ import annotations

import cv2
import numpy as np

# Keypoint pairs per part, by name (every supported format names these joints).
PARTS: tuple[tuple[tuple[str, str], ...], ...] = (
    (("left_shoulder", "left_hip"), ("right_shoulder", "right_hip"),       # torso: its sides
     ("left_shoulder", "right_hip"), ("right_shoulder", "left_hip")),      # and diagonals
    (("left_shoulder", "left_elbow"), ("right_shoulder", "right_elbow")),  # upper arms
    (("left_elbow", "left_wrist"), ("right_elbow", "right_wrist")),        # forearms
    (("left_hip", "left_knee"), ("right_hip", "right_knee")),              # thighs
    (("left_knee", "left_ankle"), ("right_knee", "right_ankle")),          # shins
)
_ALONG = np.linspace(0.2, 0.8, 4)            # where along a segment pixels are sampled
_ACROSS = np.array([-0.08, 0.0, 0.08])       # and how far to either side, in segment lengths
_L_WEIGHT = 0.5                              # lightness counts half as much as colour
MIN_SAMPLES = 4                              # a part needs this many pixels inside the frame


def segments(names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """For a keypoint format's `names`: the keypoint index pairs [S, 2] of every segment sampled,
    and the part [S] each belongs to (a format missing a joint leaves its segments out)."""
    index = {name: i for i, name in enumerate(names)}
    pairs = [((index[a], index[b]), part) for part, segs in enumerate(PARTS) for a, b in segs
             if a in index and b in index]
    return (np.array([p for p, _ in pairs], dtype=np.int64).reshape(-1, 2),
            np.array([part for _, part in pairs], dtype=np.int64))


def describe(image: np.ndarray, keypoints: np.ndarray, pairs: tuple[np.ndarray, np.ndarray],
             min_score: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean Lab colour per part [N, P, 3] and the pixels it is made of [N, P] (0 = part unseen),
    for poses `keypoints` [N, K, 3] given in `image` pixels; `pairs` from `segments` for their
    format. A segment counts when both its keypoints score at least `min_score`."""
    n, parts = len(keypoints), len(PARTS)
    pair_index, part_of = pairs
    means = np.zeros((n, parts, 3), dtype=np.float32)
    counts = np.zeros((n, parts), dtype=np.int64)
    if n == 0 or len(pair_index) == 0:
        return means, counts
    start = keypoints[:, pair_index[:, 0], :]                   # [N, S, 3]
    end = keypoints[:, pair_index[:, 1], :]
    seen = (start[..., 2] >= min_score) & (end[..., 2] >= min_score)
    vector = end[..., :2] - start[..., :2]                        # [N, S, 2]
    normal = np.stack([-vector[..., 1], vector[..., 0]], axis=-1)
    points = (start[..., None, None, :2] + _ALONG[:, None, None] * vector[..., None, None, :]
              + _ACROSS[None, :, None] * normal[..., None, None, :])  # [N, S, A, C, 2]
    points = points.reshape(n, len(pair_index), -1, 2)
    height, width = image.shape[:2]
    x = np.rint(points[..., 0]).astype(np.int64)
    y = np.rint(points[..., 1]).astype(np.int64)
    inside = (x >= 0) & (x < width) & (y >= 0) & (y < height) & seen[..., None]
    if not inside.any():
        return means, counts
    person, segment, _ = np.nonzero(inside)
    pixels = image[y[inside], x[inside]].reshape(-1, 1, 3)
    lab = cv2.cvtColor(pixels.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab).reshape(-1, 3)
    part = part_of[segment]
    flat = person * parts + part
    counts = np.bincount(flat, minlength=n * parts).reshape(n, parts)
    for channel in range(3):
        sums = np.bincount(flat, weights=lab[:, channel], minlength=n * parts).reshape(n, parts)
        means[..., channel] = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    counts[counts < MIN_SAMPLES] = 0
    return means, counts


def similarity(means_a: np.ndarray, counts_a: np.ndarray, means_b: np.ndarray, counts_b: np.ndarray,
               sigma: float) -> np.ndarray:
    """[N, M] in 0..1: per part seen in both, exp(-d^2 / 2 sigma^2) of the Lab distance d (lightness
    at half weight), averaged over those parts; NaN where the two share no part."""
    weight = np.array([_L_WEIGHT, 1.0, 1.0])
    diff = (means_a[:, None] - means_b[None, :]) * weight        # [N, M, P, 3]
    close = np.exp(-(diff ** 2).sum(-1) / (2.0 * sigma ** 2))
    both = (counts_a[:, None] > 0) & (counts_b[None, :] > 0)
    shared = both.sum(-1)
    total = (close * both).sum(-1)
    return np.divide(total, shared, out=np.full(total.shape, np.nan), where=shared > 0)


def blend(means: np.ndarray, counts: np.ndarray, new_means: np.ndarray, new_counts: np.ndarray,
          momentum: float) -> tuple[np.ndarray, np.ndarray]:
    """Tracks' running descriptors updated with newly seen ones (rows paired): a part seen now moves
    `1 - momentum` of the way to it (all the way when the track had not seen it yet)."""
    seen = new_counts > 0
    keep = np.where(counts > 0, momentum, 0.0)[..., None]
    means = np.where(seen[..., None], keep * means + (1.0 - keep) * new_means, means)
    return means.astype(np.float32), np.where(seen, np.maximum(counts, new_counts), counts)
