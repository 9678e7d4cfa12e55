"""INT8 models: built by NNCF into the cache with a card that records the calibration, reused while
intact, rebuilt when stale (another recipe too), chosen by OpenVINO with `engine.precision = "int8"`,
close to FP32 on real images, and a plain install builds them (nncf is a dependency)."""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from posestream.engines.calibration import default_calibration, mosaic, user_calibration, varied
from posestream.engines.models import load_card, prepare_default_model, runtime_model_file
from posestream.engines.quantize import (INT8_KEY, RECIPE, build_int8, ensure_int8, int8_problems, int8_products_saturate,
                                         nncf_available, overflow_fix)
from posestream.stream.core.config import load_config
from posestream.stream.core.errors import InputError, InputNotFoundError, ModelError
from posestream.stream.core.settings import Settings
from machine import FEATURES, cpu_info

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
    for key, value, problem in (("from_sha256", "0" * 64, "another FP32 model"),
                                ("recipe", "nncf-ptq-v2", f"recipe nncf-ptq-v2 is not {RECIPE}"),
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
                                   "quantize.mosaics": 0, "quantize.lighting": False, "quantize.images": 4})
    rebuilt = ensure_int8(small, card, directory)
    assert int8_problems(rebuilt, directory) == []
    assert "ultralytics" in rebuilt.extra[INT8_KEY]["quantization"]["calibration"]["source"]
    assert load_card(config, "yolo11n-pose")[0].extra[INT8_KEY] == rebuilt.extra[INT8_KEY]
    # a model built for the other CPU class (overflow fix or not) is rebuilt for this one by prepare
    wanted = overflow_fix(small.quantize)
    assert rebuilt.extra[INT8_KEY]["quantization"]["overflow_fix"] == wanted
    rebuilt.extra[INT8_KEY]["quantization"]["overflow_fix"] = {"disable": "first_layer", "first_layer": "disable"}[wanted]
    before = xml.stat().st_mtime_ns
    again = ensure_int8(small, rebuilt, directory)
    assert xml.stat().st_mtime_ns != before and again.extra[INT8_KEY]["quantization"]["overflow_fix"] == wanted


def test_a_model_without_the_overflow_fix_is_refused_where_int8_sums_saturate(int8_home: tuple[Settings, Path]) -> None:
    config, directory = int8_home
    card, _ = load_card(config, "yolo11n-pose")
    card.extra[INT8_KEY]["quantization"]["overflow_fix"] = "disable"  # as built on a VNNI CPU
    refused = any("would saturate" in p for p in int8_problems(card, directory, config))
    assert refused == int8_products_saturate()
    card.extra[INT8_KEY]["quantization"]["overflow_fix"] = "first_layer"  # correct on every CPU
    assert int8_problems(card, directory, config) == []
    explicit = config.with_overrides({"quantize.overflow_fix": "disable"})
    assert any("overflow_fix = first_layer, not disable" in p for p in int8_problems(card, directory, explicit))
    assert overflow_fix(explicit.quantize) == "disable"
    card.extra[INT8_KEY]["quantization"].pop("overflow_fix")  # a card from before the setting: NNCF's default
    assert int8_problems(card, directory, config) == []


