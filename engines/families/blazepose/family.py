"""The BlazePose family: MediaPipe's landmark models imported from the PyPI wheel
(`mediapipe_import.py`), the `blazepose` SPPE (`pose.py`) with whole-body hands and face
(`wholebody.py`), and the kind check (`check.py`)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from posestream.engines.family import Family

if TYPE_CHECKING:
    from posestream.engines.model_card import ModelCard
    from posestream.stream.core.settings import Settings

_PREPARE = "posestream.engines.families.blazepose.family:prepare"
LANDMARK_MODELS = ("blazepose-full", "blazepose-heavy", "blazepose-lite", "mediapipe-hand",
                   "mediapipe-face")  # mediapipe_import.MODELS

FAMILY = Family(
    name="blazepose",
    checks={"pose-landmarks": "posestream.engines.families.blazepose.check:check_outputs"},
    models=dict.fromkeys(LANDMARK_MODELS, _PREPARE),
)


def prepare(settings: "Settings", name: str, source: Path | None, force: bool) -> "ModelCard":
    """One MediaPipe landmark model, rebuilt from the wheel and exported to ONNX in the cache."""
    from posestream.engines.families.blazepose.mediapipe_import import prepare_landmark_model
    from posestream.stream.core.config import home_dir

    return prepare_landmark_model(name, home_dir(settings), source, opset=settings.model.opset,
                                  threads=settings.engine.intra_op_threads, force=force)
