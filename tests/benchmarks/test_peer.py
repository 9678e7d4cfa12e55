"""The head-to-head with the peer: its calibration set is built from local data only, a missing
peer is one clear line, variants parse, the table shows ratios per round. No timing is asserted."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from posestream.benchmarks import peer
from posestream.stream.core.config import load_config
from posestream.stream.core.errors import InputError


def test_calibration_set_is_local_yolo_pose_data(shared: Path, tmp_path: Path) -> None:
    yaml = peer._coco_calibration_set(load_config(), tmp_path / "calib")
    text = yaml.read_text()
    assert f"path: {tmp_path / 'calib'}" in text and "kpt_shape: [17, 3]" in text
    gt = json.loads((shared / "data/coco/person_keypoints.json").read_text())
    images = sorted((tmp_path / "calib/images").iterdir())
    assert len(images) == len(gt["images"]) == 8
    assert all(p.resolve().parent == (shared / "data/coco/images").resolve() for p in images)
    people = 0
    for label in (tmp_path / "calib/labels").glob("*.txt"):
        for line in label.read_text().split("\n"):
            if line:
                values = np.array(line.split(), dtype=float)
                assert values.shape == (1 + 4 + 17 * 3,) and values[0] == 0
                assert (values[1:5] >= 0).all() and (values[1:5] <= 1).all()
                people += 1
    expected = sum(1 for a in gt["annotations"] if not a.get("iscrowd") and a.get("num_keypoints", 0) > 0)
    assert people == expected > 0


def test_missing_peer_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ultralytics" else real(name, *a))
    reason = peer.peer_available()
    assert reason is not None and reason.startswith("peer not installed") and "pip install ultralytics" in reason


def test_peer_interpreter_without_ultralytics_is_named() -> None:
    """`--peer-python` points at another venv; one without ultralytics (here: a Python without it) is
    named in the line, and a path that is no interpreter is the same line, not a traceback."""
    import shutil

    other = shutil.which("python3", path="/usr/bin") or "/usr/bin/python3"
    for python in (other, "/nonexistent/bin/python"):
        reason = peer.peer_available(python)
        assert reason is not None and reason.startswith("peer not installed") and python in reason


@pytest.mark.parametrize("spec, expected", [
    ("fp32=engine.precision=fp32", ("fp32", ["engine.precision=fp32"])),
    ("ort=engine.backend=onnxruntime,detector.batch=1", ("ort", ["engine.backend=onnxruntime", "detector.batch=1"])),
    ("plain=", ("plain", [])),
])
def test_variants_parse(spec: str, expected: tuple[str, list[str]]) -> None:
    assert peer.parse_variant(spec) == expected


def test_bad_variant_is_one_clear_error() -> None:
    with pytest.raises(InputError, match="--variant expects"):
        peer.parse_variant("no-equals-sign")


def test_table_shows_rounds_ratio_and_target() -> None:
    result = {"video": "clip.mp4", "clip_frames": 720, "rounds": 2, "cpus": 2, "load_avg": [1.0],
              "peer": {"status": "ok"},
              "rows": [{"name": peer.DEFAULT_NAME, "runs": [{"fps": 60.0, "loop_fps": 70.0}, {"fps": 66.0}],
                        "fps_median": 63.0, "ratio_to_peer": 1.26, "ratio_to_peer_per_round": [1.2, 1.32]},
                       {"name": peer.PEER_NAME, "runs": [{"fps": 50.0}, {"fps": 50.0}], "fps_median": 50.0}],
              "target": {"what": "default / peer >= 1.2", "measured": 1.26, "met": True}}
    lines = peer.format_result(result)
    assert any("60.0 66.0" in line and "1.26x" in line for line in lines)
    assert lines[-1].startswith("target default / peer >= 1.2: 1.26x met")


def test_posestream_row_says_what_each_stage_cost(shared: Path, prepared_home: Path, tmp_path: Path) -> None:
    """A real `posestream run` of the 5-frame street clip: the row has the whole command's FPS and,
    per stage, the busy share and the CPU per frame the run's metrics reported (the windows' cost
    was found from these)."""
    clip = shared / "data" / "video" / "street_walk_5f.mp4"
    row = peer.run_posestream(clip, 5, tmp_path, [], "row")
    assert row["fps"] > 0 and row["persons_per_frame"] > 0
    assert set(row["cpu_ms_per_frame"]) == set(row["busy_pct"]) >= {"source0", "detect", "track", "sinks"}
    assert row["cpu_ms_per_frame"]["detect"] > 1.0  # a 5-frame run of the INT8 detector, start-up included
    assert all(value >= 0 for value in row["cpu_ms_per_frame"].values())
