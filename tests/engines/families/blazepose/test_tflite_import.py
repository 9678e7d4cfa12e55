"""MediaPipe landmark models rebuilt from their TFLite files: our ONNX against Google's own TFLite
interpreter (`ai-edge-litert`, test extra only) on real person, hand and face crops from the shared
COCO images; malformed and unsupported files refused with one clear error."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from posestream.engines.families.blazepose.mediapipe_import import MODELS, extract_tflite, prepare_landmark_model
from posestream.engines.backends.onnxruntime_engine import OnnxRuntimeEngine
from posestream.engines.formats.tflite_graph import read_tflite
from posestream.engines.wheels import fetch_wheel
from posestream.stream.core.errors import InputNotFoundError, ModelError

litert = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert (test extra) not installed")


@pytest.fixture(scope="module")
def wheel(prepared_home: Path) -> Path:
    from posestream.engines.families.blazepose.mediapipe_import import WHEEL

    return fetch_wheel(WHEEL, prepared_home / "downloads")


@pytest.fixture(scope="module")
def landmark_models(prepared_home: Path, wheel: Path) -> Path:
    """The models the mediapipe wheel holds (heavy and lite come from npm: tested below)."""
    for name, spec in MODELS.items():
        if spec.package is None:
            prepare_landmark_model(name, prepared_home, wheel)
    return prepared_home / "models"


def _crops(shared: Path, kind: str, size: int) -> np.ndarray:
    """RGB float crops in [0, 1] of every annotated person (or its face / wrist region) in the
    shared COCO images, cut square around the ground truth."""
    gt = json.loads((shared / "data/coco/person_keypoints.json").read_text())
    files = {im["id"]: im["file_name"] for im in gt["images"]}
    crops = []
    for ann in gt["annotations"]:
        kp = np.asarray(ann.get("keypoints", []), dtype=float).reshape(-1, 3)
        x, y, w, h = ann["bbox"]
        if kind == "body":
            centre, side = (x + w / 2, y + h / 2), max(w, h) * 1.25
        else:
            index = (0, 1, 2) if kind == "face" else (9,)  # nose and eyes / left wrist
            seen = kp[list(index)][kp[list(index), 2] > 0]
            if len(seen) == 0 or max(w, h) < 80:
                continue
            centre, side = seen[:, :2].mean(0), max(w, h) * 0.3
        image = cv2.imread(str(shared / "data/coco/images" / files[ann["image_id"]]))[..., ::-1]
        m = np.array([[size / side, 0, size / 2 - centre[0] * size / side],
                      [0, size / side, size / 2 - centre[1] * size / side]])
        crops.append(cv2.warpAffine(np.ascontiguousarray(image), m, (size, size)))
    return np.stack(crops).astype(np.float32) / 255.0


@pytest.mark.parametrize("name, kind", [("blazepose-full", "body"), ("mediapipe-hand", "hand"),
                                        ("mediapipe-face", "face")])
def test_onnx_matches_tflite_interpreter(landmark_models: Path, wheel: Path, shared: Path, tmp_path: Path,
                                         name: str, kind: str):
    """Landmarks within 0.5 px of the input size; flags (presence) within 1e-3."""
    spec = MODELS[name]
    crops = _crops(shared, kind, spec.size)
    assert len(crops) >= 3
    tflite = extract_tflite(wheel, spec.member, tmp_path)
    interpreter = litert.Interpreter(model_path=str(tflite))
    interpreter.allocate_tensors()
    details = interpreter.get_output_details()
    card = json.loads((landmark_models / name / "model.json").read_text())
    with OnnxRuntimeEngine(landmark_models / name / f"{name}.onnx", threads=1) as engine:
        ours = engine.run({"image": crops.transpose(0, 3, 1, 2).copy()})
    assert card["output"]["names"] == list(spec.outputs.values())
    for i, crop in enumerate(crops):
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], crop[None])
        interpreter.invoke()
        reference = [interpreter.get_tensor(d["index"]) for d in details]
        for position, out_name in spec.outputs.items():
            want = reference[position].reshape(-1)
            got = ours[out_name][i]
            if out_name == "landmarks":
                values = 5 if name == "blazepose-full" else 3
                xy_want = want.reshape(-1, values)[:, :2]
                xy_got = got.reshape(-1, values)[:, :2]
                assert np.abs(xy_got - xy_want).max() <= 0.5, f"{name} crop {i}"
            else:
                assert np.abs(got - want).max() <= 1e-3, f"{name} {out_name} crop {i}"


def test_prepared_card_records_source_and_licence(landmark_models: Path):
    card = json.loads((landmark_models / "blazepose-full" / "model.json").read_text())
    assert card["licence"].startswith("Apache-2.0")
    assert card["source"]["wheel"].startswith("mediapipe-0.10.21")
    assert card["source"]["member"].endswith("pose_landmark_full.tflite")
    assert len(card["source"]["tflite_sha256"]) == 64
    assert card["input"]["size"] == [256, 256] and card["input"]["scale"] == pytest.approx(1 / 255)


def test_damaged_cache_is_rebuilt(landmark_models: Path, wheel: Path, prepared_home: Path):
    onnx_file = landmark_models / "mediapipe-face" / "mediapipe-face.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[:1000])
    card = prepare_landmark_model("mediapipe-face", prepared_home, wheel)
    assert not card.verify(landmark_models / "mediapipe-face")


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[:len(data) // 3], "malformed TFLite file"),
    (lambda data: b"\0" * 4 + b"XXXX" + data[8:], "not a TFLite flatbuffer"),
    (lambda data: b"", "not a TFLite flatbuffer"),
])
def test_malformed_flatbuffers_are_refused(wheel: Path, tmp_path: Path, damage, message: str):
    good = extract_tflite(wheel, MODELS["mediapipe-face"].member, tmp_path)
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(damage(good.read_bytes()))
    with pytest.raises(ModelError, match=message):
        read_tflite(bad)


def test_unsupported_op_is_named(wheel: Path, tmp_path: Path):
    """MediaPipe's pose *detector* uses ops the landmark models do not (e.g. CONCATENATION)."""
    detector = extract_tflite(wheel, "mediapipe/modules/pose_detection/pose_detection.tflite", tmp_path)
    with pytest.raises(ModelError, match=r"operator \d+ is [A-Z_0-9]+, which posestream does not implement"):
        read_tflite(detector)


