"""Kind check of `pose-simcc` models: two outputs [B, K, L]; with `output.split_ratio` the lengths are
W*r and H*r."""
from __future__ import annotations

from posestream.engines.backends.base import TensorSpec
from posestream.engines.model_card import ModelCard
from posestream.engines.model_check import fits, shape_text


def check_outputs(outputs: list[TensorSpec], keypoints: int, size: tuple[int | None, int | None],
                  card: ModelCard) -> str | None:
    if len(outputs) != 2:
        return f"expected two SimCC outputs (x, y), the model has {len(outputs)}"
    for spec in outputs:
        if len(spec.shape) != 3 or not fits(spec.shape[1], keypoints):
            return f"output '{spec.name}' is {shape_text(spec)}, expected [B, {keypoints}, L]"
    ratio = card.output.get("split_ratio")
    if ratio and None not in size:
        wanted = sorted(int(round(s * ratio)) for s in size)
        lengths = [spec.shape[2] for spec in outputs]
        if None not in lengths and sorted(lengths) != wanted:
            return (f"SimCC lengths are {lengths}, expected W*{ratio} and H*{ratio} = "
                    f"{wanted[::-1]}")
    return None
