"""YOLO-pose person detector: whole frames in, persons with boxes and keypoints out.

Frames are letterboxed to the model's input (square, or the frame's aspect with the dynamic model
when `detector.rectangular`), frames of equal size are batched up to `detector.batch`, and the
raw output is decoded with `engines.families.yolo11.decode`. With OpenVINO the uint8 canvases go in
as they are and the model normalises them (`Engine.accept_images`; `engine.preprocess = "numpy"`
feeds numpy's float NCHW instead). With TensorRT (or `engine.preprocess = "torch"`)
the letterbox and normalisation run in torch on the engine's device (`engines.backends.torch_inputs`) and
only the anchors above the score threshold are copied back for decoding.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from posestream.engines.model_card import ModelCard
from posestream.engines.preprocess import TO_INPUT, Letterbox, canvas_size, letterbox
from posestream.engines.runner import ModelRunner
from posestream.engines.backends.torch_inputs import rows_above
from posestream.engines.families.yolo11.decode import decode_yolo_pose, to_frame_pixels
from posestream.stream.core.contracts import Detector
from posestream.stream.core.results import Poses
from posestream.stream.core.settings import Settings


class YoloDetector(ModelRunner, Detector):
    """`YoloDetector(settings)`: the `[detector]` table picks the input size, thresholds and batch;
    the model (`model.name`) is opened and verified by `ModelRunner`."""

    tasks = ("detector+pose",)

    def __init__(self, settings: Settings) -> None:
        cfg = settings.detector
        self.size = cfg.input_size
        self.rectangular = cfg.rectangular
        self.score_threshold = cfg.score_threshold
        self.iou_threshold = cfg.iou_threshold
        self.max_persons = cfg.max_persons
        self.batch = cfg.batch
        super().__init__(settings, settings.model.name, cfg.threads)
        try:
            self.pad = self.card.letterbox_pad
            self.num_keypoints = int(self.card.output.get("num_keypoints", 17))
        except BaseException:
            self.close()
            raise
        self.format = self.card.keypoint_format
        self.take_images(settings, TO_INPUT)  # what `to_input` computes; uint8 canvases in with OpenVINO
        self.static_batch = self.engine.inputs[0].shape[0] == 1
        self._input_name = self.engine.inputs[0].name
        self._output_name = self.engine.outputs[0].name
        # OpenVINO keeps `requests` inferences running in the background (numpy pre-processing only)
        overlaps = self.torch_inputs is None and hasattr(self.engine, "submit")
        self.in_flight = int(getattr(self.engine, "requests", 0)) if overlaps else 0
        self._started: dict[int, tuple[Letterbox, int, int]] = {}  # tag -> where its frame went
        self._next_tag = 0

    def choose_variant(self, card: ModelCard) -> str:
        """The static 640/320 export for square inputs of that size, else the dynamic one."""
        static = {640: "640", 320: "320"}.get(self.size) if not self.rectangular else None
        return static or "dynamic"

    def canvas_for(self, height: int, width: int) -> tuple[int, int]:
        return canvas_size(height, width, self.size, rectangular=self.rectangular)

    def detect(self, frames: Sequence[np.ndarray]) -> list[Poses]:
        if self.in_flight and len(frames) > 1:  # overlapped: frame i+1 is letterboxed while i runs
            return [self.finish(handle) for handle in [self.start(frame) for frame in frames]]
        results: list[Poses | None] = [None] * len(frames)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, frame in enumerate(frames):
            groups.setdefault(frame.shape[:2], []).append(i)
        step = 1 if self.static_batch else self.batch
        for (height, width), indices in groups.items():
            hw = self.canvas_for(height, width)
            for start in range(0, len(indices), step):
                chunk = indices[start:start + step]
                rows, boxes = self._infer([frames[i] for i in chunk], hw)
                for row, i in enumerate(chunk):
                    results[i] = self._to_poses(rows[row], boxes[row], height, width)
        return results  # type: ignore[return-value]

    def _infer(self, frames: list[np.ndarray], hw: tuple[int, int]) -> tuple[list[np.ndarray], list[Letterbox]]:
        """Raw outputs [5 + 3K, anchors] of same-sized frames, and where each frame sits on the canvas."""
        if self.torch_inputs is None:
            boxed = [letterbox(frame, hw, self.pad) for frame in frames]
            output = self.run({self._input_name: self.model_input([c for c, _ in boxed])})[self._output_name]
            return list(output), [b for _, b in boxed]
        x, box = self.torch_inputs.letterboxed(frames, hw, self.pad)
        output = self.run({self._input_name: x})[self._output_name]
        # decoding starts by dropping the anchors below the threshold: drop them before the copy
        return rows_above(output, 4, self.score_threshold), [box] * len(frames)  # one copy per batch

    # -- overlapped frames (OpenVINO's async requests): see `Detector.in_flight` --------------------
    def start(self, frame: np.ndarray) -> object:
        if not self.in_flight:
            return super().start(frame)
        height, width = frame.shape[:2]
        canvas, box = letterbox(frame, self.canvas_for(height, width), self.pad)
        tag = self._next_tag
        self._next_tag += 1
        self.engine.submit(tag, {self._input_name: self.model_input([canvas])})
        self._started[tag] = (box, height, width)
        return tag

    def finished(self, handle: object) -> bool:
        return not self.in_flight or self.engine.finished(handle)

    def finish(self, handle: object) -> Poses:
        if not self.in_flight:
            return super().finish(handle)
        box, height, width = self._started.pop(handle)
        return self._to_poses(self.engine.collect(handle)[self._output_name][0], box, height, width)

    def _to_poses(self, output: np.ndarray, box, height: int, width: int) -> Poses:
        boxes, scores, keypoints = decode_yolo_pose(output, self.score_threshold, self.iou_threshold,
                                                    self.max_persons, self.num_keypoints)
        xywh, scores, keypoints = to_frame_pixels(boxes, scores, keypoints, box, height, width)
        return Poses(xywh, scores, keypoints, scores.copy(), format=self.format)
