"""`blazepose` pose plugin: MediaPipe's BlazePose GHUM full landmark model as a top-down SPPE.

Crops are aligned as MediaPipe aligns them: a square around the person (the box's longer side times
`pose.box_expand`), turned so that the hips-to-shoulders axis points up. The axis comes from the
detector's own keypoints (YOLO11-pose gives shoulders and hips); without confident ones the crop is
upright. The model's pose flag (probability that the crop holds a person) rejects crops below
`pose.landmark_min_presence`: a second opinion on detector false positives.

Output formats (`pose.landmark_format`):
- `blazepose33`: the model's own 33 landmarks;
- `coco17`: the 17 COCO points BlazePose has under other indices;
- `halpe26`: COCO-17 plus heels, big toes (= BlazePose's foot index), and derived points: neck =
  shoulder midpoint, hip = hip midpoint, head = eye midpoint pushed away from the mouth by 1.5x the
  eyes-to-mouth distance (BlazePose has no head top). BlazePose has no small toes: score 0.
- `halpe136`: Halpe-26 plus 68 face and 2 x 21 hand points from MediaPipe's face-mesh and hand
  models on crops cut from the body landmarks (`engines/families/blazepose/wholebody.py`).
Keypoint score = sigmoid of the landmark's visibility logit (the model's "is this point visible").
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from posestream.engines.model_card import ModelCard
from posestream.engines.crops import crop_to_frame, rotated_crop_matrices, warp_with
from posestream.engines.families.blazepose.wholebody import WholeBody
from posestream.engines.topdown import Outputs, TopDownEstimator, merge_keypoints
from posestream.stream.core.errors import InputError, ModelError
from posestream.stream.core.keypoints import get_format
from posestream.stream.core.results import Poses
from posestream.stream.core.settings import Settings

BODY_LANDMARKS = 33
VALUES_PER_LANDMARK = 5  # x, y, z, visibility logit, presence logit
# BlazePose index of each COCO-17 point.
COCO_FROM_BLAZEPOSE = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
# Halpe-26 points 20..25 (big toes, small toes, heels); -1 = the model has no such point.
HALPE_FEET_FROM_BLAZEPOSE = (31, 32, -1, -1, 29, 30)
_SHOULDERS, _HIPS = (5, 6), (11, 12)  # in the detector's COCO-17 keypoints
_AXIS_MIN_SCORE = 0.3


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


def body_angles(keypoints: np.ndarray) -> np.ndarray:
    """Angle (radians) of the hips->shoulders axis from "up", per person, from COCO-17 keypoints
    [N,17,3] (0 where shoulders or hips are not confidently seen), or of the hip centre -> body
    circle axis from the `mediapipe-person` detector's 4 keypoints."""
    angles = np.zeros(len(keypoints))
    if keypoints.shape[1] == 4:  # MediaPipe's detector: hip centre -> body-circle point is "up"
        axis = keypoints[:, 1, :2] - keypoints[:, 0, :2]
        return np.arctan2(axis[:, 0], -axis[:, 1])
    if keypoints.shape[1] < 17:
        return angles
    shoulders, hips = keypoints[:, _SHOULDERS], keypoints[:, _HIPS]
    seen = (shoulders[:, :, 2].min(1) >= _AXIS_MIN_SCORE) & (hips[:, :, 2].min(1) >= _AXIS_MIN_SCORE)
    axis = shoulders[:, :, :2].mean(1) - hips[:, :, :2].mean(1)
    angles[seen] = np.arctan2(axis[seen, 0], -axis[seen, 1])
    return angles


def to_format(points: np.ndarray, scores: np.ndarray, fmt: str) -> np.ndarray:
    """BlazePose landmarks (frame xy [N,33,2], scores [N,33]) as [N,K,3] keypoints of `fmt`."""
    full = np.concatenate([points, scores[..., None]], axis=-1)
    if fmt == "blazepose33":
        return full
    coco = full[:, COCO_FROM_BLAZEPOSE]
    if fmt == "coco17":
        return coco
    eyes = full[:, [2, 5]].mean(1)
    mouth = full[:, [9, 10]].mean(1)
    head = eyes[:, :2] + 1.5 * (eyes[:, :2] - mouth[:, :2])
    derived = [
        np.concatenate([head, np.minimum(eyes[:, 2:], mouth[:, 2:])], -1),
        np.concatenate([full[:, [11, 12], :2].mean(1), full[:, [11, 12], 2].min(1, keepdims=True)], -1),
        np.concatenate([full[:, [23, 24], :2].mean(1), full[:, [23, 24], 2].min(1, keepdims=True)], -1),
    ]
    feet = np.stack([full[:, i] if i >= 0 else np.zeros_like(full[:, 0]) for i in HALPE_FEET_FROM_BLAZEPOSE], 1)
    return np.concatenate([coco, np.stack(derived, 1), feet], axis=1)