def test_prepare_keeps_a_model_calibrated_on_your_data_built_for_the_other_cpu_class(
        int8_home: tuple[Settings, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from posestream.engines import quantize

    config, directory = int8_home
    card, _ = load_card(config, "yolo11n-pose")
    monkeypatch.setattr(quantize, "int8_products_saturate", lambda: False)  # as on a VNNI CPU
    card.extra[INT8_KEY]["quantization"]["overflow_fix"] = "first_layer"
    card.extra[INT8_KEY]["quantization"]["calibration"]["source"] = "/cameras/gate.mp4 (6 frames)"
    xml = directory / card.extra[INT8_KEY]["file"]
    before = xml.stat().st_mtime_ns
    with caplog.at_level("INFO", logger="posestream.engines.quantize"):
        kept = ensure_int8(config, card, directory)
    assert xml.stat().st_mtime_ns == before and kept.extra[INT8_KEY]["quantization"]["overflow_fix"] == "first_layer"
    assert "calibrated on your data" in caplog.text and "models quantize yolo11n-pose --calibration" in caplog.text


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="oneDNN's ISA cap is x86")
def test_the_overflow_probe_sees_16_bit_int8_sums() -> None:
    """With oneDNN's kernels capped at AVX2 INT8 products are added in 16 bits on every x86 CPU; uncapped
    they saturate only without VNNI/AMX (the CPU flags say which)."""
    code = "from posestream.engines.quantize import int8_products_saturate as p; print(p())"

    def probe(isa: str | None) -> bool:
        env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
        if isa:
            env["ONEDNN_MAX_CPU_ISA"] = isa
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.strip() == "True"

    _, flags = cpu_info()
    sums_in_32_bits = {flag for name, names in FEATURES if name in ("VNNI", "AMX") for flag in names}
    assert probe("AVX2") is True
    assert probe(None) is not bool(flags & sums_in_32_bits)


def test_default_calibration_needs_no_model_hub(prepared_home: Path) -> None:
    from posestream.stream.demo_clip import calibration_frames as demo_frames

    config = load_config(overrides={"quantize.demo_frames": 3, "quantize.mosaics": 0, "quantize.lighting": False})
    images, source = default_calibration(config, demo_frames)
    assert len(images) == 2 * (2 + 3)  # photos and clip frames, all mirrored
    assert {images[0].shape, images[1].shape} == {(1080, 810, 3), (720, 1280, 3)}  # bus.jpg, zidane.jpg
    assert "bus.jpg" in source and "zidane.jpg" in source and "3 demo-clip frames" in source
    photos_only, source = default_calibration(config)
    assert len(photos_only) == 2 * 2 and "0 demo-clip frames" in source
    varied_config = load_config(overrides={"quantize.demo_frames": 3, "quantize.mosaics": 4, "quantize.lighting": True})
    more, source = default_calibration(varied_config, demo_frames)
    # 4 mosaics; gamma 0.5 / 2 of images 0 and 3; grey of image 1
    assert len(more) == 2 * (2 + 3) + 4 + 3 and "4 mosaics, lighting" in source
    assert all(np.array_equal(a, b) for a, b in zip(more[:10], images))  # the same images come first


def test_mosaics_shrink_people_into_cells_and_lighting_varies_exposure() -> None:
    bright = np.full((300, 200, 3), 200, np.uint8)
    dark = np.full((100, 400, 3), 20, np.uint8)
    tiled = mosaic([bright, dark], 2, size=(720, 1280))
    assert tiled.shape == (720, 1280, 3)
    assert (tiled[:360, :240] == 200).all() and (tiled[:360, 240:640] == 114).all()  # cell 0: 240x360, padded
    assert (tiled[:160, 640:1280] == 20).all() and (tiled[160:360, 640:] == 114).all()  # cell 1: 640x160
    extra = varied([bright, dark, bright, dark], mosaics=2, lighting=True)
    assert [e.shape for e in extra[:2]] == [(720, 1280, 3), (720, 1280, 3)]
    brighter, darker, grey = extra[2], extra[3], extra[4]  # gamma 0.5 of image 0, 2 of image 3, grey of image 1
    assert brighter.mean() > 220 and darker.mean() < 5 and grey.shape == dark.shape
    assert [len(x) for x in (varied([bright], 0, False), varied([bright], 3, False))] == [0, 3]


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


def test_prepare_without_nncf_is_one_error_naming_the_fix(prepared_home: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from posestream.engines import quantize

    home = _fresh_home(prepared_home, tmp_path)
    monkeypatch.setattr(quantize, "nncf_available", lambda: "nncf is not installed (pip install nncf)")
    with pytest.raises(ModelError, match="pip install nncf.*engine.precision=fp32|engine.precision=fp32.*nncf"):
        prepare_default_model(load_config(overrides={"paths.home": str(home)}))
    card, directory = load_card(load_config(overrides={"paths.home": str(home)}), "yolo11n-pose")
    assert card.verify(directory) == [] and INT8_KEY not in card.extra  # the FP32 model is prepared
    fp32 = load_config(overrides={"paths.home": str(home), "engine.precision": "fp32"})
    assert prepare_default_model(fp32).name == "yolo11n-pose"  # FP32 needs no nncf
    shutil.rmtree(home / "models")


def test_a_plain_install_requires_nncf() -> None:
    """`pip install posestream` alone builds the documented INT8 default: nncf is an unconditional
    requirement of the installed distribution, not an extra."""
    from importlib.metadata import requires

    plain = [r for r in requires("posestream") or [] if "extra ==" not in r]
    assert any(r.replace(" ", "").startswith("nncf") for r in plain), plain


def _package_image(package: str, member: str) -> np.ndarray:
    import importlib.util

    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations, f"{package} is not installed"
    image = cv2.imread(str(Path(list(spec.submodule_search_locations)[0]) / member), cv2.IMREAD_COLOR)
    assert image is not None, member
    return image


def test_prepared_int8_model_agrees_with_fp32_on_real_images(prepared_home: Path, shared: Path) -> None:
    """The default INT8 model (as `models prepare` builds it) against FP32 on photos that are neither
    calibration nor evaluation images: scikit-image's cameraman, matplotlib's Grace Hopper, and two
    frames of the shared reference clip (6 persons). Measured on this AVX2 CPU (16-bit sums): box IoU
    >= 0.97, |score difference| <= 0.013, OKS >= 0.94; the bounds (0.85, 0.12, 0.85) leave room for
    other CPUs' INT8 arithmetic (VNNI/AVX-512) and sit above what a broken model gives (a lost or
    moved person: IoU or OKS < 0.5)."""
    from posestream.engines.families.yolo11.detector import YoloDetector

    home = load_config()
    card, _ = load_card(home, "yolo11n-pose")
    assert card.extra[INT8_KEY]["quantization"]["recipe"] == RECIPE
    capture = cv2.VideoCapture(str(shared / VIDEO))
    frames = [capture.read()[1] for _ in range(40)][::39]
    capture.release()
    images = [_package_image("skimage", "data/camera.png"),
              _package_image("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"), *frames]
    found = {}
    for precision in ("fp32", "int8"):
        detector = YoloDetector(load_config(overrides={"engine.backend": "openvino", "engine.precision": precision}))
        try:
            assert detector.model_info["precision"] == precision
            found[precision] = [detector.detect([image])[0] for image in images]
        finally:
            detector.close()
    sigmas = 2 * np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89]) / 10
    compared = 0
    for fp32, int8 in zip(found["fp32"], found["int8"]):
        for i in np.flatnonzero(fp32.scores >= 0.5):
            ious = [_iou(fp32.boxes[i], box) for box in int8.boxes]
            j = int(np.argmax(ious)) if ious else -1
            assert j >= 0 and ious[j] >= 0.85, ious
            assert abs(fp32.scores[i] - int8.scores[j]) <= 0.12, (fp32.scores[i], int8.scores[j])
            truth, other = fp32.keypoints[i], int8.keypoints[j]
            visible = truth[:, 2] > 0.5
            area = 0.53 * fp32.boxes[i][2] * fp32.boxes[i][3]
            d2 = ((truth[:, :2] - other[:, :2]) ** 2).sum(1)
            oks = np.exp(-d2 / (2 * sigmas ** 2 * area))[visible].mean()
            assert oks >= 0.85, oks
            compared += 1
        for j in np.flatnonzero(int8.scores >= 0.5):  # no person FP32 does not (nearly) see
            assert any(_iou(box, int8.boxes[j]) >= 0.5 and s >= 0.3 for box, s in zip(fp32.boxes, fp32.scores))
    assert compared >= 5  # cameraman, Grace Hopper, 2 x 2 dancers


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return float(w * h / (a[2] * a[3] + b[2] * b[3] - w * h))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_head_branches_output_convs_take_float_input(prepared_home: Path) -> None:
    """`[quantize] outputs_in_float` counts each head branch's convs kept in float from the output
    back: in the default model (1) the last conv of the box, score and keypoint branches at each of
    the three strides reads unquantized values, the convs before them INT8 ones."""
    import re

    import openvino as ov

    from posestream.engines.quantize import OUTPUT_FLOAT_PATTERNS, float_patterns

    config = load_config(overrides={"paths.home": str(prepared_home)})
    assert config.quantize.outputs_in_float == 1
    card, directory = load_card(config, "yolo11n-pose")
    model = ov.Core().read_model(str(directory / card.extra[INT8_KEY]["file"]))
    convs = {op.get_friendly_name(): op.input_value(0).get_node().get_type_name() != "FakeQuantize"
             for op in model.get_ops() if op.get_type_name() in ("Convolution", "GroupConvolution")}
    last, before = ([name for name in convs if re.match(pattern, name)] for pattern in OUTPUT_FLOAT_PATTERNS)
    assert len(last) == 9 and all(convs[name] for name in last)
    assert len(before) >= 9 and not any(convs[name] for name in before)
    for count in (0, 1, 2):
        patterns = float_patterns(config.with_overrides({"quantize.outputs_in_float": count}).quantize)
        assert [p for p in patterns if p in OUTPUT_FLOAT_PATTERNS] == OUTPUT_FLOAT_PATTERNS[:count]


