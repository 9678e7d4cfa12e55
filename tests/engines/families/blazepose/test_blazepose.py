"""The `blazepose` top-down plugin on real images: BlazePose GHUM full rebuilt from the mediapipe
wheel, aligned crops, output formats, the pose flag and the detector-keypoint merge."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from posestream.engines.families.blazepose.mediapipe_import import prepare_landmark_model
from posestream.engines.families.blazepose.pose import BlazePose, body_angles, to_format
from posestream.engines.topdown import merge_keypoints
from posestream.stream.chain import PoseChain
from posestream.stream.core.settings import Settings
from posestream.stream.core.keypoints import COCO17
from posestream.stream.core.results import Poses


@pytest.fixture(scope="module")
def blazepose_home(prepared_home: Path) -> Path:
    prepare_landmark_model("blazepose-full", prepared_home)
    return prepared_home


def _topdown(config: Settings, **pose: object) -> Settings:
    return config.with_overrides({"pose": {"mode": "topdown", "plugin": "blazepose", "model": "blazepose-full",
                                           **pose}})


def _image(shared: Path, name: str) -> np.ndarray:
    return cv2.imread(str(shared / "data/coco/images" / name))


def _gt_keypoints(shared: Path, image_id: int) -> np.ndarray:
    gt = json.loads((shared / "data/coco/person_keypoints.json").read_text())
    return np.array([np.reshape(a["keypoints"], (17, 3)) for a in gt["annotations"]
                     if a["image_id"] == image_id and a.get("num_keypoints", 0) > 0], dtype=float)


def test_skier_keypoints_match_ground_truth(blazepose_home: Path, config: Settings, shared: Path):
    """COCO 785: one large skier; every labelled keypoint within 8 % of the person's height."""
    with PoseChain(_topdown(config)) as chain:
        poses = chain.process([_image(shared, "000000000785.jpg")])[0]
    assert len(poses) == 1 and poses.format == "coco17"
    truth = _gt_keypoints(shared, 785)[0]
    seen = truth[:, 2] > 0
    height = np.ptp(truth[seen, 1])
    error = np.linalg.norm(poses.keypoints[0, seen, :2] - truth[seen, :2], axis=1)
    assert np.median(error) < 0.04 * height and error.max() < 0.08 * height, error


def test_rotated_person_is_aligned(blazepose_home: Path, config: Settings, shared: Path):
    """Turned by 90 degrees, the skier's crop is turned upright from the detector's shoulders and
    hips, and the landmarks mapped back land where the upright run put them (turned likewise)."""
    image = _image(shared, "000000000785.jpg")
    with PoseChain(_topdown(config)) as chain:
        upright = chain.process([image])[0]
        turned = chain.process([cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)])[0]
        detections = chain.detector.detect([cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)])[0]
    angle = body_angles(detections.keypoints[:1])[0]
    assert abs(abs(np.degrees(angle)) - 90) < 25, np.degrees(angle)
    h = image.shape[0]
    # clockwise: (x, y) -> (h - 1 - y, x)
    expected = np.stack([h - 1 - upright.keypoints[0, :, 1], upright.keypoints[0, :, 0]], -1)
    assert len(turned) == 1
    error = np.linalg.norm(turned.keypoints[0, :, :2] - expected, axis=1)
    assert np.median(error) < 12, error


def test_pose_flag_rejects_a_box_without_a_person(blazepose_home: Path, config: Settings, shared: Path):
    image = _image(shared, "000000000785.jpg")
    sky = Poses(np.array([[10.0, 10.0, 120.0, 120.0]]), np.array([0.9]), np.zeros((1, 17, 3)),
                np.array([0.9]), None, "coco17")
    with BlazePose(_topdown(config, landmark_min_presence=0.5)) as strict, \
            BlazePose(_topdown(config, landmark_min_presence=0.0)) as lenient:
        assert len(strict.estimate([image], [sky])[0]) == 0
        assert len(lenient.estimate([image], [sky])[0]) == 1


@pytest.mark.parametrize("fmt, count", [("coco17", 17), ("halpe26", 26), ("blazepose33", 33)])
def test_output_formats(blazepose_home: Path, config: Settings, shared: Path, fmt: str, count: int):
    with PoseChain(_topdown(config, landmark_format=fmt)) as chain:
        poses = chain.process([_image(shared, "000000000785.jpg")])[0]
    assert poses.format == fmt and poses.keypoints.shape == (1, count, 3)
    if fmt == "halpe26":
        assert np.all(poses.keypoints[0, 22:24, 2] <= 1e-5)  # small toes: none in BlazePose (NMS floors at 1e-5)
        assert np.all(poses.keypoints[0, [20, 21, 24, 25], 2] > 0)


def test_halpe26_derived_points():
    points = np.zeros((1, 33, 2))
    points[0, [2, 5]] = [[10, 20], [20, 20]]      # eyes
    points[0, [9, 10]] = [[12, 30], [18, 30]]     # mouth
    points[0, [11, 12]] = [[0, 50], [30, 50]]     # shoulders
    points[0, [23, 24]] = [[5, 100], [25, 100]]   # hips
    kp = to_format(points, np.full((1, 33), 0.9), "halpe26")[0]
    assert kp[17, :2].tolist() == [15.0, 5.0]     # head: eyes + 1.5 x (eyes - mouth)
    assert kp[18, :2].tolist() == [15.0, 50.0]    # neck
    assert kp[19, :2].tolist() == [15.0, 100.0]   # hip centre
    assert COCO17.num_keypoints == to_format(points, np.ones((1, 33)), "coco17").shape[1]


def test_merge_keeps_the_more_confident_point():
    """`pose.landmark_merge` (one function for every top-down SPPE): `confident` takes the detector's
    point where it scores higher, `average` weights both by score, a detector without COCO points
    changes nothing."""
    ours = np.zeros((1, 17, 3))
    ours[0, :, 2] = 0.5
    theirs = np.ones((1, 17, 3))
    theirs[0, :8, 2] = 0.2
    merged = merge_keypoints(ours, theirs, "confident")
    assert np.all(merged[0, :8, :2] == 0) and np.all(merged[0, 8:, :2] == 1)
    averaged = merge_keypoints(ours, theirs, "average")
    np.testing.assert_allclose(averaged[0, :8, :2], 0.2 / 0.7)
    np.testing.assert_allclose(averaged[0, 8:, 2], 1.0)
    assert merge_keypoints(ours, np.ones((1, 4, 3)), "average") is ours


def test_eval_cli_reports_ap(blazepose_home: Path, shared: Path):
    """`posestream eval` with the plugin on the shared COCO set (0.456 measured; one-stage 0.687)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "posestream", "eval", "--gt",
                          str(shared / "data/coco/person_keypoints.json"), "--images",
                          str(shared / "data/coco/images"), "--set", "pose.mode=topdown",
                          "--set", "pose.plugin=blazepose", "--set", "pose.model=blazepose-full"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    ap = float(next(line for line in out.stdout.splitlines() if "IoU=0.50:0.95 | area=   all" in line
                    and "Precision" in line).rsplit("=", 1)[1])
    assert ap >= 0.40


def test_body_angle_from_the_mediapipe_detectors_axis():
    """The `mediapipe-person` detector's hip centre -> body-circle point is the body's up."""
    upright = [[100, 200, 1], [100, 150, 1], [0, 0, 0], [0, 0, 0]]
    leaning = [[100, 200, 1], [150, 150, 1], [0, 0, 0], [0, 0, 0]]  # 45 degrees to the right
    np.testing.assert_allclose(body_angles(np.array([upright, leaning], dtype=float)), [0.0, np.pi / 4])
