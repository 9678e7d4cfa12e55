"""Whole-body (Halpe-136) mode of the `blazepose` plugin on real images: hand and face points against
the Halpe-136 ground truth, shapes, the size gate, the derived 468 -> 68 face table."""
from __future__ import annotations

import ast
import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from posestream.engines.families.blazepose.mediapipe_import import WHEEL, prepare_landmark_model
from posestream.engines.wheels import fetch_wheel
from posestream.engines.families.blazepose import wholebody
from posestream.engines.crops import crop_to_frame, rotated_crop_matrices, warp_with
from posestream.stream.chain import PoseChain
from posestream.stream.core.keypoints import HALPE136
from posestream.stream.core.settings import Settings
from posestream.stream.render import draw_poses

FACE, LEFT, RIGHT = slice(26, 94), slice(94, 115), slice(115, 136)


@pytest.fixture(scope="module")
def wholebody_home(prepared_home: Path) -> Path:
    for name in ("blazepose-full", "mediapipe-hand", "mediapipe-face"):
        prepare_landmark_model(name, prepared_home)
    return prepared_home


def _wholebody(config: Settings, **pose: object) -> Settings:
    """Whole-body top-down on the FP32 detector: the bounds below were measured with its boxes and
    keypoints (the INT8 default moves the hand crops a little, and gloved hands are sensitive)."""
    return config.with_overrides({"engine.precision": "fp32",
                                  "pose": {"mode": "topdown", "plugin": "blazepose", "model": "blazepose-full",
                                           "landmark_format": "halpe136", **pose}})


def _errors(shared: Path, config: Settings) -> dict[str, list[float]]:
    """Per annotated part (face, hand) of every ground-truth person of at least 100 px: the median
    distance of its labelled points to ours, relative to the box's longer side."""
    gt = json.loads((shared / "data/halpe/halpe136_keypoints.json").read_text())
    errors: dict[str, list[float]] = {"face": [], "hand": []}
    with PoseChain(config) as chain:
        for image in gt["images"]:
            poses = chain.process([cv2.imread(str(shared / "data/coco/images" / image["file_name"]))])[0]
            assert poses.format == "halpe136" and poses.keypoints.shape == (len(poses), 136, 3)
            for person in (a for a in gt["annotations"] if a["image_id"] == image["id"]):
                size = max(person["bbox"][2:])
                if size < 100:
                    continue
                truth = np.reshape(person["keypoints"], (136, 3))
                centre = np.add(person["bbox"][:2], np.divide(person["bbox"][2:], 2))
                ours = poses.keypoints[np.argmin(np.linalg.norm(
                    poses.boxes[:, :2] + poses.boxes[:, 2:] / 2 - centre, axis=1))]
                for part, where in (("face", FACE), ("hand", LEFT), ("hand", RIGHT)):
                    seen = truth[where, 2] > 0
                    if seen.any():
                        distance = np.linalg.norm(ours[where][seen, :2] - truth[where][seen, :2], axis=1)
                        errors[part].append(float(np.median(distance)) / size)
    return errors


def test_hands_and_face_land_on_the_ground_truth(wholebody_home: Path, config: Settings, shared: Path):
    """4 Halpe-136 images, every person >= 100 px. Measured: median over faces 0.9 % of the
    person's size (9 faces; 0.3-5 %), over hands 2.9 % (11 gloved hands; 0.6-15 %). A swapped
    left/right hand or a wrong face or finger order gives several times that."""
    errors = _errors(shared, _wholebody(config))
    assert len(errors["face"]) >= 8 and len(errors["hand"]) >= 10
    assert np.median(errors["face"]) < 0.02, errors["face"]
    assert np.median(errors["hand"]) < 0.05, errors["hand"]


def test_small_persons_get_no_hands_or_face(wholebody_home: Path, config: Settings, shared: Path):
    image = cv2.imread(str(shared / "data/coco/images/000000197388.jpg"))
    with PoseChain(_wholebody(config, wholebody_min_size=200.0, wholebody_min_flag=0.0)) as chain:
        poses = chain.process([image])[0]
    sides = poses.boxes[:, 2:].max(1)
    small, big = sides < 200, sides >= 200
    assert small.any() and big.any()
    extra = np.r_[26:136]
    assert np.all(poses.keypoints[small][:, extra, 2] <= 1e-5)  # 0, floored at 1e-5 by the pose NMS
    assert np.all(poses.keypoints[big][:, FACE, 2] > 0)  # flag gate off: every face scored
    wrists = poses.keypoints[big][:, [9, 10], None, :2]  # placeholders sit on the wrists
    hands = np.stack([poses.keypoints[big][:, LEFT, :2], poses.keypoints[big][:, RIGHT, :2]], 1)
    assert np.all(np.abs(hands - wrists).max(axis=(2, 3)) > 1)
    assert np.all(poses.keypoints[small][:, :26, 2].max(1) > 0)  # the body is still there


def test_low_flags_zero_the_points(wholebody_home: Path, config: Settings, shared: Path):
    image = cv2.imread(str(shared / "data/coco/images/000000197388.jpg"))
    with PoseChain(_wholebody(config, wholebody_min_flag=1.0)) as chain:
        poses = chain.process([image])[0]
    assert len(poses) and np.all(poses.keypoints[:, 26:, 2] <= 1e-5)


