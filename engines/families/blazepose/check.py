"""Kind check of `pose-landmarks` models (MediaPipe): the card's `output.names` exist, the first is [B, L]
with at least K x 3 values."""
from __future__ import annotations

from posestream.engines.backends.base import TensorSpec
from posestream.engines.model_card import ModelCard
from posestream.engines.model_check import shape_text


def check_outputs(outputs: list[TensorSpec], keypoints: int, size: tuple[int | None, int | None],
                  card: ModelCard) -> str | None:
    names = card.output.get("names") or []
    by_name = {spec.name: spec for spec in outputs}
    missing = [name for name in names if name not in by_name]
    if not names or missing:
        return (f"card output.names {names} do not match the model's outputs "
                f"{', '.join(by_name)}")
    spec = by_name[names[0]]
    length = spec.shape[-1]
    if len(spec.shape) != 2 or (length is not None and length < 3 * keypoints):
        return f"output '{spec.name}' is {shape_text(spec)}, expected [B, L] with at least {keypoints} x 3 values"
    return None
