"""Kind check of `detector+pose` (YOLO-pose) models: one output [B, 5 + 3K, N] (box cx, cy, w, h, score,
then K x (x, y, conf))."""
from __future__ import annotations

from posestream.engines.backends.base import TensorSpec
from posestream.engines.model_card import ModelCard
from posestream.engines.model_check import fits, shape_text


def check_outputs(outputs: list[TensorSpec], keypoints: int,
                  size: tuple[int | None, int | None], card: ModelCard) -> str | None:
    rows = 5 + 3 * keypoints
    if len(outputs) != 1:
        return f"expected one output [B, {rows}, N], the model has {len(outputs)}"
    spec = outputs[0]
    if len(spec.shape) != 3 or not fits(spec.shape[1], rows):
        return (f"output '{spec.name}' is {shape_text(spec)}, expected [B, {rows}, N] "
                f"(box, score and {keypoints} x (x, y, conf))")
    return None