def test_run_summary_and_metrics_name_the_precision_that_ran(prepared_home: Path, tmp_path: Path) -> None:
    """The default run states that INT8 ran; a cache without a usable INT8 model runs FP32 and says
    so (in the end-of-run table and in `--metrics`), whatever `engine.precision` asked for."""
    import subprocess
    import sys

    without_int8 = _fresh_home(prepared_home, tmp_path / "fp32-home")
    for home, precision, said in ((prepared_home, "int8", f"INT8 ({RECIPE})"), (without_int8, "fp32", "FP32")):
        metrics = tmp_path / f"{precision}.metrics.json"
        run = subprocess.run(
            [sys.executable, "-m", "posestream", "run", "--quiet", "--source",
             "lavfi:testsrc=size=320x240:rate=10:duration=1", "--sink", f"json:{tmp_path / precision}.json",
             "--metrics", str(metrics), "--set", "engine.backend=openvino"],
            capture_output=True, text=True, env=dict(os.environ, POSESTREAM_HOME=str(home)), timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        assert f"detect ran yolo11n-pose {said} on openvino" in run.stderr
        model = json.loads(metrics.read_text())["stages"]["detect"]["model"]
        assert model["precision"] == precision and model["backend"] == "openvino"
        assert model["file"].endswith(".xml" if precision == "int8" else ".onnx")
