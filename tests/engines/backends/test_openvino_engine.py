"""The OpenVINO backend: parity with ONNX Runtime on the golden inputs, async requests, selection.

Tolerance (FP32 OpenVINO vs ONNX Runtime, same ONNX file): coordinates within 0.05 px of the 640x640
canvas and scores within 1e-3, the same bounds our exports meet against the reference export; on
this machine the measured difference is about 0.002 px.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from posestream.engines.backends import base, factory
from posestream.engines.backends.factory import create_engine, resolve_backend
from posestream.engines.models import load_card
from posestream.engines.backends.openvino_engine import OpenVinoEngine, openvino_available
from posestream.engines.model_card import Normalisation
from posestream.engines.preprocess import TO_INPUT, to_input
from posestream.stream.core.settings import Settings
from posestream.stream.core.errors import BackendUnavailableError, ConfigError, InputNotFoundError, ModelError

from reference import assert_outputs_close, yolo_pose_channels

pytestmark = pytest.mark.skipif(openvino_available() is not None, reason=str(openvino_available()))


def _golden_inputs(shared: Path, size: int) -> list[tuple[str, np.ndarray]]:
    folder = shared / "golden/yolo11n-pose"
    entries = json.loads((folder / "index.json").read_text())
    return [(e["input_png_bgr"], to_input([cv2.imread(str(folder / e["input_png_bgr"]))]))
            for e in entries if e["imgsz"] == size]


@pytest.mark.parametrize("variant,size", [("640", 640), ("320", 320), ("dynamic", 640), ("dynamic", 320)])
def test_openvino_matches_onnxruntime_on_golden_inputs(shared: Path, config: Settings, variant: str,
                                                       size: int) -> None:
    card, directory = load_card(config, "yolo11n-pose")
    path = card.file(directory, variant)
    inputs = _golden_inputs(shared, size)
    assert inputs
    with create_engine(path, backend="openvino", threads=1) as ov, \
            create_engine(path, backend="onnxruntime", threads=1) as ort:
        assert ov.backend == "openvino" and ort.backend == "onnxruntime"
        for name, x in inputs:
            got, expected = ov.run1(x), ort.run1(x)
            assert_outputs_close(got, expected, yolo_pose_channels(), name)


def test_async_requests_give_the_same_outputs_as_run(shared: Path, config: Settings) -> None:
    card, directory = load_card(config, "yolo11n-pose")
    inputs = [x for _, x in _golden_inputs(shared, 640)]
    with OpenVinoEngine(card.file(directory, "dynamic"), threads=2, hint="throughput", requests=2) as engine:
        expected = [engine.run1(x) for x in inputs]
        for tag, x in enumerate(inputs):
            engine.submit(tag, {"images": x})
        for tag in reversed(range(len(inputs))):  # any order
            np.testing.assert_allclose(engine.collect(tag)["output0"], expected[tag], atol=1e-3)
        with pytest.raises(ModelError, match="no inference was submitted"):
            engine.collect(99)


@pytest.mark.parametrize("variant,size,int8", [("640", 640, False), ("dynamic", 320, False),
                                                ("dynamic", 640, True)])
def test_images_normalised_inside_the_model_give_the_float_inputs_outputs(
        shared: Path, config: Settings, variant: str, size: int, int8: bool) -> None:
    """`accept_images` folds the card's normalisation into the graph: uint8 BGR canvases in give
    what numpy's float NCHW RGB inputs give, for the FP32 files and the INT8 model."""
    from posestream.engines.models import runtime_model_file

    card, directory = load_card(config, "yolo11n-pose")
    path = runtime_model_file(config, card, directory, variant) if int8 else card.file(directory, variant)
    assert (path.suffix == ".xml") == int8
    folder = shared / "golden/yolo11n-pose"
    canvases = [cv2.imread(str(folder / e["input_png_bgr"]))
                for e in json.loads((folder / "index.json").read_text()) if e["imgsz"] == size]
    assert canvases
    assert Normalisation.of_card(card) == TO_INPUT  # what the card says is what to_input computes
    with OpenVinoEngine(path, threads=1) as floats, OpenVinoEngine(path, threads=1) as images:
        assert images.accept_images(TO_INPUT)
        assert images.inputs[0].dtype == np.uint8 and images.inputs[0].shape[-1] == 3
        for i, canvas in enumerate(canvases):
            assert_outputs_close(images.run1(canvas[None]), floats.run1(to_input([canvas])),
                                 yolo_pose_channels(), f"canvas {i}")


