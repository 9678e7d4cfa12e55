"""Keypoint formats, defined once: names, skeleton, flip pairs and OKS sigmas.

Decoders, pose NMS, tracking, rendering and evaluation all take their format from here, and the
output schema's `format` field is a key of `FORMATS`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from posestream.stream.core.errors import ConfigError


@dataclass(frozen=True)
class KeypointFormat:
    name: str
    names: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...]
    flip_pairs: tuple[tuple[int, int], ...]
    sigmas: tuple[float, ...]

    def __post_init__(self) -> None:
        n = len(self.names)
        if len(self.sigmas) != n:
            raise ValueError(f"{self.name}: {len(self.sigmas)} sigmas for {n} keypoints")
        for a, b in self.skeleton + self.flip_pairs:
            if not (0 <= a < n and 0 <= b < n):
                raise ValueError(f"{self.name}: pair ({a}, {b}) outside 0..{n - 1}")

    @property
    def num_keypoints(self) -> int:
        return len(self.names)

    @property
    def sigma_array(self) -> np.ndarray:
        return np.asarray(self.sigmas, dtype=np.float64)

    def flip_index(self) -> np.ndarray:
        """Permutation that swaps left and right keypoints (for flip-test and augmentation)."""
        index = np.arange(self.num_keypoints)
        for a, b in self.flip_pairs:
            index[a], index[b] = b, a
        return index


_COCO_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)
_COCO_SKELETON = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
    (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)
_COCO_FLIP = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
# COCO keypoint evaluation constants (cocoeval.py), per keypoint.
_COCO_SIGMAS = (
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
    0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
)

COCO17 = KeypointFormat("coco17", _COCO_NAMES, _COCO_SKELETON, _COCO_FLIP, _COCO_SIGMAS)

# Halpe-FullBody (Fang-Haoshu/Halpe-FullBody, mmpose `halpe26.py` / `halpe.py`): COCO-17 first, then
# head, neck, hip and three points per foot; the 136-point set adds 68 face and 2 x 21 hand points.
_HALPE_BODY_NAMES = _COCO_NAMES + (
    "head", "neck", "hip", "left_big_toe", "right_big_toe", "left_small_toe", "right_small_toe",
    "left_heel", "right_heel",
)
_HALPE_BODY_SKELETON = (
    (15, 13), (13, 11), (11, 19), (16, 14), (14, 12), (12, 19), (17, 18), (18, 19), (18, 5), (5, 7),
    (7, 9), (18, 6), (6, 8), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
    (15, 20), (15, 22), (15, 24), (16, 21), (16, 23), (16, 25),
)
_HALPE_BODY_FLIP = _COCO_FLIP + ((20, 21), (22, 23), (24, 25))
# Halpe's cocoeval sigmas for the 26 body points (head/neck as tight as the eyes, hip 0.066, feet 0.079).
_HALPE26_SIGMAS = _COCO_SIGMAS + (0.026, 0.026, 0.066, 0.079, 0.079, 0.079, 0.079, 0.079, 0.079)

HALPE26 = KeypointFormat("halpe26", _HALPE_BODY_NAMES, _HALPE_BODY_SKELETON, _HALPE_BODY_FLIP,
                         _HALPE26_SIGMAS)

_FACE_START = 26  # 68 face points in the iBUG-68 layout: face-0 .. face-67
_FACE_FLIP = (  # mirror pairs within the 68-point face layout (jaw, brows, nose, eyes, mouth)
    tuple((i, 16 - i) for i in range(8)) + tuple((17 + i, 26 - i) for i in range(5))
    + ((31, 35), (32, 34), (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46),
       (48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67))
)
_HAND_POINTS = ("wrist",) + tuple(f"{finger}{j}" for finger in (
    "thumb", "forefinger", "middle_finger", "ring_finger", "pinky_finger") for j in range(1, 5))
_LEFT_HAND_START, _RIGHT_HAND_START = 94, 115
# Each finger is a chain wrist -> 1 -> 2 -> 3 -> 4.
_HAND_SKELETON = tuple((0 if j == 0 else 1 + 4 * f + j - 1, 1 + 4 * f + j) for f in range(5) for j in range(4))

_HALPE136_NAMES = (
    _HALPE_BODY_NAMES + tuple(f"face-{i}" for i in range(68))
    + tuple(f"left_{p}" for p in _HAND_POINTS) + tuple(f"right_{p}" for p in _HAND_POINTS)
)
_HALPE136_SKELETON = (
    _HALPE_BODY_SKELETON
    + tuple((_LEFT_HAND_START + a, _LEFT_HAND_START + b) for a, b in _HAND_SKELETON)
    + tuple((_RIGHT_HAND_START + a, _RIGHT_HAND_START + b) for a, b in _HAND_SKELETON)
)
_HALPE136_FLIP = (
    _HALPE_BODY_FLIP + tuple((_FACE_START + a, _FACE_START + b) for a, b in _FACE_FLIP)
    + tuple((_LEFT_HAND_START + i, _RIGHT_HAND_START + i) for i in range(21))
)
# Halpe-FullBody cocoeval: body as COCO, head/neck/hip 0.08, feet 0.089, face and hands 0.015.
_HALPE136_SIGMAS = _COCO_SIGMAS + (0.08, 0.08, 0.08) + (0.089,) * 6 + (0.015,) * 110

HALPE136 = KeypointFormat("halpe136", _HALPE136_NAMES, _HALPE136_SKELETON, _HALPE136_FLIP,
                          _HALPE136_SIGMAS)

# BlazePose GHUM's 33 landmarks (MediaPipe `pose_landmark`), in the model's own order. OKS sigmas
# follow COCO's for the points COCO has; eye corners as the eyes, mouth as the nose, hand points as
# the wrists, heels and foot tips as Halpe's feet.
_BLAZEPOSE_NAMES = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "left_mouth", "right_mouth",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_pinky", "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_heel", "right_heel", "left_foot_index", "right_foot_index",
)
_BLAZEPOSE_SKELETON = (
    (0, 1), (1, 2), (2, 3), (3, 7), (0, 4), (4, 5), (5, 6), (6, 8), (9, 10),
    (11, 12), (11, 13), (13, 15), (15, 17), (15, 19), (15, 21), (17, 19),
    (12, 14), (14, 16), (16, 18), (16, 20), (16, 22), (18, 20),
    (11, 23), (12, 24), (23, 24), (23, 25), (25, 27), (27, 29), (29, 31), (27, 31),
    (24, 26), (26, 28), (28, 30), (30, 32), (28, 32),
)
_BLAZEPOSE_FLIP = ((1, 4), (2, 5), (3, 6), (7, 8), (9, 10)) + tuple((i, i + 1) for i in range(11, 33, 2))
_BLAZEPOSE_SIGMAS = (
    (0.026,) + (0.025,) * 6 + (0.035, 0.035, 0.026, 0.026) + (0.079, 0.079, 0.072, 0.072, 0.062, 0.062)
    + (0.062,) * 6 + (0.107, 0.107, 0.087, 0.087, 0.089, 0.089) + (0.079,) * 4
)
BLAZEPOSE33 = KeypointFormat("blazepose33", _BLAZEPOSE_NAMES, _BLAZEPOSE_SKELETON, _BLAZEPOSE_FLIP,
                             _BLAZEPOSE_SIGMAS)

FORMATS: dict[str, KeypointFormat] = {f.name: f for f in (COCO17, HALPE26, HALPE136, BLAZEPOSE33)}


def format_for_keypoints(num_keypoints: int) -> KeypointFormat:
    """The format with `num_keypoints` points (17, 26 or 136); for data that does not name its format."""
    for fmt in FORMATS.values():
        if fmt.num_keypoints == num_keypoints:
            return fmt
    valid = ", ".join(f"{f.num_keypoints} ({f.name})" for f in FORMATS.values())
    raise ConfigError(f"no keypoint format has {num_keypoints} keypoints (valid: {valid})")


def get_format(name: str) -> KeypointFormat:
    """The format registered under `name`; the error lists the valid names."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ConfigError(f"unknown keypoint format '{name}' (valid: {', '.join(FORMATS)})") from None
