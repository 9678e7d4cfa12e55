"""Top-down SPPE plugins end to end with real (tiny, synthetic) ONNX models; see synthetic_models.py
for what these models are and what they prove."""
from __future__ import annotations

import numpy as np
import pytest

from posestream.stream.core import registry
from posestream.stream.core.contracts import PoseEstimator
from posestream.engines.families.heatmap.pose import HeatmapPose
from posestream.engines.families.simcc.pose import SimccPose
from posestream.stream.core.config import load_config
from posestream.stream.core.errors import ConfigError, InputError, ModelError
from posestream.stream.core.results import Poses

from synthetic_models import DotHeatmaps, DotSimcc, draw_person, export, install

HEATMAP_OUT = {"decoder": "heatmap", "stride": 4, "name": "heatmaps"}
SIMCC_OUT = {"decoder": "simcc", "split_ratio": 2.0}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A model cache with the synthetic models, and files for the load-time error cases."""
    home = tmp_path_factory.mktemp("home")
    build = tmp_path_factory.mktemp("build")
    heat = export(DotHeatmaps(17), build / "dots-heatmap.onnx", ["heatmaps"])
    heat4 = export(DotHeatmaps(17), build / "dots-heatmap-b4.onnx", ["heatmaps"], batch=4)
    simcc = export(DotSimcc(17), build / "dots-simcc.onnx", ["simcc_x", "simcc_y"])
    heat26 = export(DotHeatmaps(26), build / "dots-heatmap26.onnx", ["heatmaps"])
    install(home, "dots-heatmap", "pose-heatmap", heat, HEATMAP_OUT)
    install(home, "dots-heatmap-b4", "pose-heatmap", heat4, HEATMAP_OUT, batch=4)
    install(home, "dots-simcc", "pose-simcc", simcc, SIMCC_OUT)
    install(home, "bgr-card", "pose-heatmap", heat, HEATMAP_OUT, input_spec={
        "size": [256, 192], "color": "BGR", "scale": 1 / 255, "mean": [0, 0, 0], "std": [1, 1, 1]})
    install(home, "simcc-file-heatmap-card", "pose-heatmap", simcc, HEATMAP_OUT)
    install(home, "heatmap-file-simcc-card", "pose-simcc", heat, SIMCC_OUT)
    install(home, "simcc-no-ratio", "pose-simcc", simcc, {"decoder": "simcc"})
    install(home, "wrong-format", "pose-heatmap", heat26, HEATMAP_OUT, fmt="coco17")
    install(home, "wrong-ratio", "pose-simcc", simcc, {"decoder": "simcc", "split_ratio": 3.0})
    damaged = install(home, "damaged", "pose-heatmap", heat, HEATMAP_OUT)
    (damaged / heat.name).write_bytes(b"not onnx")
    return home


def make_config(home, **pose):
    overrides = {"paths.home": str(home), "pose.threads": 1}
    overrides.update({f"pose.{k}": v for k, v in pose.items()})
    return load_config(overrides=overrides)


@pytest.fixture(scope="module")
def scene():
    """Two 480x640 frames: three persons, then none, then two (one small, one at the frame edge)."""
    rng = np.random.default_rng(5)
    boxes_per_frame = [[[40, 60, 120, 240], [250, 100, 100, 150], [420, 30, 160, 300]], [],
                       [[100, 200, 50, 80], [540, 250, 100, 230]]]
    frames, detections, truth = [], [], []
    for i, boxes in enumerate(boxes_per_frame):
        frame = np.zeros((480, 640, 3), np.uint8)
        boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4)
        kps = []
        for box in boxes:
            dots = box[:2] + rng.uniform(0.2, 0.8, (3, 2)) * box[2:]
            dots[:, 0] = np.minimum(dots[:, 0], 632)  # the edge person's dots stay in the frame
            kps.append(draw_person(frame, dots))
        frames.append(frame)
        detections.append(Poses(boxes, np.linspace(0.9, 0.5, len(boxes)), np.zeros((len(boxes), 17, 3)),
                                np.zeros(len(boxes)), np.arange(len(boxes)) + 10 * i))
        truth.append(np.array(kps).reshape(-1, 17, 2))
    return frames, detections, truth


def errors(results, truth):
    return np.concatenate([np.linalg.norm(r.keypoints[..., :2] - t, axis=-1).ravel()
                           for r, t in zip(results, truth) if len(t)])


@pytest.mark.parametrize("cls, model, refine, flip, tolerance", [
    (HeatmapPose, "dots-heatmap", "dark", False, 0.1),
    # quarter offset: <= 1/4 heatmap px per axis; a heatmap px is 5.9 frame px for the largest person
    (HeatmapPose, "dots-heatmap", "none", False, 0.25 * 5.9 * 2 ** 0.5 + 0.1),
    (HeatmapPose, "dots-heatmap", "dark", True, 0.1),     # flip back by the exact 0.75 heatmap px
    (HeatmapPose, "dots-heatmap-b4", "dark", False, 0.1),  # fixed batch 4: 5 crops = 4 + 1 padded
    (SimccPose, "dots-simcc", "dark", False, 0.1),
    (SimccPose, "dots-simcc", "none", False, 0.6),         # bins of half a crop pixel
    (SimccPose, "dots-simcc", "dark", True, 0.1),
])
def test_keypoints_land_on_the_dots(home, scene, cls, model, refine, flip, tolerance):
    frames, detections, truth = scene
    with cls(make_config(home, model=model, refine=refine, flip_test=flip, batch=2)) as sppe:
        assert isinstance(sppe, PoseEstimator)
        results = sppe.estimate(frames, detections)
    assert [len(r) for r in results] == [3, 0, 2]
    err = errors(results, truth)
    assert err.max() < tolerance, f"max error {err.max():.3f} px, mean {err.mean():.3f}"
    for result, det in zip(results, detections):
        assert result.format == "coco17" and result.keypoints.shape[1:] == (17, 3)
        np.testing.assert_array_equal(result.ids, det.ids)
        np.testing.assert_allclose(result.boxes, det.boxes, atol=1e-4)
        np.testing.assert_allclose(result.scores, det.box_scores * result.keypoints[..., 2].mean(1), rtol=1e-5)


def test_batch_size_does_not_change_results(home, scene):
    frames, detections, _ = scene
    outs = []
    for batch in (1, 3, 8):
        with HeatmapPose(make_config(home, model="dots-heatmap", batch=batch)) as sppe:
            outs.append(sppe.estimate(frames, detections))
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-4)


@pytest.mark.parametrize("cls, model", [(HeatmapPose, "dots-heatmap"), (HeatmapPose, "dots-heatmap-b4"),
                                        (SimccPose, "dots-simcc"), (HeatmapPose, "bgr-card")])
def test_normalising_inside_the_model_gives_the_numpy_results(home, scene, cls, model):
    """With OpenVINO (`engine.preprocess = "auto"`) uint8 crops go into the model, which applies the
    card's normalisation; numpy's float crops give the same keypoints (fixed batch padding, flip
    test and the card's colour order included)."""
    frames, detections, _ = scene
    outs = []
    for mode in ("auto", "numpy"):
        config = make_config(home, model=model, flip_test=True, batch=2).with_overrides(
            {"engine.backend": "openvino", "engine.preprocess": mode})
        with cls(config) as sppe:
            assert sppe.takes_images == (mode == "auto")
            outs.append(sppe.estimate(frames, detections))
    for a, b in zip(*outs):
        np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-3)


