"""The torch backend (our rebuilt YOLO11-pose) against ONNX Runtime, on the CPU and, where present, CUDA.

Tolerances, coordinates in letterboxed input pixels, YOLO11n-pose:
- CPU FP32 vs ONNX Runtime FP32 on the golden inputs: box/keypoint coordinates within 0.05 px and
  scores within 1e-3 over every anchor (the export check of `models prepare` allows 1e-2);
- CUDA FP16 vs ONNX Runtime FP32 on the demo photo: over anchors ONNX Runtime scores >= 0.25,
  coordinates within 2 px and scores within 0.02 (the TensorRT FP16 tolerance);
- a whole run (`posestream run --backend torch --device cpu` vs the default backend) on the 72-frame
  video: the same persons per frame, boxes within 2 px and keypoints within 3 px on average.

GPU tests are marked `gpu` and skip with the reason "no CUDA device" here; they use only inputs they
make themselves (the demo photo from scikit-image), since the shared data does not reach the GPU machine.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from posestream.engines.backends.factory import create_engine, resolve_backend
from posestream.engines.models import load_card
from posestream.engines.preprocess import letterbox, to_input
from posestream.engines.backends.torch_engine import TorchEngine, torch_device
from posestream.engines.backends.torch_inputs import rows_above
from posestream.stream.core.settings import Settings
from posestream.stream.core.errors import BackendUnavailableError, ConfigError, InputError, ModelError

from reference import COORD_CHANNELS, SCORE_CHANNELS, assert_outputs_close, yolo_pose_channels

NO_CUDA = None if torch.cuda.is_available() else "no CUDA device"


def _model(config: Settings, variant: str) -> Path:
    card, directory = load_card(config, config.model.name)
    return card.file(directory, variant)


def _golden(shared: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    root = shared / "golden" / "yolo11n-pose"
    entries = json.loads((root / "index.json").read_text())
    return [(to_input([cv2.imread(str(root / e["input_png_bgr"]))]), np.load(root / e["output_npz"])["output"])
            for e in entries]


@pytest.mark.parametrize("variant", ["dynamic", "640"])
def test_cpu_matches_onnxruntime_on_golden_inputs(config: Settings, shared: Path, variant: str) -> None:
    model = _model(config, variant)
    cases = [(x, ref) for x, ref in _golden(shared) if variant == "dynamic" or x.shape[2] == 640]
    assert cases
    with create_engine(model, backend="torch", threads=2, settings=config) as engine, \
            create_engine(model, backend="onnxruntime", threads=2) as ort:
        assert engine.backend == "torch" and engine.precision == "fp32" and engine.mode == "eager"
        for x, reference in cases:
            got, want = engine.run1(x), ort.run1(x)
            assert got.shape == want.shape == reference.shape and got.dtype == np.float32
            assert_outputs_close(got, want, yolo_pose_channels(), "torch vs ONNX Runtime")
            assert_outputs_close(got, reference, yolo_pose_channels(score=np.inf), "torch vs reference")


def test_any_batch_even_for_a_fixed_batch_file(config: Settings, shared: Path) -> None:
    """The rebuilt network has no fixed batch: the '640' file's engine takes several frames at once."""
    x = np.concatenate([x for x, _ in _golden(shared) if x.shape[2] == 640][:2])
    with TorchEngine(_model(config, "640"), settings=config.torch) as engine:
        assert engine.inputs[0].shape == (None, 3, 640, 640)
        together = engine.run1(x)
        alone = np.concatenate([engine.run1(x[i:i + 1]) for i in range(len(x))])
    assert np.abs(together - alone).max() <= 1e-2


def test_missing_checkpoint_is_one_clear_error(config: Settings, tmp_path: Path) -> None:
    card_dir = tmp_path / "home" / "models" / "yolo11n-pose"
    card_dir.mkdir(parents=True)
    shutil.copy(_model(config, "dynamic").parent / "model.json", card_dir)
    with pytest.raises(ModelError, match="checkpoint, which was not found.*missing.*torch.checkpoint"):
        TorchEngine(card_dir / "yolo11n-pose-dynamic.onnx", settings=config.torch)


def test_checkpoint_must_be_the_cards(config: Settings, tmp_path: Path) -> None:
    other = tmp_path / "other.pt"
    other.write_bytes(b"not the checkpoint the model was exported from")
    card_dir = tmp_path / "models" / "yolo11n-pose"
    card_dir.mkdir(parents=True)
    shutil.copy(_model(config, "dynamic").parent / "model.json", card_dir)
    with pytest.raises(ModelError, match="sha256 differs from the card"):
        TorchEngine(card_dir / "yolo11n-pose-dynamic.onnx", settings=config.torch.with_values(checkpoint=str(other)))


