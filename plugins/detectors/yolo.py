"""YOLO-pose person detector: whole frames in, persons with boxes and keypoints out.

Frames are letterboxed to the model's input (square, or the frame's aspect with the dynamic model
when `detector.rectangular`), frames of equal size are batched up to `detector.batch`, and the
raw output is decoded with `engines.yolo_decode`. With TensorRT (or `engine.preprocess = "torch"`)
the letterbox and normalisation run in torch on the engine's device (`engines.torch_inputs`) and
only the anchors above the score threshold are copied back for decoding.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from posestream.engines.model_check import check_model_kind
from posestream.engines.models import load_card, open_engine
from posestream.engines.preprocess import Letterbox, canvas_size, letterbox, to_input
from posestream.engines.torch_inputs import rows_above, torch_inputs_for
from posestream.engines.yolo_decode import decode_yolo_pose, to_frame_pixels
from posestream.stream.core.config import Config, check_range
from posestream.stream.core.errors import ModelError
from posestream.stream.core.results import Poses


class YoloDetector:
    def __init__(self, config: Config, threads: int | None = None) -> None:
        cfg = config["detector"]
        check_range("detector.input_size", cfg["input_size"], 64, 4096)
        if cfg["input_size"] % 32:
            raise ModelError(f"detector.input_size must be a multiple of 32, got {cfg['input_size']}")
        check_range("detector.score_threshold", cfg["score_threshold"], 0.0, 1.0)
        check_range("detector.iou_threshold", cfg["iou_threshold"], 0.0, 1.0)
        check_range("detector.max_persons", cfg["max_persons"], 1, 10000)
        check_range("detector.batch", cfg["batch"], 1, 256)
        self.size = cfg["input_size"]
        self.rectangular = cfg["rectangular"]
        self.score_threshold = cfg["score_threshold"]
        self.iou_threshold = cfg["iou_threshold"]
        self.max_persons = cfg["max_persons"]
        self.batch = cfg["batch"]
        card, directory = load_card(config, config["model"]["name"])
        if card.task != "detector+pose":
            raise ModelError(f"model '{card.name}' is a {card.task} model, not a detector")
        self.pad = int(card.input.get("letterbox_pad", 114))
        self.num_keypoints = int(card.output.get("num_keypoints", 17))
        self.format = card.keypoint_format
        static = {640: "640", 320: "320"}.get(self.size) if not self.rectangular else None
        self.variant = static or "dynamic"
        self.engine = open_engine(config, card, directory, self.variant,
                                  cfg["threads"] if threads is None else threads)
        try:
            check_model_kind(self.engine, card)
            self._torch = torch_inputs_for(config, self.engine)  # None: numpy/OpenCV pre-processing
        except BaseException:  # e.g. a bad engine.preprocess: do not leak the session
            self.engine.close()
            raise
        self.static_batch = self.engine.inputs[0].shape[0] == 1

    def canvas_for(self, height: int, width: int) -> tuple[int, int]:
        return canvas_size(height, width, self.size, rectangular=self.rectangular)

    def detect(self, frames: Sequence[np.ndarray]) -> list[Poses]:
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
        if self._torch is None:
            boxed = [letterbox(frame, hw, self.pad) for frame in frames]
            return list(self.engine.run1(to_input([c for c, _ in boxed]))), [b for _, b in boxed]
        x, box = self._torch.letterboxed(frames, hw, self.pad)
        output = self._torch.run({self.engine.inputs[0].name: x})[self.engine.outputs[0].name]
        # decoding starts by dropping the anchors below the threshold: drop them before the one copy
        return rows_above(output, 4, self.score_threshold), [box] * len(frames)

    def _to_poses(self, output: np.ndarray, box, height: int, width: int) -> Poses:
        boxes, scores, keypoints = decode_yolo_pose(output, self.score_threshold, self.iou_threshold,
                                                    self.max_persons, self.num_keypoints)
        xywh, keypoints = to_frame_pixels(boxes, keypoints, box, height, width)
        return Poses(xywh, scores, keypoints, scores.copy(), format=self.format)

    def close(self) -> None:
        self.engine.close()