def test_colour_order_comes_from_the_card(home, scene):
    """The same file with a card that says BGR sees red and blue swapped: keypoints of colour R land
    on the blue dot. Proves the card's colour order is applied (and that the test can fail)."""
    frames, detections, truth = scene
    with HeatmapPose(make_config(home, model="bgr-card")) as sppe:
        results = sppe.estimate(frames[:1], detections[:1])
    assert errors(results, truth[:1]).max() > 10


def test_min_box_score_drops_weak_boxes(home, scene):
    frames, detections, _ = scene
    with HeatmapPose(make_config(home, model="dots-heatmap", min_box_score=0.8)) as sppe:
        results = sppe.estimate(frames, detections)
    assert [r.ids.tolist() for r in results] == [[0], [], [20]]


def test_frames_and_detections_must_pair_up(home, scene):
    frames, detections, _ = scene
    with HeatmapPose(make_config(home, model="dots-heatmap")) as sppe:
        with pytest.raises(InputError, match="3 frames but 2 detection sets"):
            sppe.estimate(frames, detections[:2])
    sppe.close()  # closing twice is fine


def test_plugins_are_registered():
    assert registry.load("posestream.pose", "heatmap") is HeatmapPose
    assert registry.load("posestream.pose", "simcc") is SimccPose


@pytest.mark.parametrize("cls, model, settings, error, match", [
    (HeatmapPose, "simcc-file-heatmap-card", {}, ModelError, "expected one heatmap output"),
    (SimccPose, "heatmap-file-simcc-card", {}, ModelError, "expected two SimCC outputs"),
    (SimccPose, "simcc-no-ratio", {}, ModelError, "split_ratio"),
    (SimccPose, "wrong-ratio", {}, ModelError, "SimCC lengths"),
    (HeatmapPose, "wrong-format", {}, ModelError, "26 heatmap channels"),
    (HeatmapPose, "dots-simcc", {}, ModelError, "needs a 'pose-heatmap' model"),
    (SimccPose, "dots-heatmap", {}, ModelError, "needs a 'pose-simcc' model"),
    (HeatmapPose, "damaged", {}, ModelError, "does not match the sha256 in its card"),
    (HeatmapPose, "no-such-model", {}, ModelError, "not prepared"),
    (HeatmapPose, "dots-heatmap", {"refine": "magic"}, ConfigError, "pose.refine"),
    (HeatmapPose, "dots-heatmap", {"batch": 0}, ConfigError, "pose.batch"),
    (HeatmapPose, "dots-heatmap", {"box_expand": 0.5}, ConfigError, "pose.box_expand"),
])
def test_wrong_models_and_settings_fail_at_load(home, cls, model, settings, error, match):
    with pytest.raises(error, match=match):
        cls(make_config(home, model=model, **settings))