def test_fp16_numerics_on_the_cpu(config: Settings, shared: Path) -> None:
    """The FP16 network the CUDA path runs (FP32 decoding), evaluated by torch's CPU FP16 kernels,
    against ONNX Runtime FP32: the CUDA tolerance (2 px, 0.02) on the golden inputs."""
    from posestream.engines.model_card import ModelCard
    from posestream.engines.backends.torch_engine import build_from_card

    model = _model(config, "dynamic")
    network = build_from_card(ModelCard.load(model.parent), model.parent, half=True).module
    with create_engine(model, backend="onnxruntime", threads=2) as ort, torch.inference_mode():
        for x, _ in _golden(shared)[:2]:
            got = network(torch.from_numpy(x).half())
            assert got.dtype == torch.float32
            _close_fp16(got.numpy(), ort.run1(x))


@pytest.mark.parametrize("device, error, message", [
    ("tpu", BackendUnavailableError, "unknown device 'tpu'"),
    ("cuda:99", BackendUnavailableError, "CUDA device"),
])
def test_bad_devices(device: str, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        torch_device(device)


def test_bad_settings_and_fp16_on_cpu(config: Settings) -> None:
    with pytest.raises(ConfigError, match="torch.precision"):
        config.torch.with_values(precision="int4")
    with pytest.raises(BackendUnavailableError, match="fp16 needs a CUDA device"):
        TorchEngine(_model(config, "dynamic"), settings=config.torch.with_values(precision="fp16"))
    with pytest.raises(ConfigError, match="needs the run's settings"):
        create_engine(_model(config, "dynamic"), backend="torch")


def test_bad_input_shape_is_an_input_error(config: Settings) -> None:
    with TorchEngine(_model(config, "dynamic"), settings=config.torch) as engine:
        with pytest.raises(InputError, match="multiples of 32"):
            engine.run1(np.zeros((1, 3, 100, 100), np.float32))
        engine.close()
        engine.close()
        with pytest.raises(ModelError, match="closed"):
            engine.run1(np.zeros((1, 3, 64, 64), np.float32))


@pytest.mark.skipif(NO_CUDA is None, reason="this machine has a CUDA device")
def test_auto_without_gpu_or_tensorrt_picks_the_cpu_backend() -> None:
    assert resolve_backend("torch", "cpu") == ("torch", "cpu")
    backend, device = resolve_backend("auto", "cpu")
    assert backend != "torch" and device == "cpu"


def test_rows_above_matches_per_row_selection() -> None:
    output = torch.rand(3, 56, 500, generator=torch.Generator().manual_seed(1))
    output[1, 4] = 0.0  # a frame with no anchor above the threshold
    got = rows_above(output, 4, 0.7)
    for row, part in zip(output, got):
        want = row[:, row[4] >= 0.7].numpy()
        assert part.shape == want.shape and np.array_equal(part, want)


def _persons(path: Path) -> dict[str, list[dict]]:
    frames: dict[str, list[dict]] = {}
    for person in json.loads(path.read_text()):
        frames.setdefault(person["image_id"], []).append(person)
    return frames


@pytest.mark.slow
def test_run_with_torch_cpu_gives_the_default_backends_persons(prepared_home: Path, shared: Path,
                                                             tmp_path: Path) -> None:
    video = shared / "data/video/two_person_interaction_72f.mp4"
    outputs = {}
    for backend in ("onnxruntime", "torch"):
        out = tmp_path / f"{backend}.json"
        result = subprocess.run(
            [sys.executable, "-m", "posestream", "run", "--source", str(video), "--sink", f"json:{out}",
             "--offline", "--quiet", "--backend", backend, "--device", "cpu"],
            capture_output=True, text=True, timeout=600, env={**os.environ, "POSESTREAM_HOME": str(prepared_home)})
        assert result.returncode == 0, result.stderr[-2000:]
        outputs[backend] = _persons(out)
    reference, torch_run = outputs["onnxruntime"], outputs["torch"]
    assert len(reference) == 72 and set(torch_run) == set(reference)
    box_errors, keypoint_errors = [], []
    for frame, persons in reference.items():
        others = torch_run[frame]
        assert len(others) == len(persons), frame
        for a in persons:  # match by the nearest box: ids may be assigned in another order
            b = min(others, key=lambda p: np.abs(np.subtract(p["box"], a["box"])).sum())
            box_errors.append(np.abs(np.subtract(a["box"], b["box"])).max())
            ka, kb = np.reshape(a["keypoints"], (-1, 3)), np.reshape(b["keypoints"], (-1, 3))
            keypoint_errors.append(np.linalg.norm(ka[:, :2] - kb[:, :2], axis=1).mean())
    assert max(box_errors) <= 2.0, max(box_errors)
    assert float(np.mean(keypoint_errors)) <= 3.0, float(np.mean(keypoint_errors))


# -- CUDA ----------------------------------------------------------------------------------------

def _demo_inputs() -> np.ndarray:
    """Letterboxed demo photos (640x640 and a smaller scale), our own input for GPU machines."""
    from posestream.stream.demo_clip import demo_frames

    frames = demo_frames(0.2, 10, (1280, 720))
    return to_input([letterbox(f, (640, 640), 114)[0] for f in frames[:2]])


def _close_fp16(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    for g, w in zip(got, want):
        anchors = w[4] >= 0.25
        assert anchors.any()
        assert np.abs(g - w)[COORD_CHANNELS][:, anchors].max() <= 2.0
        assert np.abs(g - w)[SCORE_CHANNELS][:, anchors].max() <= 0.02


@pytest.mark.gpu
@pytest.mark.skipif(NO_CUDA is not None, reason=NO_CUDA or "")
@pytest.mark.parametrize("graphs", [False, True])
def test_cuda_fp16_matches_onnxruntime(config: Settings, graphs: bool) -> None:
    model = _model(config, "dynamic")
    x = _demo_inputs()
    with create_engine(model, backend="onnxruntime", threads=2) as ort:
        want = ort.run1(x)
    with TorchEngine(model, "cuda", settings=config.torch.with_values(cuda_graphs=graphs)) as engine:
        assert engine.precision == "fp16" and engine.mode == ("eager+cuda_graphs" if graphs else "eager")
        for _ in range(3):  # graph capture on the first call, replays after
            _close_fp16(engine.run1(x), want)
        three = np.concatenate([x, x[:1]])  # batch 3: the graph for batch 4, padding rows cut off
        _close_fp16(engine.run1(three), np.concatenate([want, want[:1]]))
        _close_fp16(engine.run1(x[1:]), want[1:])
        device_out = engine.run_device({"images": torch.from_numpy(x).cuda()})["output0"]
        assert device_out.is_cuda and device_out.dtype == torch.float32  # FP32 decode


@pytest.mark.gpu
@pytest.mark.skipif(NO_CUDA is not None, reason=NO_CUDA or "")
def test_detector_on_cuda_matches_cpu(config: Settings) -> None:
    """The detector plugin with torch on CUDA (GPU pre-processing, one download per batch) finds the
    same persons as on the CPU with ONNX Runtime, frame by frame, batched."""
    from posestream.engines.families.yolo11.detector import YoloDetector
    from posestream.stream.demo_clip import demo_frames

    frames = demo_frames(1.0, 8, (1920, 1080))
    config = config.with_overrides({"detector.batch": 4})
    cpu = YoloDetector(config)
    gpu_detector = YoloDetector(config.with_overrides({"engine": {"backend": "torch", "device": "cuda"}}))
    try:
        assert gpu_detector._torch is not None and gpu_detector._torch.on_gpu
        for a, b in zip(cpu.detect(frames), gpu_detector.detect(frames)):
            sure_a, sure_b = a.boxes[a.box_scores >= 0.3], b.boxes[b.box_scores >= 0.3]
            assert len(sure_a) == len(sure_b) >= 1  # borderline detections near 0.1 may differ
            for box in sure_a:  # 1080p: 3x the 2 px input tolerance
                assert np.abs(sure_b - box).max(axis=1).min() <= 4.0
    finally:
        cpu.close()
        gpu_detector.close()


@pytest.mark.gpu
@pytest.mark.skipif(NO_CUDA is not None, reason=NO_CUDA or "")
def test_auto_picks_torch_on_a_gpu_without_tensorrt() -> None:
    from posestream.engines.backends.base import tensorrt_available

    if tensorrt_available() is None:
        pytest.skip("TensorRT is importable here, so auto picks it")
    assert resolve_backend("auto", "cpu") == ("torch", "cuda")


@pytest.mark.gpu
@pytest.mark.skipif(NO_CUDA is not None, reason=NO_CUDA or "")
def test_pinned_staging_reuses_its_buffer_without_mixing_uploads() -> None:
    from posestream.engines.backends.gpu_preprocess import PinnedStaging, upload_frames

    staging = PinnedStaging(torch.device("cuda"))
    rng = np.random.default_rng(0)
    batches = [[rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8) for _ in range(4)] for _ in range(3)]
    uploaded = [upload_frames(b, "cuda", staging) for b in batches]  # same shape: one buffer, reused
    assert len(staging._buffers) == 1
    for batch, device_frames in zip(batches, uploaded):
        assert np.array_equal(device_frames.cpu().numpy(), np.stack(batch))
