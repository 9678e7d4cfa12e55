"""Kind check of `pose-heatmap` models: one output [B, K, H/stride, W/stride] (`output.stride`, when given)."""
from __future__ import annotations

from posestream.engines.backends.base import TensorSpec
from posestream.engines.model_card import ModelCard
from posestream.engines.model_check import fits, shape_text


def check_outputs(outputs: list[TensorSpec], keypoints: int, size: tuple[int | None, int | None],
                  card: ModelCard) -> str | None:
    if len(outputs) != 1:
        return f"expected one heatmap output, the model has {len(outputs)}"
    spec = outputs[0]
    if len(spec.shape) != 4:
        return f"output '{spec.name}' is {shape_text(spec)}, expected heatmaps [B, {keypoints}, H, W]"
    if not fits(spec.shape[1], keypoints):
        return (f"output '{spec.name}' is {shape_text(spec)}: {spec.shape[1]} heatmap channels, "
                f"but format '{card.keypoint_format}' has {keypoints} keypoints")
    stride = card.output.get("stride")
    if stride:
        wanted = tuple(None if s is None else s // stride for s in size)
        if not (fits(spec.shape[2], wanted[0]) and fits(spec.shape[3], wanted[1])):
            return (f"output '{spec.name}' is {shape_text(spec)}, expected {wanted[0]}x{wanted[1]} "
                    f"heatmaps (input {size[0]}x{size[1]} at stride {stride})")
    return None
