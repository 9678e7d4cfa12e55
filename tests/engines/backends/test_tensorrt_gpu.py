"""TensorRT on a real CUDA GPU: engines against ONNX Runtime, the cache, GPU pre-processing, a full run.

Every test here is marked `gpu` and skipped with the precise reason (`tensorrt not importable`,
`no CUDA device`) where TensorRT cannot run; on a GPU machine they run unchanged.

Tolerances (TensorRT vs ONNX Runtime CPU on the same input, YOLO11n-pose, coordinates in input pixels):
- FP32: coordinates within 0.05 px, scores within 1e-3 (what our ONNX export meets against torch);
- FP16: over anchors ONNX Runtime scores >= 0.25, box/keypoint coordinates within 2 px and scores
  within 0.02; every score channel within 0.05;
- INT8 (calibrated on the shared COCO images; TensorRT 10 only, 11 refuses with one error): the
  best person's box overlaps ONNX Runtime's by IoU >= 0.8 and its score is within 0.1.
- FP16 on TensorRT 11 is built from the FP16 ONNX twin (strong typing); same FP16 tolerance.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from posestream.engines.backends.base import tensorrt_available
from posestream.engines.backends.factory import create_engine
from posestream.engines.backends.engine_cache import EngineCache, EngineKey
from posestream.stream.core.config import load_config
from posestream.stream.core.settings import Settings
from posestream.stream.core.errors import InputError, ModelError

from reference import COORD_CHANNELS, SCORE_CHANNELS

REASON = tensorrt_available()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(REASON is not None, reason=REASON or "")]


@pytest.fixture(scope="module")
def golden(shared: Path) -> list[tuple[np.ndarray, int]]:
    """(BGR letterboxed canvas, size) of every golden YOLO input."""
    root = shared / "golden" / "yolo11n-pose"
    entries = json.loads((root / "index.json").read_text())
    return [(cv2.imread(str(root / e["input_png_bgr"])), int(e["imgsz"])) for e in entries]


def _model(config: Settings, variant: str) -> Path:
    from posestream.engines.models import load_card

    card, directory = load_card(config, config.model.name)
    return card.file(directory, variant)


def _settings(tmp_path: Path, precision: str, max_batch: int = 4, **kw) -> Settings:
    """The run's settings with this test's `[tensorrt]` table (engines cached under `tmp_path`)."""
    return load_config().with_overrides({"tensorrt": {
        "precision": precision, "workspace_mib": 1024, "min_batch": 1, "opt_batch": 2, "max_batch": max_batch,
        "cache_dir": str(tmp_path / "engines"), **kw}})


def _onnxruntime(model: Path, batch: np.ndarray) -> np.ndarray:
    with create_engine(model, backend="onnxruntime", threads=2) as engine:
        return engine.run1(batch)


def _to_input(canvases: list[np.ndarray]) -> np.ndarray:
    from posestream.engines.preprocess import to_input

    return to_input(canvases)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_matches_onnxruntime(config: Settings, golden, tmp_path: Path, precision: str):
    from posestream.engines.backends.tensorrt_engine import TensorRTEngine

    model = _model(config, "dynamic")
    with TensorRTEngine.from_onnx(model, _settings(tmp_path, precision), "cuda") as engine:
        assert engine.backend == "tensorrt" and engine.precision == precision
        for canvas, _ in golden:
            batch = _to_input([canvas])
            got, ref = engine.run1(batch), _onnxruntime(model, batch)
            assert got.shape == ref.shape and got.dtype == np.float32
            if precision == "fp32":
                assert np.abs(got - ref)[0, COORD_CHANNELS].max() <= 0.05
                assert np.abs(got - ref)[0, SCORE_CHANNELS].max() <= 1e-3
            else:
                confident = ref[0, 4] >= 0.25
                assert confident.any()
                assert np.abs(got - ref)[0][COORD_CHANNELS][:, confident].max() <= 2.0
                assert np.abs(got - ref)[0][SCORE_CHANNELS][:, confident].max() <= 0.02
                assert np.abs(got - ref)[0, SCORE_CHANNELS].max() <= 0.05


def test_dynamic_batch_and_profile_limits(config: Settings, golden, tmp_path: Path):
    from posestream.engines.backends.tensorrt_engine import TensorRTEngine

    canvases = [c for c, size in golden if size == 320][:1] * 3
    with TensorRTEngine.from_onnx(_model(config, "320-dynamic-batch"), _settings(tmp_path, "fp32", max_batch=4),
                                  "cuda") as engine:
        assert engine.profile["images"] == ((1, 3, 320, 320), (2, 3, 320, 320), (4, 3, 320, 320))
        single = engine.run1(_to_input(canvases[:1]))
        triple = engine.run1(_to_input(canvases))
        assert triple.shape[0] == 3
        for row in triple:
            assert np.abs(row - single[0]).max() <= 1e-3
        with pytest.raises(InputError, match="outside the engine's profile"):
            engine.run1(_to_input(canvases * 2))  # batch 6 > max 4
        with pytest.raises(InputError, match="missing input"):
            engine.run({"wrong": _to_input(canvases[:1])})


def test_outputs_stay_on_the_gpu_for_the_next_step(config: Settings, golden, tmp_path: Path):
    import torch

    from posestream.engines.backends.gpu_preprocess import letterbox, normalize, upload_frames
    from posestream.engines.backends.tensorrt_engine import TensorRTEngine

    canvas = next(c for c, size in golden if size == 640)
    with TensorRTEngine.from_onnx(_model(config, "dynamic"), _settings(tmp_path, "fp32"), "cuda") as engine:
        frames = upload_frames(canvas, engine.cuda)
        boxed, _, _ = letterbox(frames, (640, 640))
        out = engine.run_device({"images": normalize(boxed)})["output0"]
        assert out.is_cuda and out.device == engine.cuda
        host = engine.run1(_to_input([canvas]))
        assert np.abs(out.cpu().numpy() - host).max() <= 1e-3
        assert isinstance(out, torch.Tensor)


def test_engine_cache_reuses_and_rebuilds(config: Settings, tmp_path: Path):
    from posestream.engines.backends.tensorrt_engine import TensorRTEngine

    model, settings = _model(config, "320-dynamic-batch"), _settings(tmp_path, "fp16")
    with TensorRTEngine.from_onnx(model, settings, "cuda") as first:
        path = first.engine_path
    key = EngineKey(**json.loads(EngineCache.meta_path(path).read_text())["key"])
    assert key.precision == "fp16" and key.tensorrt_version == __import__("tensorrt").__version__
    stamp = path.stat().st_mtime_ns
    with TensorRTEngine.from_onnx(model, settings, "cuda") as second:
        assert second.engine_path == path
    assert path.stat().st_mtime_ns == stamp  # loaded from the cache, not rebuilt
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupted = bytes(data)
    path.write_bytes(corrupted)
    with TensorRTEngine.from_onnx(model, settings, "cuda") as third:
        assert third.engine_path == path
    assert path.read_bytes() != corrupted  # rebuilt, never loaded
    assert EngineCache(path.parent).lookup(key, model.stem) == path


def test_unsupported_operator_lists_the_parser_errors(tmp_path: Path):
    import onnx
    from onnx import TensorProto, helper

    from posestream.engines.backends.tensorrt_engine import TensorRTEngine

    node = helper.make_node("NoSuchOperator", ["x"], ["y"], domain="com.example", name="mystery")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.example", 1)])
    path = tmp_path / "unsupported.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match="ONNX parser rejected unsupported.onnx") as info:
        TensorRTEngine.from_onnx(path, _settings(tmp_path, "fp16"), "cuda")
    assert "NoSuchOperator" in str(info.value) or "mystery" in str(info.value)


def _strongly_typed_only() -> bool:
    from posestream.engines.backends.tensorrt_build import import_tensorrt, strongly_typed_only

    return strongly_typed_only(import_tensorrt())


def test_int8_on_tensorrt_11_is_one_clear_error(config: Settings, shared: Path, tmp_path: Path):
    from posestream.engines.backends.tensorrt_engine import TensorRTEngine

    if not _strongly_typed_only():
        pytest.skip("TensorRT 10.x: implicit INT8 calibration is available")
    settings = _settings(tmp_path, "int8", calibration_images=str(shared / "data/coco/images"))
    with pytest.raises(ModelError, match="removed.*Q/DQ"):
        TensorRTEngine.from_onnx(_model(config, "320-dynamic-batch"), settings, "cuda")


def test_int8_with_entropy_calibration(config: Settings, shared: Path, golden, tmp_path: Path):
    from posestream.engines.models import load_card
    from posestream.engines.backends.tensorrt_engine import TensorRTEngine

    if _strongly_typed_only():
        pytest.skip("TensorRT 11 removed implicit INT8 calibration (explicit Q/DQ models only)")

    card, _ = load_card(config, config.model.name)
    model = _model(config, "320-dynamic-batch")
    settings = _settings(tmp_path, "int8", calibration_images=str(shared / "data/coco/images"),
                         calibration_batch=2)
    with TensorRTEngine.from_onnx(model, settings, "cuda", normalization=card.input) as engine:
        canvas = next(c for c, size in golden if size == 320)
        got, ref = engine.run1(_to_input([canvas]))[0], _onnxruntime(model, _to_input([canvas]))[0]
    calibration = list((tmp_path / "engines" / "calibration").glob("*.calib"))
    assert len(calibration) == 1 and calibration[0].stat().st_size > 0
    best = int(ref[4].argmax())
    assert abs(float(got[4, best]) - float(ref[4, best])) <= 0.1
    assert _iou(got[:4, best], ref[:4, best]) >= 0.8


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two (cx, cy, w, h) boxes."""
    ax0, ay0, ax1, ay1 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx0, by0, bx1, by1 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    return float(inter / (a[2] * a[3] + b[2] * b[3] - inter))


