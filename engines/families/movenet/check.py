"""The kind check of MoveNet models (`check_model_kind` runs it at load time): named NCHW heads on
one stride-4 grid; a file that emits something else is one `ModelError`, not garbage keypoints."""
from __future__ import annotations

from posestream.engines.backends.base import TensorSpec
from posestream.engines.model_card import ModelCard

STRIDE = 4


def head_channels(keypoints: int, multi: bool) -> dict[str, int]:
    channels = {"heatmaps": keypoints, "centers": 1, "regression": 2 * keypoints, "offsets": 2 * keypoints}
    if multi:
        channels.update(box_offsets=2, box_scales=2)
    return channels


def check_movenet(outputs: list[TensorSpec], keypoints: int, size: tuple[int | None, int | None],
                  card: ModelCard) -> str | None:
    """None when the outputs are MoveNet's heads, else what does not fit."""
    wanted = head_channels(keypoints, card.task == "detector+pose-movenet")
    by_name = {spec.name: spec for spec in outputs}
    if sorted(by_name) != sorted(wanted):
        return f"outputs {', '.join(by_name)}; MoveNet heads are {', '.join(wanted)}"
    grid = tuple(None if s is None else s // STRIDE for s in size)
    for name, channels in wanted.items():
        shape = by_name[name].shape
        if len(shape) != 4 or shape[1] not in (None, channels) or any(
                s is not None and g is not None and s != g for s, g in zip(shape[2:], grid)):
            return (f"output '{name}' is {list(shape)}, expected [B, {channels}, {grid[0]}, {grid[1]}] "
                    f"(input {size[0]}x{size[1]} at stride {STRIDE})")
    return None
