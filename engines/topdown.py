"""Base class of crop-based (top-down) SPPEs: the crops and the batching around a `ModelRunner`.

`estimate(frames, detections)` crops every person of every frame (box grown to the model's aspect,
then by `pose.box_expand`), runs the crops through the model in batches of at most `pose.batch`
regardless of which frame they came from, and maps the keypoints back to frame pixels. Subclasses only
say which model task they read and how to decode its outputs (`decode`).

With TensorRT (or `engine.preprocess = "torch"`) the crops are sampled in torch on the engine's
device from one upload per frame (`engines.backends.torch_inputs`) and never come back to the host; only the
model outputs do, for decoding. With OpenVINO the uint8 crops go in as they are and the model
normalises them (`Engine.accept_images`; `engine.preprocess = "numpy"` feeds `ModelRunner.model_input`'s floats).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from posestream.engines.model_card import ModelCard
from posestream.engines.runner import ModelRunner
from posestream.engines.backends.torch_inputs import to_numpy
from posestream.engines.crops import box_to_centre_scale, crop_matrices, crop_to_frame, warp_crops
from posestream.stream.core.contracts import PoseEstimator
from posestream.stream.core.errors import InputError, ModelError
from posestream.stream.core.keypoints import KeypointFormat, get_format
from posestream.stream.core.results import Poses
from posestream.stream.core.settings import Settings

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

Outputs = Mapping[str, np.ndarray]


def merge_keypoints(ours: np.ndarray, detected: np.ndarray, mode: str) -> np.ndarray:
    """`pose.landmark_merge`: per COCO keypoint, keep the detector's own point where it is the more
    confident one (`confident`), or average both weighted by score (`average`); `none`, or a
    detector without COCO-17 points, leaves ours as they are."""
    if mode == "none" or detected.ndim != 3 or detected.shape[1] != 17 or ours.shape[1] < 17:
        return ours
    ours = ours.copy()
    mine, theirs = ours[:, :17], detected
    if mode == "confident":
        take = theirs[:, :, 2:3] > mine[:, :, 2:3]
        ours[:, :17] = np.where(take, theirs, mine)
    else:
        w1, w2 = mine[:, :, 2:3], theirs[:, :, 2:3]
        total = np.maximum(w1 + w2, 1e-9)
        ours[:, :17, :2] = (mine[:, :, :2] * w1 + theirs[:, :, :2] * w2) / total
        ours[:, :17, 2] = np.maximum(mine[:, :, 2], theirs[:, :, 2])
    return ours


class TopDownEstimator(ModelRunner, PoseEstimator):
    """`TopDownEstimator(settings)`: the `[pose]` table picks the model (opened and verified by
    `ModelRunner`), crop context, batch and decoding.

    Pose score of a person = box score x mean keypoint score, so a confident box with a vague pose
    ranks below one with a clear pose (mmpose's rescoring, without its visibility cut).
    """

    def __init__(self, settings: Settings) -> None:
        table = settings.pose
        self.expand = table.box_expand
        self.batch = table.batch
        self.flip_test = table.flip_test
        self.refine = table.refine
        self.min_box_score = table.min_box_score
        self.merge = table.landmark_merge
        super().__init__(settings, table.model, table.threads)
        name = table.model
        try:
            self.format: KeypointFormat = get_format(self.card.keypoint_format)
            self.input_hw = self._input_size()
            self.static_batch = self.engine.inputs[0].shape[0]  # None = any batch size
            if self.static_batch is not None and self.batch > self.static_batch:
                log.info("pose model %s has a fixed batch of %d; pose.batch %d lowered to it",
                         name, self.static_batch, self.batch)
                self.batch = self.static_batch
            self._input_name = self.engine.inputs[0].name
            self._input_dtype = self.engine.inputs[0].dtype
            self.take_images(settings)  # the card's normalisation; uint8 crops into the model with OpenVINO
            self.setup(self.card)
        except BaseException:
            self.close()
            raise
        log.info("pose model %s (%s, variant %s): input %dx%d, batch %s", name, self.card.task,
                 self.variant, self.input_hw[1], self.input_hw[0], self.static_batch or "dynamic")

    # ----------------------------------------------------------------- subclass hooks
    def setup(self, card: ModelCard) -> None:
        """Read decoder parameters from the card; raise `ModelError` when they are missing."""

    def decode(self, outputs: Outputs, flipped: Outputs | None) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints (x, y) [N,K,2] in crop-input pixels and scores [N,K] from one batch's outputs
        (and those of the mirrored crops when flip test is on)."""
        raise NotImplementedError

    # ----------------------------------------------------------------- public
    def estimate(self, frames: Sequence[np.ndarray], detections: Sequence[Poses]) -> list[Poses]:
        if len(frames) != len(detections):
            raise InputError(f"{len(frames)} frames but {len(detections)} detection sets")
        kept = [d.select(d.box_scores >= self.min_box_score) for d in detections]
        persons_of = [(frame, persons.boxes) for frame, persons in zip(frames, kept) if len(persons)]
        if not persons_of:
            return [self._empty() for _ in frames]
        all_crops, matrices = self._crops(persons_of)
        coords, scores = [], []
        for start in range(0, len(all_crops), self.batch):
            batch_coords, batch_scores = self._run(all_crops[start:start + self.batch])
            coords.append(batch_coords)
            scores.append(batch_scores)
        points = crop_to_frame(np.concatenate(coords), matrices)
        keypoint_scores = np.concatenate(scores)
        results, offset = [], 0
        for persons in kept:
            n = len(persons)
            if n == 0:
                results.append(self._empty())
                continue
            kp = np.concatenate([points[offset:offset + n], keypoint_scores[offset:offset + n, :, None]], -1)
            kp = merge_keypoints(kp, persons.keypoints, self.merge)
            keypoint_scores[offset:offset + n] = kp[:, :, 2]
            pose_scores = persons.box_scores * keypoint_scores[offset:offset + n].mean(axis=1)
            results.append(Poses(persons.boxes, persons.box_scores, kp, pose_scores, persons.ids,
                                 self.format.name))
            offset += n
        return results

    # ----------------------------------------------------------------- internals
    def choose_variant(self, card: ModelCard) -> str:
        """A variant with a dynamic batch axis when there is one (batches of any size), else the first."""
        for variant, entry in card.files.items():
            shape = entry.get("input_shape") or [None]
            if shape[0] is None:
                return variant
        return next(iter(card.files))

    def _input_size(self) -> tuple[int, int]:
        size = self.card.input.get("size")
        if size is None:
            size = self.engine.inputs[0].shape[2:]
        if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
            raise ModelError(f"model '{self.card.name}': input size unknown (card input.size = "
                             f"{self.card.input.get('size')}, model input {self.engine.inputs[0].shape})")
        return int(size[0]), int(size[1])

    def infer(self, crops: "np.ndarray | torch.Tensor") -> dict[str, np.ndarray]:
        """Run crops [N,H,W,3] (N <= batch); a fixed-batch model gets zero padding, cut off again.

        On the torch path the crops may also be float [N,3,H,W] BGR 0..255 tensors on its device.
        """
        n = len(crops)
        if self.static_batch is not None and n > self.static_batch:
            raise ModelError(f"model '{self.card.name}' takes batches of exactly {self.static_batch}; "
                             f"set pose.batch <= {self.static_batch}")
        if self.torch_inputs is not None:
            x = self.torch_inputs.model_input(crops, self.normalisation, self.static_batch)
            outputs = self.run({self._input_name: x})
            return {name: to_numpy(value[:n]) for name, value in outputs.items()}
        x = self.model_input(crops, self._input_dtype)
        if self.static_batch is not None:
            x = np.concatenate([x, np.zeros((self.static_batch - n, *x.shape[1:]), x.dtype)])
        outputs = self.run({self._input_name: x})
        return {name: value[:n] for name, value in outputs.items()}

    def _crops(self, persons_of: list[tuple[np.ndarray, np.ndarray]]
               ) -> tuple["np.ndarray | torch.Tensor", np.ndarray]:
        """Crops of every (frame, boxes) pair in one batch, and their frame->crop matrices [N,2,3].

        numpy path: uint8 [N,H,W,3] (OpenCV); torch path: float [N,3,H,W] tensors on its device.
        """
        if self.torch_inputs is None:
            pairs = [warp_crops(frame, boxes, self.input_hw, self.expand) for frame, boxes in persons_of]
            return np.concatenate([c for c, _ in pairs]), np.concatenate([m for _, m in pairs])
        aspect = self.input_hw[1] / self.input_hw[0]
        matrices = [crop_matrices(*box_to_centre_scale(boxes, aspect, self.expand), self.input_hw)
                    for _, boxes in persons_of]
        crops = self.torch_inputs.crops([frame for frame, _ in persons_of], matrices, self.input_hw)
        return crops, np.concatenate(matrices)

    def _run(self, crops: "np.ndarray | torch.Tensor") -> tuple[np.ndarray, np.ndarray]:
        outputs = self.infer(crops)
        flipped = None
        if self.flip_test:
            mirrored = np.ascontiguousarray(crops[:, :, ::-1]) if self.torch_inputs is None else crops.flip(3)
            flipped = self.infer(mirrored)
        return self.decode(outputs, flipped)

    def _empty(self) -> Poses:
        return Poses.empty(self.format.num_keypoints, self.format.name)