class BlazePose(TopDownEstimator):
    """`BlazePose(settings)`; a `PoseEstimator` on the `blazepose-full` landmark model."""

    tasks = ("pose-landmarks",)

    def __init__(self, settings: Settings) -> None:
        self.output_format = settings.pose.landmark_format
        self.min_presence = settings.pose.landmark_min_presence
        self.wholebody: WholeBody | None = None
        super().__init__(settings)
        if self.output_format == "halpe136":
            try:
                self.wholebody = WholeBody(settings)
            except BaseException:
                self.close()
                raise

    def setup(self, card: ModelCard) -> None:
        if card.keypoint_format != "blazepose33":
            raise ModelError(f"model '{card.name}' gives '{card.keypoint_format}' landmarks; the "
                             "blazepose plugin needs a BlazePose (blazepose33) model such as blazepose-full")
        if self.input_hw[0] != self.input_hw[1]:
            raise ModelError(f"model '{card.name}': BlazePose crops are square, input is {self.input_hw}")
        self.torch_inputs = None  # rotated crops are cut with OpenCV; the torch crop path is axis-aligned
        self.format = get_format(self.output_format)
        self.flip_test = False  # BlazePose is not trained for mirrored averaging

    def decode(self, outputs: Outputs, flipped: Outputs | None) -> tuple[np.ndarray, np.ndarray]:
        raw = np.asarray(outputs["landmarks"], dtype=np.float64).reshape(len(outputs["landmarks"]), -1,
                                                                         VALUES_PER_LANDMARK)
        body = raw[:, :BODY_LANDMARKS]
        # MediaPipe's x/256 = 0.5 is the crop's centre, which is pixel 127.5 in our convention.
        return body[..., :2] - 0.5, _sigmoid(body[..., 3])

    def estimate(self, frames: Sequence[np.ndarray], detections: Sequence[Poses]) -> list[Poses]:
        if len(frames) != len(detections):
            raise InputError(f"{len(frames)} frames but {len(detections)} detection sets")
        kept = [d.select(d.box_scores >= self.min_box_score) for d in detections]
        size = self.input_hw[0]
        crops, matrices = [], []
        for frame, persons in zip(frames, kept):
            if not len(persons):
                continue
            boxes = persons.boxes
            centres = boxes[:, :2] + boxes[:, 2:] / 2.0
            sides = boxes[:, 2:].max(1) * self.expand
            m = rotated_crop_matrices(centres, sides, body_angles(persons.keypoints), size)
            crops.append(warp_with(frame, m, (size, size)))
            matrices.append(m)
        if not crops:
            return [self._empty() for _ in frames]
        all_crops, all_matrices = np.concatenate(crops), np.concatenate(matrices)
        coords, scores, flags = [], [], []
        for start in range(0, len(all_crops), self.batch):
            outputs = self.infer(all_crops[start:start + self.batch])
            xy, s = self.decode(outputs, None)
            coords.append(xy)
            scores.append(s)
            flags.append(np.asarray(outputs["pose_flag"], dtype=np.float64).reshape(-1))
        points = crop_to_frame(np.concatenate(coords), all_matrices)
        body_format = "halpe26" if self.wholebody is not None else self.output_format
        keypoints = to_format(points, np.concatenate(scores), body_format)
        presence = np.concatenate(flags)
        splits = np.cumsum([len(p) for p in kept])[:-1]
        per_frame = [merge_keypoints(kp, persons.keypoints, self.merge)
                     for kp, persons in zip(np.split(keypoints, splits), kept)]
        if self.wholebody is not None:
            per_frame = self.wholebody.extend(frames, np.split(points, splits),
                                              [p.boxes for p in kept], per_frame)
        body_points = get_format(body_format).num_keypoints
        results = []
        for persons, kp, flag in zip(kept, per_frame, np.split(presence, splits)):
            if len(persons) == 0:
                results.append(self._empty())
                continue
            pose_scores = persons.box_scores * kp[:, :body_points, 2].mean(1)
            keep = flag >= self.min_presence
            results.append(Poses(persons.boxes, persons.box_scores, kp, pose_scores, persons.ids,
                                 self.format.name).select(keep))
        return results

    def close(self) -> None:
        """Release the body model and, in whole-body mode, the hand and face models; safe twice."""
        if getattr(self, "wholebody", None) is not None:
            self.wholebody.close()
            self.wholebody = None
        super().close()
