"""The heatmap family: the `heatmap` SPPE (`pose.py`: SimpleBaseline / FastPose / HRNet-style ONNX
models), heatmap decoding (`decode.py`), kind check (`check.py`), and AlphaPose's FastPose network
(`fastpose.py`) with its checkpoint importer (`fastpose_import.py`)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from posestream.engines.family import Family

if TYPE_CHECKING:
    from posestream.stream.core.settings import Settings

FAMILY = Family(
    name="heatmap",
    checks={"pose-heatmap": "posestream.engines.families.heatmap.check:check_outputs"},
    importers={"alphapose-fastpose": "posestream.engines.families.heatmap.family:import_fastpose"},
)


def import_fastpose(settings: "Settings", path: Path, fmt: str, name: str | None) -> Path:
    """An AlphaPose FastPose checkpoint into the cache (`posestream models import alphapose-fastpose`)."""
    from posestream.engines.families.heatmap.fastpose_import import import_alphapose_fastpose
    from posestream.stream.core.config import home_dir

    return import_alphapose_fastpose(path, fmt, home_dir(settings), name=name, opset=settings.model.opset,
                                     threads=settings.engine.intra_op_threads)