def test_gpu_preprocessing_matches_cpu_on_cuda(shared: Path):
    from posestream.engines import preprocess as cpu
    from posestream.engines.backends.gpu_preprocess import letterbox, upload_frames, warp_crops
    from posestream.engines import crops as cpu_crops

    image = cv2.imread(str(shared / "data/coco/images/000000000785.jpg"))
    frames = upload_frames(image, "cuda")
    assert frames.is_cuda
    canvas, _, _ = letterbox(frames, (384, 640))
    ref = cpu.letterbox(image, (384, 640), 114)[0].astype(np.float32)
    assert np.abs(canvas[0].permute(1, 2, 0).cpu().numpy() - ref).max() <= 1.0
    boxes = np.array([[277.1, 45.7, 225.1, 333.6], [-20.0, 300.0, 120.0, 200.0]])
    ref_crops, matrices = cpu_crops.warp_crops(image, boxes, (256, 192))
    crops = warp_crops(frames, matrices, [0, 0], (256, 192))
    assert crops.is_cuda
    diff = np.abs(crops.permute(0, 2, 3, 1).cpu().numpy() - ref_crops.astype(np.float32))
    assert diff.mean() < 0.6 and np.percentile(diff, 99.9) < 4.0


def test_full_image_pipeline_tensorrt_vs_onnxruntime(config: Settings, prepared_home: Path,
                                                     shared: Path, tmp_path: Path):
    """`posestream image` end to end on both backends: the same persons, keypoints within 3 px."""
    images = shared / "data" / "coco" / "images"
    env = {**os.environ, "POSESTREAM_HOME": str(prepared_home)}
    results = {}
    for backend, device in (("onnxruntime", "cpu"), ("tensorrt", "cuda")):
        out = tmp_path / f"{backend}.json"
        run = subprocess.run([sys.executable, "-m", "posestream", "image", str(images), "--out", str(out),
                              "--set", f"engine.backend={backend}", "--set", f"engine.device={device}"],
                             env=env, capture_output=True, text=True, timeout=1800)
        assert run.returncode == 0, run.stderr
        results[backend] = json.loads(out.read_text())
    confident = {b: [p for p in r if p["score"] >= 0.5] for b, r in results.items()}
    assert abs(len(confident["tensorrt"]) - len(confident["onnxruntime"])) <= 1
    for person in confident["onnxruntime"]:
        same_image = [p for p in results["tensorrt"] if p["image_id"] == person["image_id"]]
        ref = np.array(person["keypoints"]).reshape(-1, 3)[:, :2]
        best = min(np.abs(np.array(p["keypoints"]).reshape(-1, 3)[:, :2] - ref).max()
                   for p in same_image)
        assert best <= 3.0