def test_missing_file_and_unknown_model(tmp_path: Path, prepared_home: Path):
    with pytest.raises(InputNotFoundError):
        read_tflite(tmp_path / "none.tflite")
    with pytest.raises(Exception, match="unknown landmark model 'blazepose-huge'"):
        prepare_landmark_model("blazepose-huge", prepared_home)
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.mark.network
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("name", ["blazepose-heavy", "blazepose-lite"])
def test_npm_blazepose_variants_match_tflite_interpreter(prepared_home: Path, shared: Path, tmp_path: Path, name: str):
    """BlazePose heavy and lite from the npm package @mediapipe/pose, rebuilt by the same TFLite
    path: landmarks within 0.5 px of Google's interpreter on the shared COCO persons, flag 1e-3."""
    from posestream.engines.packages import MEDIAPIPE_POSE
    from posestream.engines.formats.npm_package import fetch_npm_package

    tarball = fetch_npm_package(MEDIAPIPE_POSE, prepared_home / "downloads")
    card = prepare_landmark_model(name, prepared_home)
    assert card.licence.startswith("Apache-2.0") and MEDIAPIPE_POSE.spec in card.licence
    crops = _crops(shared, "body", 256)
    interpreter = litert.Interpreter(model_path=str(extract_tflite(tarball, MODELS[name].member, tmp_path)))
    interpreter.allocate_tensors()
    details = interpreter.get_output_details()
    with OnnxRuntimeEngine(prepared_home / "models" / name / f"{name}.onnx", threads=1) as engine:
        ours = engine.run({"image": crops.transpose(0, 3, 1, 2).copy()})
    for i, crop in enumerate(crops):
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], crop[None])
        interpreter.invoke()
        reference = [interpreter.get_tensor(d["index"]) for d in details]
        xy_want = reference[0].reshape(-1, 5)[:, :2]
        assert np.abs(ours["landmarks"][i].reshape(-1, 5)[:, :2] - xy_want).max() <= 0.5, f"{name} crop {i}"
        assert abs(float(ours["pose_flag"][i, 0]) - float(reference[1].reshape(-1)[0])) <= 1e-3