def test_hand_points_follow_the_hand_order(wholebody_home: Path, config: Settings, shared: Path):
    """MediaPipe's 21 hand points are in Halpe's order: on the clearest ground-truth hand (COCO
    197388, the skier on the right; our error there 1.3 px, 88 px to our other hand) 17 of the 19
    labelled points are nearest to our point of the same index."""
    gt = json.loads((shared / "data/halpe/halpe136_keypoints.json").read_text())
    person = next(a for a in gt["annotations"] if a["image_id"] == 197388 and a["bbox"][0] > 500)
    truth = np.reshape(person["keypoints"], (136, 3))[RIGHT]
    with PoseChain(_wholebody(config)) as chain:
        poses = chain.process([cv2.imread(str(shared / "data/coco/images/000000197388.jpg"))])[0]
    centre = np.add(person["bbox"][:2], np.divide(person["bbox"][2:], 2))
    ours = poses.keypoints[np.argmin(np.linalg.norm(poses.boxes[:, :2] + poses.boxes[:, 2:] / 2 - centre, axis=1))]
    seen = np.flatnonzero(truth[:, 2] > 0)
    assert len(seen) >= 15
    distance = np.linalg.norm(truth[seen, None, :2] - ours[RIGHT][None, seen, :2], axis=2)
    assert np.mean(seen[np.argmin(distance, axis=1)] == seen) >= 0.8


def test_render_draws_all_136_points(wholebody_home: Path, config: Settings, shared: Path):
    """With only the face and hand points scored, the renderer marks every one of them."""
    image = cv2.imread(str(shared / "data/coco/images/000000197388.jpg"))
    with PoseChain(_wholebody(config)) as chain:
        poses = chain.process([image])[0]
    poses.keypoints[:, :26, 2] = 0.0
    poses.keypoints[:, 26:, 2] = 1.0  # the flags of these gloved, goggled skiers are low
    changed = np.abs(draw_poses(image, poses, show_boxes=False, show_ids=False).astype(int) - image).sum(2) > 0
    xy = np.round(poses.keypoints[:, 26:, :2].reshape(-1, 2)).astype(int)
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < image.shape[1]) & (xy[:, 1] >= 0) & (xy[:, 1] < image.shape[0])
    assert inside.sum() > 100 and changed[xy[inside, 1], xy[inside, 0]].all()
    assert len(poses.to_persons()[0]["keypoints"]) == HALPE136.num_keypoints



def test_landmarks_are_the_same_with_the_normalisation_inside_the_model(wholebody_home: Path, config: Settings):
    """With OpenVINO (`engine.preprocess = "auto"`) the face and hand models take the uint8 crops and
    normalise them inside; numpy's float crops give the same landmarks and flags."""
    image = np.ascontiguousarray(skimage.data.astronaut()[..., ::-1])
    out = {}
    for mode in ("auto", "numpy"):
        tuned = config.with_overrides({"engine.backend": "openvino", "engine.preprocess": mode})
        for model, points, flag in ((wholebody.FACE_MODEL, wholebody.FACE_MESH_POINTS, "face_flag"),
                                    (wholebody.HAND_MODEL, wholebody.HAND_POINTS, "hand_flag")):
            landmarks = wholebody._LandmarkModel(tuned, model, points, flag)
            try:
                assert landmarks.takes_images == (mode == "auto")
                m = rotated_crop_matrices(np.array([[222.0, 122.0], [300.0, 400.0]]), np.array([170.0, 120.0]),
                                          np.array([0.0, 0.3]), landmarks.size)
                crops = warp_with(image, m, (landmarks.size, landmarks.size))
                out[mode, model] = landmarks(crops, batch=2)
            finally:
                landmarks.close()
    for model in (wholebody.FACE_MODEL, wholebody.HAND_MODEL):
        np.testing.assert_allclose(out["auto", model][0], out["numpy", model][0], atol=0.05)
        np.testing.assert_allclose(out["auto", model][1], out["numpy", model][1], atol=1e-3)

def _connections(home: Path) -> dict[str, set[tuple[int, int]]]:
    """MediaPipe's face-mesh contour edge sets, read from the wheel as data (never imported)."""
    source = zipfile.ZipFile(fetch_wheel(WHEEL, home / "downloads")).read(
        "mediapipe/python/solutions/face_mesh_connections.py").decode()
    out = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and node.value.args \
                and isinstance(node.value.args[0], ast.List):
            out[node.targets[0].id] = set(ast.literal_eval(node.value.args[0]))
    return out


def test_face68_table_is_derived_as_documented(wholebody_home: Path, config: Settings):
    """Re-derive the 468 -> 68 table on the astronaut's face, as `FACE68_FROM_MESH`'s comment says."""
    face = wholebody._LandmarkModel(config, wholebody.FACE_MODEL, wholebody.FACE_MESH_POINTS,
                                     "face_flag")
    try:
        image = np.ascontiguousarray(skimage.data.astronaut()[..., ::-1])
        m = rotated_crop_matrices(np.array([[222.0, 122.0]]), np.array([170.0]), np.zeros(1), face.size)
        crop = warp_with(image, m, (face.size, face.size))
        out = face.run({face._name: face.model_input(crop)})
    finally:
        face.close()
    mesh = np.asarray(out["landmarks"], dtype=np.float64).reshape(468, 3)
    xy = crop_to_frame(mesh[None, :, :2] - 0.5, m)[0]
    table = wholebody.derive_face68(np.column_stack([xy, mesh[:, 2]]), _connections(wholebody_home))
    assert table == wholebody.FACE68_FROM_MESH
    assert len(set(table)) == 68
