"""INT8 models: built by NNCF into the cache with a card that records the calibration, reused while
intact, rebuilt when stale, chosen by OpenVINO with `engine.precision = "int8"`, and close to FP32."""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from posestream.engines.models import load_card, prepare_default_model, runtime_model_file
from posestream.engines.quantize import (INT8_KEY, build_int8, default_calibration, ensure_int8,
                                         int8_problems, nncf_available, user_calibration)
from posestream.stream.core.config import load_config
from posestream.stream.core.settings import Settings
from posestream.stream.core.errors import InputError, InputNotFoundError

pytestmark = pytest.mark.skipif(nncf_available() is not None, reason=str(nncf_available()))

VIDEO = "data/video/two_person_interaction_72f.mp4"


def _fresh_home(prepared_home: Path, target: Path) -> Path:
    """A cache holding the prepared FP32 model (files linked, card copied) and no INT8 model."""
    source = prepared_home / "models" / "yolo11n-pose"
    model = target / "models" / "yolo11n-pose"
    model.mkdir(parents=True)
    for path in source.glob("*.onnx"):
        os.symlink(path, model / path.name)
    card = json.loads((source / "model.json").read_text())
    card["extra"].pop("int8", None)
    (model / "model.json").write_text(json.dumps(card))
    return target


@pytest.fixture(scope="module")
def int8_home(prepared_home: Path, shared: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Path]:
    """A cache with an INT8 model calibrated on 6 frames of a shared video (fast to build)."""
    home = _fresh_home(prepared_home, tmp_path_factory.mktemp("int8-home"))
    config = load_config(overrides={"paths.home": str(home), "engine.precision": "int8"})
    card, directory = load_card(config, "yolo11n-pose")
    build_int8(config, card, directory, calibration=shared / VIDEO, count=6)
    return config, directory


def test_int8_model_is_built_with_its_card(int8_home: tuple[Settings, Path]) -> None:
    config, directory = int8_home
    card, _ = load_card(config, "yolo11n-pose")
    entry = card.extra[INT8_KEY]
    assert entry["format"] == "openvino-ir"
    assert (directory / entry["file"]).is_file() and (directory / entry["weights"]).is_file()
    quant = entry["quantization"]
    assert quant["calibration"]["count"] == 6
    assert "two_person_interaction_72f.mp4" in quant["calibration"]["source"]
    assert quant["from_sha256"] == card.files["dynamic"]["sha256"]
    assert int8_problems(card, directory) == []
    assert card.verify(directory) == [] and set(card.files) == {"640", "320", "320-dynamic-batch", "dynamic"}
    openvino = config.with_overrides({"engine.backend": "openvino"})
    ort = config.with_overrides({"engine.backend": "onnxruntime"})
    assert runtime_model_file(openvino, card, directory, "dynamic") == directory / entry["file"]
    assert runtime_model_file(ort, card, directory, "dynamic") == card.file(directory, "dynamic")
    assert runtime_model_file(openvino, card, directory, "640") == card.file(directory, "640")
    fp32 = load_config(overrides={"paths.home": config.paths.home, "engine.precision": "fp32",
                                  "engine.backend": "openvino"})
    assert runtime_model_file(fp32, card, directory, "dynamic") == card.file(directory, "dynamic")


def test_int8_detector_finds_the_same_people_as_fp32(int8_home: tuple[Settings, Path], shared: Path) -> None:
    from posestream.engines.families.yolo11.detector import YoloDetector

    config, _ = int8_home
    capture = cv2.VideoCapture(str(shared / VIDEO))
    frames = [capture.read()[1] for _ in range(3)]
    capture.release()
    found = {}
    for precision in ("fp32", "int8"):
        cfg = load_config(overrides={"paths.home": config.paths.home, "engine.backend": "openvino",
                                     "engine.precision": precision, "detector.batch": 3})
        detector = YoloDetector(cfg)
        try:
            assert detector.engine.model_path.suffix == (".xml" if precision == "int8" else ".onnx")
            found[precision] = detector.detect(frames)  # three frames: async requests in flight
        finally:
            detector.close()
    for fp32, int8 in zip(found["fp32"], found["int8"]):
        strong32, strong8 = fp32.scores > 0.5, int8.scores > 0.5
        assert strong32.sum() == strong8.sum() == 2
        a, b = fp32.keypoints[strong32], int8.keypoints[strong8]
        order = [int(np.argmin(np.abs(b[:, 0, 0] - x))) for x in a[:, 0, 0]]
        visible = a[..., 2] > 0.5
        error = np.linalg.norm(a[..., :2] - b[order][..., :2], axis=-1)[visible]
        assert np.median(error) < 6.0, np.median(error)  # pixels in a 1920x1080 frame


