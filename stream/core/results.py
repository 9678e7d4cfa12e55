"""Per-frame results as validated parallel numpy arrays, and their AlphaPose JSON form.

`Poses` is what detectors, pose estimators, NMS and trackers pass along; `FrameResult` adds the
frame's identity and timing. Its ZMQ message (DESIGN.md section 7) is built in `core.wire`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

def _check(name: str, array: np.ndarray, shape: tuple[int | None, ...]) -> None:
    if array.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, array.shape)):
        want = "[" + ", ".join("?" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"Poses.{name}: expected shape {want}, got {list(array.shape)}")


@dataclass
class Poses:
    """N persons: boxes [N,4] as x,y,w,h in frame pixels, box_scores [N], keypoints [N,K,3]
    (x, y, score), pose scores [N], track ids [N] (-1 = none yet)."""

    boxes: np.ndarray
    box_scores: np.ndarray
    keypoints: np.ndarray
    scores: np.ndarray
    ids: np.ndarray = field(default=None)  # type: ignore[assignment]
    format: str = "coco17"

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        n = len(self.boxes)
        self.box_scores = np.asarray(self.box_scores, dtype=np.float32)
        self.keypoints = np.asarray(self.keypoints, dtype=np.float32)
        if self.keypoints.size == 0 and self.keypoints.ndim != 3:
            self.keypoints = self.keypoints.reshape(0, 0, 3)
        self.scores = np.asarray(self.scores, dtype=np.float32)
        self.ids = (np.full(n, -1, dtype=np.int64) if self.ids is None
                    else np.asarray(self.ids, dtype=np.int64))
        _check("box_scores", self.box_scores, (n,))
        _check("keypoints", self.keypoints, (n, None, 3))
        _check("scores", self.scores, (n,))
        _check("ids", self.ids, (n,))

    @classmethod
    def empty(cls, num_keypoints: int = 17, format: str = "coco17") -> "Poses":
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros((0, num_keypoints, 3)), np.zeros(0),
                   format=format)

    def __len__(self) -> int:
        return len(self.boxes)

    def in_source_pixels(self, decoded_hw: tuple[int, ...], source_hw: tuple[int, int] | None) -> "Poses":
        """These persons, found on a frame decoded at `decoded_hw` (H, W) from a source frame of
        `source_hw`, in the source frame's pixels (itself when `source_hw` is None)."""
        if source_hw is None:
            return self
        sx, sy = source_hw[1] / decoded_hw[1], source_hw[0] / decoded_hw[0]
        boxes = self.boxes * np.array([sx, sy, sx, sy], dtype=np.float32)
        keypoints = self.keypoints.copy()
        keypoints[..., 0] *= sx
        keypoints[..., 1] *= sy
        return Poses(boxes, self.box_scores, keypoints, self.scores, self.ids, self.format)

    def select(self, index: np.ndarray | list[int]) -> "Poses":
        """The persons at `index` (integer indices or a boolean mask), in that order."""
        index = np.asarray(index)
        if index.dtype != np.bool_:
            index = index.astype(np.int64)
        return Poses(self.boxes[index], self.box_scores[index], self.keypoints[index],
                     self.scores[index], self.ids[index], self.format)

    def to_persons(self) -> list[dict[str, Any]]:
        """The wire `persons` list (plain Python types, ready for msgpack or JSON)."""
        return [
            {"id": int(self.ids[i]) if self.ids[i] >= 0 else None,
             "box": [round(float(v), 2) for v in self.boxes[i]],
             "box_score": round(float(self.box_scores[i]), 5),
             "score": round(float(self.scores[i]), 5),
             "keypoints": [[round(float(x), 2), round(float(y), 2), round(float(s), 5)]
                           for x, y, s in self.keypoints[i]]}
            for i in range(len(self))
        ]

    @classmethod
    def from_persons(cls, persons: list[dict[str, Any]], format: str = "coco17") -> "Poses":
        if not persons:
            return cls.empty(format=format)
        return cls(
            np.array([p["box"] for p in persons]), np.array([p["box_score"] for p in persons]),
            np.array([p["keypoints"] for p in persons]), np.array([p["score"] for p in persons]),
            np.array([-1 if p["id"] is None else p["id"] for p in persons]), format)


@dataclass
class FrameResult:
    """Everything known about one processed frame."""

    stream: str
    frame: int
    width: int
    height: int
    poses: Poses
    pts: float | None = None
    capture_ts: float = 0.0
    image_id: str | None = None  # file name for image sources; None for video frames
    timings: dict[str, tuple[float, float]] = field(default_factory=dict)  # stage -> (enter, exit)

    def to_alphapose(self, image_id: str | int) -> list[dict[str, Any]]:
        """AlphaPose result entries: `{image_id, category_id, keypoints (flat), score, box, idx}`."""
        return [
            {"image_id": image_id, "category_id": 1,
             "keypoints": [v for kp in person["keypoints"] for v in kp],
             "score": person["score"], "box": person["box"], "idx": person["id"]}
            for person in self.poses.to_persons()
        ]
