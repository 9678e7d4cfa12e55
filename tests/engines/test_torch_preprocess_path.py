"""The plugins' torch pre-processing path (what runs on the GPU with TensorRT) against their numpy path.

Both paths run the same ONNX Runtime session on the CPU, on real COCO images; only the
pre-processing differs (`engine.preprocess = "torch"` vs `"numpy"`): torch letterbox/normalise for
the detector, torch crops from one upload per frame for the top-down SPPEs. On a GPU the same code
runs with `run_device`; that part is covered by the `gpu` test at the end (skipped without one).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from posestream.engines.backends.base import tensorrt_available
from posestream.engines.backends.torch_inputs import TorchInputs, torch_inputs_for
from posestream.engines.families.yolo11.detector import YoloDetector
from posestream.engines.families.heatmap.pose import HeatmapPose
from posestream.engines.families.simcc.pose import SimccPose
from posestream.engines.families.yolo11.crop_pose import YoloCropPose
from posestream.stream.core.config import load_config
from posestream.stream.core.settings import Settings
from posestream.stream.core.errors import ConfigError
from posestream.stream.core.results import Poses

sys.path.insert(0, str(Path(__file__).parent))  # the synthetic SPPE models live there
from synthetic_models import DotHeatmaps, DotSimcc, export, install  # noqa: E402

torch.set_num_threads(1)
cv2.setNumThreads(1)


def with_mode(config: Settings, mode: str, **overrides: object) -> Settings:
    """The defaults (bound to the prepared model cache, like `config`) with one pre-processing mode."""
    return load_config(overrides={"engine.preprocess": mode, "detector.threads": 1, "pose.threads": 1,
                                  "engine.precision": "fp32", **overrides})  # bounds measured on FP32


@pytest.fixture(scope="module")
def images(shared: Path) -> dict[int, np.ndarray]:
    paths = sorted((shared / "data/coco/images").glob("*.jpg"))
    assert len(paths) >= 8, "shared COCO images are missing"
    return {int(p.stem): cv2.imread(str(p)) for p in paths}


@pytest.fixture(scope="module")
def fixed_boxes(shared: Path, images) -> list[Poses]:
    """The shared person detections (AlphaPose's detector) scoring >= 0.3 per image (33 persons):
    the same boxes for both paths."""
    by_image: dict[int, list] = {i: [] for i in images}
    for det in json.loads((shared / "data/coco/person_detections_AP_H_56.json").read_text()):
        if det["score"] >= 0.3:
            by_image[det["image_id"]].append(det)
    out = []
    for dets in by_image.values():
        boxes = np.array([d["bbox"] for d in dets], dtype=np.float64).reshape(-1, 4)
        scores = np.array([d["score"] for d in dets], dtype=np.float64)
        out.append(Poses(boxes, scores, np.zeros((len(dets), 17, 3)), scores))
    return out


def run_detector(config: Settings, frames: list[np.ndarray]) -> list[Poses]:
    detector = YoloDetector(config)
    try:
        return detector.detect(frames)
    finally:
        detector.close()


def test_mode_selection_and_bad_mode(config: Settings):
    """auto = numpy with ONNX Runtime; torch = on the CPU with ONNX Runtime; a bad name: one ConfigError."""
    cases = [("auto", None), ("numpy", None), ("torch", "cpu"), ("gpu", ConfigError)]
    for mode, expected in cases:
        if expected is ConfigError:
            with pytest.raises(ConfigError, match="engine.preprocess"):
                YoloDetector(with_mode(config, mode))
            continue
        detector = YoloDetector(with_mode(config, mode))
        inputs = torch_inputs_for(mode, detector.engine)
        detector.close()
        assert (inputs is None) == (expected is None), mode
        if inputs is not None:
            assert isinstance(inputs, TorchInputs) and inputs.device.type == expected and not inputs.on_gpu


def test_numpy_path_does_not_import_torch(prepared_home: Path, shared: Path):
    """Importing torch costs seconds and hundreds of MB per stage process: the default CPU path must
    not pay for it (a fresh interpreter, since this one has torch loaded already)."""
    image = sorted((shared / "data/coco/images").glob("*.jpg"))[0]
    code = ("import sys, cv2; from posestream.stream.core.config import load_config; "
            "from posestream.engines.families.yolo11.detector import YoloDetector; from posestream.engines.families.yolo11.crop_pose import YoloCropPose; "
            "c = load_config(overrides={'detector.threads': 1, 'pose.threads': 1}); "
            f"f = cv2.imread({str(image)!r}); d = YoloDetector(c); p = YoloCropPose(c); "
            "n = sum(len(r) for r in p.estimate([f], d.detect([f]))); print(n, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    persons, torch_loaded = out.stdout.split()
    assert int(persons) > 0 and torch_loaded == "False"


@pytest.mark.parametrize("overrides", [
    {}, {"detector.rectangular": False, "detector.input_size": 320},
    {"detector.rectangular": False, "detector.input_size": 640},
], ids=["rectangular-640", "square-320", "square-640"])
def test_detector_torch_path_matches_numpy(config: Settings, images, overrides):
    """Same persons per image; boxes within 1 px, person scores within 0.01; 95% of the confident
    keypoints within 1 px (all within 8 px) and 95% of the keypoint scores within 0.01 (all within 0.15).

    The torch letterbox interpolates in float, OpenCV in fixed point: canvases differ by at most one
    8-bit level (tests/engines/backends/test_gpu_preprocess.py). Measured on the 8 images: boxes <= 0.56 px;
    keypoints 98-100% within 1 px. The outliers (6.4 px for one ankle, 0.09 in keypoint score, at
    square 640) are NMS keeping a neighbouring anchor of the same person, which regresses its
    keypoints a little differently.
    """
    frames = list(images.values())
    numpy_out = run_detector(with_mode(config, "numpy", **overrides), frames)
    torch_out = run_detector(with_mode(config, "torch", **overrides), frames)
    assert sum(len(p) for p in numpy_out) >= 20  # real people found, so the comparison means something
    moved, rescored = [], []
    for a, b in zip(numpy_out, torch_out):
        assert len(a) == len(b)
        np.testing.assert_allclose(b.boxes, a.boxes, atol=1.0)
        np.testing.assert_allclose(b.box_scores, a.box_scores, atol=0.01)
        rescored.append(np.abs(a.keypoints[..., 2] - b.keypoints[..., 2]).ravel())
        confident = (a.keypoints[..., 2] > 0.5) & (b.keypoints[..., 2] > 0.5)
        moved.append(np.linalg.norm(a.keypoints[..., :2] - b.keypoints[..., :2], axis=-1)[confident])
    moved, rescored = np.concatenate(moved), np.concatenate(rescored)
    assert moved.size > 200 and np.mean(moved <= 1.0) >= 0.95 and moved.max() <= 8.0, \
        np.percentile(moved, [50, 95, 100])
    assert np.mean(rescored <= 0.01) >= 0.95 and rescored.max() <= 0.15, np.percentile(rescored, [50, 95, 100])


def estimate(cls, config: Settings, frames: list[np.ndarray], boxes: list[Poses]) -> list[Poses]:
    with cls(config) as sppe:
        return sppe.estimate(frames, boxes)


def assert_same_poses(numpy_out: list[Poses], torch_out: list[Poses], px: float, score: float) -> None:
    assert [len(p) for p in numpy_out] == [len(p) for p in torch_out]
    assert sum(len(p) for p in numpy_out) >= 20
    for a, b in zip(numpy_out, torch_out):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        moved = np.linalg.norm(a.keypoints[..., :2] - b.keypoints[..., :2], axis=-1)
        assert moved.size == 0 or moved.max() <= px, moved.max()
        np.testing.assert_allclose(b.keypoints[..., 2], a.keypoints[..., 2], rtol=score, atol=score)
        np.testing.assert_allclose(b.scores, a.scores, rtol=score, atol=score)


def test_yolo_crop_torch_path_matches_numpy_on_fixed_boxes(config: Settings, images, fixed_boxes):
    """yolo-crop on AlphaPose's boxes: every keypoint within 0.25 px, scores within 0.01 (measured:
    0.05 px). The torch crops are rounded to 8-bit levels like OpenCV's; unrounded, this model moved
    keypoints of small persons by up to 4 px."""
    frames = list(images.values())
    numpy_out = estimate(YoloCropPose, with_mode(config, "numpy", **{"pose.batch": 4}), frames, fixed_boxes)
    torch_out = estimate(YoloCropPose, with_mode(config, "torch", **{"pose.batch": 4}), frames, fixed_boxes)
    assert_same_poses(numpy_out, torch_out, px=0.25, score=0.01)


def test_detector_then_yolo_crop_on_torch_matches_numpy(config: Settings, images):
    """The whole top-down chain on each path: same persons, and 95% of the confident keypoints
    within 1 px. Not tighter: the detector's sub-pixel box differences (above) move yolo-crop's
    crops, and its keypoints of small, weak persons follow by a few pixels (measured max 3.5 px)."""
    frames = list(images.values())
    outs = []
    for mode in ("numpy", "torch"):
        cfg = with_mode(config, mode, **{"pose.batch": 8, "detector.score_threshold": 0.3})
        outs.append(estimate(YoloCropPose, cfg, frames, run_detector(cfg, frames)))
    moved = []
    for a, b in zip(*outs):
        assert len(a) == len(b)
        confident = (a.keypoints[..., 2] > 0.5) & (b.keypoints[..., 2] > 0.5)
        moved.append(np.linalg.norm(a.keypoints[..., :2] - b.keypoints[..., :2], axis=-1)[confident])
    moved = np.concatenate(moved)
    assert moved.size > 100 and np.mean(moved <= 1.0) >= 0.95 and moved.max() < 8, np.percentile(moved, [50, 95, 100])


@pytest.fixture(scope="module")
def synthetic_home(tmp_path_factory) -> Path:
    """Synthetic heatmap / SimCC SPPEs (fixed convolutions, see synthetic_models.py): exercise flip
    test and a fixed-batch model on the torch path."""
    home = tmp_path_factory.mktemp("home")
    build = tmp_path_factory.mktemp("build")
    install(home, "dots-heatmap", "pose-heatmap", export(DotHeatmaps(17), build / "h.onnx", ["heatmaps"]),
            {"decoder": "heatmap", "stride": 4, "name": "heatmaps"})
    install(home, "dots-heatmap-b4", "pose-heatmap",
            export(DotHeatmaps(17), build / "h4.onnx", ["heatmaps"], batch=4),
            {"decoder": "heatmap", "stride": 4, "name": "heatmaps"}, batch=4)
    install(home, "dots-simcc-bgr", "pose-simcc", export(DotSimcc(17), build / "s.onnx", ["simcc_x", "simcc_y"]),
            {"decoder": "simcc", "split_ratio": 2.0}, input_spec={
                "size": [256, 192], "color": "BGR", "scale": 1 / 255, "mean": [0.4, 0.45, 0.5],
                "std": [0.22, 0.23, 0.24]})
    return home


@pytest.mark.parametrize("cls, model, flip", [
    (HeatmapPose, "dots-heatmap", True),      # flip test: mirrored crops made in torch
    (HeatmapPose, "dots-heatmap-b4", False),  # fixed batch 4: the last batch is zero-padded in torch
    (SimccPose, "dots-simcc-bgr", True),      # BGR card with mean/std: the card's normalisation
])
def test_synthetic_sppes_torch_path_matches_numpy(synthetic_home, images, fixed_boxes, cls, model, flip):
    frames = list(images.values())
    outs = []
    for mode in ("numpy", "torch"):
        cfg = load_config(overrides={"paths.home": str(synthetic_home), "engine.preprocess": mode,
                                     "pose.model": model, "pose.flip_test": flip, "pose.batch": 4,
                                     "pose.threads": 1})
        outs.append(estimate(cls, cfg, frames, fixed_boxes))
    assert_same_poses(*outs, px=0.25, score=0.01)


GPU_REASON = tensorrt_available()


@pytest.mark.gpu
@pytest.mark.skipif(GPU_REASON is not None, reason=GPU_REASON or "")
def test_tensorrt_backend_takes_the_torch_path_on_the_gpu(config: Settings, images):  # pragma: no cover
    """With TensorRT, `auto` pre-processes on the GPU; detections agree with ONNX Runtime + numpy
    (FP32 engine: the same tolerances as the CPU comparison above, plus the engine's own error)."""
    frames = list(images.values())
    reference = run_detector(with_mode(config, "numpy"), frames)
    gpu_config = with_mode(config, "auto", **{"engine.backend": "tensorrt", "tensorrt.precision": "fp32"})
    detector = YoloDetector(gpu_config)
    try:
        assert detector.torch_inputs is not None and detector.torch_inputs.on_gpu
        found = detector.detect(frames)
    finally:
        detector.close()
    for a, b in zip(reference, found):
        assert len(a) == len(b)
        np.testing.assert_allclose(b.boxes, a.boxes, atol=1.0)
