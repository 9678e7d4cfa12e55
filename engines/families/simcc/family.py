"""The SimCC family: the `simcc` SPPE (`pose.py`: RTMPose-style ONNX models), SimCC decoding
(`decode.py`) and kind check (`check.py`)."""
from __future__ import annotations

from posestream.engines.family import Family

FAMILY = Family(
    name="simcc",
    checks={"pose-simcc": "posestream.engines.families.simcc.check:check_outputs"},
)