def test_images_inside_the_model_follow_the_cards_mean_std_and_colour(config: Settings) -> None:
    """x = (pixel * scale - mean) / std in the card's colour order, as `TopDownPose.preprocess`
    computes it; what the graph cannot express is refused and the float input stays; a card whose
    normalisation makes no sense is one clear error."""
    card, directory = load_card(config, "yolo11n-pose")
    path = card.file(directory, "320")
    card.input = {"color": "BGR", "scale": 1 / 127.5, "mean": [1.0, 0.5, 0.0], "std": [0.5, 1.0, 2.0]}
    norm = Normalisation.of_card(card)
    assert norm == Normalisation(rgb=False, scale=1 / 127.5, mean=(1.0, 0.5, 0.0), std=(0.5, 1.0, 2.0))
    canvas = np.random.default_rng(0).integers(0, 256, (320, 320, 3), dtype=np.uint8)
    x = (canvas.transpose(2, 0, 1)[None].astype(np.float32) * np.float32(1 / 127.5)
         - np.float32([1.0, 0.5, 0.0]).reshape(1, 3, 1, 1)) / np.float32([0.5, 1.0, 2.0]).reshape(1, 3, 1, 1)
    with OpenVinoEngine(path, threads=1) as floats, OpenVinoEngine(path, threads=1) as images:
        assert images.accept_images(norm)
        assert_outputs_close(images.run1(canvas[None]), floats.run1(x), yolo_pose_channels())
    with OpenVinoEngine(path, threads=1) as engine:
        assert not engine.accept_images(dataclasses.replace(norm, layout="NHWC"))
        assert engine.inputs[0].dtype == np.float32  # unchanged
        engine.run1(np.zeros((1, 3, 320, 320), np.float32))
    for bad, match in (({"color": "GRAY"}, "input.color = 'GRAY'"), ({"std": [1.0, 0.0, 1.0]}, "std has a zero")):
        card.input = bad
        with pytest.raises(ModelError, match=match):
            Normalisation.of_card(card)


def test_bad_inputs_are_one_clear_error(tmp_path: Path, config: Settings) -> None:
    with pytest.raises(InputNotFoundError):
        OpenVinoEngine(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot load model"):
        OpenVinoEngine(junk)
    card, directory = load_card(config, "yolo11n-pose")
    with pytest.raises(ConfigError, match="engine.openvino_hint"):
        OpenVinoEngine(card.file(directory, "320"), hint="fastest")
    with pytest.raises(BackendUnavailableError, match="CPU"):
        OpenVinoEngine(card.file(directory, "320"), device="cuda")
    engine = OpenVinoEngine(card.file(directory, "320"))
    engine.close()
    engine.close()  # safe twice
    with pytest.raises(ModelError, match="closed"):
        engine.run1(np.zeros((1, 3, 320, 320), np.float32))


def test_auto_picks_openvino_on_the_cpu_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime

    monkeypatch.setattr(base, "tensorrt_available", lambda: "no CUDA device")
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert resolve_backend("auto") == ("openvino", "cpu")
    assert resolve_backend("openvino") == ("openvino", "cpu")
    with pytest.raises(BackendUnavailableError, match="CPU"):
        resolve_backend("openvino", "cuda")
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider"])
    assert resolve_backend("auto") == ("openvino", "cpu")  # a CUDA build of onnxruntime, no NVIDIA device
    monkeypatch.setattr(factory, "nvidia_device_present", lambda: True)
    assert resolve_backend("auto") == ("onnxruntime", "cuda")  # a GPU beats the CPU
    monkeypatch.setattr(factory, "nvidia_device_present", lambda: False)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    real = factory.importable
    monkeypatch.setattr(factory, "importable", lambda package: package != "openvino" and real(package))
    assert resolve_backend("auto") == ("onnxruntime", "cpu")
    with pytest.raises(BackendUnavailableError, match="openvino not importable"):
        resolve_backend("openvino")


def test_overlapped_detector_gives_what_detect_gives(shared: Path, config: Settings) -> None:
    """The detect stage's overlapped path (`start` each frame, `finish` in order, OpenVINO requests
    in flight) finds the same persons as `detect` on one frame at a time; the engine hands each
    result back under its own tag, whichever finishes first, and only once."""
    from posestream.engines.families.yolo11.detector import YoloDetector

    capture = cv2.VideoCapture(str(shared / "data/video/two_person_interaction_72f.mp4"))
    frames = [capture.read()[1] for _ in range(5)]
    capture.release()
    config = config.with_overrides({"engine.backend": "openvino"})
    with YoloDetector(config) as detector:
        assert detector.in_flight == config.engine.openvino_requests >= 2
        assert detector.takes_images  # uint8 canvases in, normalised inside the model
        expected = [detector.detect([frame])[0] for frame in frames]
        handles = [detector.start(frame) for frame in frames[:2]]
        got = [detector.finish(handles[0])]
        handles += [detector.start(frame) for frame in frames[2:]]
        got += [detector.finish(h) for h in handles[1:-1]]
        deadline = time.monotonic() + 30
        while not detector.finished(handles[-1]) and time.monotonic() < deadline:
            time.sleep(0.01)  # the last one finishes in the background, with nobody waiting
        assert detector.finished(handles[-1])
        got.append(detector.finish(handles[-1]))
        with pytest.raises(ModelError, match="no inference was submitted"):
            detector.engine.collect(handles[0])  # collected once only
    with YoloDetector(config.with_overrides({"engine.preprocess": "numpy"})) as detector:
        assert not detector.takes_images  # float NCHW from numpy, as before
        floats = [detector.detect([frame])[0] for frame in frames]
    for want, have, numpy_path in zip(expected, got, floats):
        assert len(want) == len(have) == len(numpy_path) == 2
        np.testing.assert_allclose(have.boxes, want.boxes, atol=1.0)
        np.testing.assert_allclose(have.keypoints[..., :2], want.keypoints[..., :2], atol=2.0)
        np.testing.assert_allclose(numpy_path.boxes, want.boxes, atol=1.0)
        np.testing.assert_allclose(numpy_path.keypoints[..., :2], want.keypoints[..., :2], atol=2.0)