def test_intact_int8_model_is_reused_and_a_stale_one_rebuilt(int8_home: tuple[Settings, Path]) -> None:
    config, directory = int8_home
    card, _ = load_card(config, "yolo11n-pose")
    xml = directory / card.extra[INT8_KEY]["file"]
    before = xml.stat().st_mtime_ns
    ensure_int8(config, card, directory)
    assert xml.stat().st_mtime_ns == before  # cached: not rebuilt
    for key, value, problem in (("from_sha256", "0" * 64, "another FP32 model"), ("recipe", "old", "recipe"),
                                ("settings", {"preset": "performance"}, "other [quantize] settings")):
        changed = json.loads(json.dumps(card.extra[INT8_KEY]))
        changed["quantization"][key] = value
        stale = load_card(config, "yolo11n-pose")[0]
        stale.extra[INT8_KEY] = changed
        assert any(problem in p for p in int8_problems(stale, directory, config))
    weights = directory / card.extra[INT8_KEY]["weights"]
    weights.write_bytes(weights.read_bytes()[:-16])  # damaged
    assert any("damaged" in p for p in int8_problems(card, directory))
    small = load_config(overrides={"paths.home": config.paths.home, "quantize.demo_frames": 2,
                                   "quantize.images": 4})
    rebuilt = ensure_int8(small, card, directory)
    assert int8_problems(rebuilt, directory) == []
    assert "ultralytics" in rebuilt.extra[INT8_KEY]["quantization"]["calibration"]["source"]
    assert load_card(config, "yolo11n-pose")[0].extra[INT8_KEY] == rebuilt.extra[INT8_KEY]


def test_default_calibration_needs_no_model_hub(prepared_home: Path) -> None:
    from posestream.commands.models import demo_frames

    config = load_config(overrides={"quantize.demo_frames": 3})
    images, source = default_calibration(config, demo_frames)
    assert len(images) == 2 * (2 + 3)  # photos and clip frames, all mirrored
    assert {images[0].shape, images[1].shape} == {(1080, 810, 3), (720, 1280, 3)}  # bus.jpg, zidane.jpg
    assert "bus.jpg" in source and "zidane.jpg" in source and "3 demo-clip frames" in source
    photos_only, source = default_calibration(config)
    assert len(photos_only) == 2 * 2 and "0 demo-clip frames" in source


def test_user_calibration_data_and_its_errors(shared: Path, tmp_path: Path) -> None:
    images, source = user_calibration(shared / "data/coco/images", 3)
    assert len(images) == 3 and "3 images" in source
    frames, _ = user_calibration(shared / VIDEO, 5)
    assert len(frames) == 5 and frames[0].shape == (1080, 1920, 3)
    with pytest.raises(InputNotFoundError):
        user_calibration(tmp_path / "nothing", 3)
    with pytest.raises(InputError, match="has no images"):
        user_calibration(tmp_path, 3)
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(InputError, match="folder of images or a video"):
        user_calibration(notes, 3)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(InputError, match="not readable"):
        user_calibration(tmp_path, 3)


def test_prepare_without_nncf_keeps_fp32_and_says_so(prepared_home: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    from posestream.engines import quantize

    home = _fresh_home(prepared_home, tmp_path)
    monkeypatch.setattr(quantize, "nncf_available", lambda: "nncf not installed (pip install 'posestream[quantize]')")
    with caplog.at_level(logging.WARNING):
        card = prepare_default_model(load_config(overrides={"paths.home": str(home)}))
    assert INT8_KEY not in card.extra
    assert "posestream[quantize]" in caplog.text
    shutil.rmtree(home / "models")
