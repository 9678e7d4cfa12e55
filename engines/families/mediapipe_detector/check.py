"""The kind check of anchor (SSD) detectors: `scores` [B, N, 1] and `regressors` [B, N, 4 + 2P]
with N = the card's anchor count, so a file that emits something else fails at load time."""
from __future__ import annotations

from posestream.engines.backends.base import TensorSpec
from posestream.engines.model_card import ModelCard


def check_anchor_detector(outputs: list[TensorSpec], keypoints: int, size: tuple[int | None, int | None],
                          card: ModelCard) -> str | None:
    """None when the outputs fit the card's anchors, else what does not fit."""
    anchors = card.output.get("anchors")
    by_name = {spec.name: spec for spec in outputs}
    if sorted(by_name) != ["regressors", "scores"]:
        return f"outputs {', '.join(by_name)}; an anchor detector has scores and regressors"
    for name, width in (("scores", 1), ("regressors", 4 + 2 * keypoints)):
        shape = by_name[name].shape
        if len(shape) != 3 or shape[1] not in (None, anchors) or shape[2] not in (None, width):
            return f"output '{name}' is {list(shape)}, expected [B, {anchors}, {width}]"
    return None
