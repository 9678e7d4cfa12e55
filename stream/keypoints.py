"""Keypoint formats, defined once: names, skeleton, flip pairs and OKS sigmas.

Decoders, pose NMS, tracking, rendering and evaluation all take their format from here, and the
output schema's `format` field is a key of `FORMATS`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stream.errors import ConfigError


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

FORMATS: dict[str, KeypointFormat] = {COCO17.name: COCO17}


def get_format(name: str) -> KeypointFormat:
    """The format registered under `name`; the error lists the valid names."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ConfigError(f"unknown keypoint format '{name}' (valid: {', '.join(FORMATS)})") from None
