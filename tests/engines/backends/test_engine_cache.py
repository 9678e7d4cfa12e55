"""TensorRT engine cache, profiles, settings, backend selection and the `engines` command.

None of this needs a GPU: keys, paths, profiles and validation are pure Python, and the backend
selection is checked against what this machine really has (plus the decision table for others).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import posestream.engines.backends.base as base
from posestream.engines.backends import factory
from posestream.engines.backends.base import tensorrt_available
from posestream.engines.backends.factory import create_engine, resolve_backend
from posestream.engines.backends.engine_cache import (BatchProfile, EngineCache, EngineKey, cache_root,
                                                     compute_profile, profile_tag)
from posestream.engines.backends.tensorrt_build import CalibrationImages, onnx_inputs
from posestream.stream.core.config import home_dir, load_config
from posestream.stream.core.settings import Settings
from posestream.stream.core.errors import (BackendUnavailableError, ConfigError, InputError, InputNotFoundError,
                           ModelError)

KEY = EngineKey(model_sha256="ab" * 32, gpu_name="NVIDIA GeForce RTX 3060", compute_capability="8.6",
                tensorrt_version="10.3.0", precision="fp16",
                profile="images:1x3x320x320/4x3x320x320/16x3x320x320")


# --- settings -------------------------------------------------------------------------------

SETTINGS_CASES = [  # (overrides, expected exception or None)
    ({}, None),
    ({"tensorrt.precision": "int8"}, None),
    ({"tensorrt.precision": "int4"}, ConfigError),
    ({"tensorrt.precision": 16}, ConfigError),              # wrong type: caught by load_config
    ({"tensorrt.workspace_mib": 8}, ConfigError),
    ({"tensorrt.min_batch": 0}, ConfigError),
    ({"tensorrt.min_batch": 4, "tensorrt.opt_batch": 2}, ConfigError),
    ({"tensorrt.opt_batch": 32, "tensorrt.max_batch": 16}, ConfigError),
    ({"tensorrt.max_batch": 2048}, ConfigError),
    ({"tensorrt.max_input_size": 16}, ConfigError),
    ({"tensorrt.calibration_batch": 0}, ConfigError),
    ({"tensorrt.calibration_max_images": 0}, ConfigError),
    ({"tensorrt.cache_dir": "/tmp/engines"}, None),
]


@pytest.mark.parametrize("overrides,error", SETTINGS_CASES)
def test_settings_are_validated_where_they_enter(overrides, error):
    if error is None:
        settings = load_config(overrides=overrides).tensorrt
        batch = BatchProfile.of(settings)
        assert batch.min <= batch.opt <= batch.max
        assert settings.workspace_bytes == settings.workspace_mib * 1024 * 1024
    else:
        with pytest.raises(error):
            load_config(overrides=overrides)


def test_defaults_come_from_config_toml():
    settings = load_config().tensorrt
    assert (settings.precision, BatchProfile.of(settings)) == ("fp16", BatchProfile(1, 4, 16))  # config.toml's defaults


@pytest.mark.parametrize("profile,max_batch,expected", [
    (BatchProfile(1, 4, 16), 8, BatchProfile(1, 4, 8)),
    (BatchProfile(1, 4, 16), 2, BatchProfile(1, 2, 2)),
    (BatchProfile(2, 4, 16), 1, BatchProfile(1, 1, 1)),
    (BatchProfile(1, 4, 16), 64, BatchProfile(1, 4, 64)),
])
def test_max_batch_flag_clamps_the_profile(profile, max_batch, expected):
    assert profile.with_max(max_batch) == expected


# --- profiles -------------------------------------------------------------------------------

PROFILE_CASES = [  # (input shape, max_hw, expected (min, opt, max) or exception)
    ((None, 3, 320, 320), None, ((1, 3, 320, 320), (4, 3, 320, 320), (16, 3, 320, 320))),
    ((-1, 3, 256, 192), None, ((1, 3, 256, 192), (4, 3, 256, 192), (16, 3, 256, 192))),
    ((1, 3, 640, 640), None, ((1, 3, 640, 640),) * 3),              # fixed batch stays fixed
    ((None, 3, None, None), (640, 640), ((1, 3, 32, 32), (4, 3, 640, 640), (16, 3, 640, 640))),
    ((None, 3, None, None), (384, 640), ((1, 3, 32, 32), (4, 3, 384, 640), (16, 3, 384, 640))),
    ((None, 3, None, None), None, ConfigError),                       # dynamic H/W needs a size
    ((None, 3, None, None), (16, 16), ConfigError),                   # smaller than one stride
    ((None, None, 320, 320), None, ModelError),                       # dynamic channels
    ((None, 17), None, ((1, 17), (4, 17), (16, 17))),
]


@pytest.mark.parametrize("shape,max_hw,expected", PROFILE_CASES)
def test_profile_computation(shape, max_hw, expected):
    batch = BatchProfile(1, 4, 16)
    if isinstance(expected, type):
        with pytest.raises(expected):
            compute_profile({"images": shape}, batch, max_hw)
    else:
        assert compute_profile({"images": shape}, batch, max_hw) == {"images": expected}


def test_profile_of_the_real_model_variants(config: Settings):
    from posestream.engines.models import load_card

    card, directory = load_card(config, config.model.name)
    batch = BatchProfile(1, 2, 8)
    tags = set()
    for variant in card.files:
        inputs = onnx_inputs(card.file(directory, variant))
        assert list(inputs) == ["images"]
        assert list(inputs["images"]) == card.files[variant]["input_shape"]
        shapes = compute_profile(inputs, batch, (640, 640))
        low, opt, high = shapes["images"]
        assert low[1] == opt[1] == high[1] == 3
        tags.add(profile_tag(shapes))
    assert len(tags) == len(card.files)  # every variant gets its own engine


def test_onnx_inputs_rejects_what_is_not_onnx(tmp_path: Path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf \x00\xff")
    with pytest.raises(ModelError):
        onnx_inputs(bad)
    with pytest.raises(InputNotFoundError):
        onnx_inputs(tmp_path / "missing.onnx")


# --- keys and the cache ---------------------------------------------------------------------

def test_key_digest_is_stable_and_readable():
    assert KEY.digest() == replace(KEY).digest()
    assert len(KEY.digest()) == 16 and int(KEY.digest(), 16) >= 0


@pytest.mark.parametrize("field,value", [
    ("model_sha256", "cd" * 32), ("gpu_name", "NVIDIA A100-SXM4-40GB"), ("compute_capability", "8.0"),
    ("tensorrt_version", "10.4.0"), ("precision", "int8"),
    ("profile", "images:1x3x320x320/4x3x320x320/8x3x320x320"),
])
def test_every_key_field_changes_the_engine_file(field, value, tmp_path: Path):
    cache = EngineCache(tmp_path)
    other = replace(KEY, **{field: value})
    assert other.digest() != KEY.digest()
    assert cache.engine_path(other, "m") != cache.engine_path(KEY, "m")


@pytest.mark.parametrize("field,value", [("precision", "fp8"), ("gpu_name", ""), ("profile", None)])
def test_bad_key_fields_are_rejected(field, value):
    with pytest.raises(ConfigError):
        replace(KEY, **{field: value})


def test_cache_lives_under_home_unless_overridden(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("POSESTREAM_HOME", str(tmp_path / "home"))
    config = load_config()
    assert cache_root(config.tensorrt, home_dir(config)) == tmp_path / "home" / "engines"
    assert cache_root(config.tensorrt, tmp_path / "h2") == tmp_path / "h2" / "engines"
    settings = config.tensorrt.with_values(cache_dir=str(tmp_path / "elsewhere"))
    assert cache_root(settings, home_dir(config)) == tmp_path / "elsewhere"


def test_store_then_lookup_round_trip(tmp_path: Path):
    cache = EngineCache(tmp_path / "engines")
    plan = os.urandom(4096)
    path = cache.store(KEY, "yolo11n-pose-dynamic", plan, extra={"workspace_mib": 1024})
    assert path.parent == tmp_path / "engines" and path.suffix == ".engine"
    assert path.name.startswith("yolo11n-pose-dynamic-fp16-")
    assert cache.lookup(KEY, "yolo11n-pose-dynamic") == path
    assert path.read_bytes() == plan
    meta = json.loads(cache.meta_path(path).read_text())
    assert meta["key"] == KEY.as_dict() and meta["engine_bytes"] == 4096
    assert not list(path.parent.glob("*.tmp"))  # atomic writes leave no temp files


def test_mismatched_metadata_is_never_loaded(tmp_path: Path):
    """An engine whose JSON names another GPU/TensorRT (e.g. copied from another machine) is stale."""
    cache = EngineCache(tmp_path)
    path = cache.store(KEY, "m", b"plan-bytes")
    meta_file = cache.meta_path(path)
    meta = json.loads(meta_file.read_text())
    meta["key"]["tensorrt_version"] = "10.0.1"
    meta_file.write_text(json.dumps(meta))
    assert cache.lookup(KEY, "m") is None


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete-json", "garbage-json", "delete-engine"])
def test_damaged_entries_are_rebuilt_not_loaded(tmp_path: Path, damage: str):
    cache = EngineCache(tmp_path)
    path = cache.store(KEY, "m", os.urandom(1000))
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:500])
    elif damage == "flip":
        data = bytearray(path.read_bytes())
        data[10] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "delete-json":
        cache.meta_path(path).unlink()
    elif damage == "garbage-json":
        cache.meta_path(path).write_text("{not json")
    else:
        path.unlink()
    assert cache.lookup(KEY, "m") is None
    # Storing again repairs the entry.
    cache.store(KEY, "m", b"fresh")
    assert cache.lookup(KEY, "m") == path


def test_empty_plan_is_refused(tmp_path: Path):
    with pytest.raises(ModelError):
        EngineCache(tmp_path).store(KEY, "m", b"")


def test_calibration_cache_path_depends_on_model_and_input_not_gpu(tmp_path: Path):
    cache = EngineCache(tmp_path)
    a = cache.calibration_path(KEY.model_sha256, "(1, 3, 640, 640):abc")
    assert a == cache.calibration_path(KEY.model_sha256, "(1, 3, 640, 640):abc")
    assert a != cache.calibration_path(KEY.model_sha256, "(1, 3, 320, 320):abc")
    assert a != cache.calibration_path("cd" * 32, "(1, 3, 640, 640):abc")
    assert a.parent == tmp_path / "calibration"


# --- INT8 calibration data (no TensorRT needed to read it) -----------------------------------

def test_calibration_images_are_batched_and_normalised(shared: Path):
    folder = shared / "data" / "coco" / "images"
    n_files = len([p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".png")])
    images = CalibrationImages(folder, (320, 320), batch_size=3, max_images=7,
                               normalization={"color": "RGB", "scale": 1 / 255, "mean": [0, 0, 0],
                                              "std": [1, 1, 1], "letterbox_pad": 114})
    assert len(images.files) == min(7, n_files) and len(images) == len(images.files) // 3
    batches = list(images)
    assert len(batches) == len(images)
    for batch in batches:
        assert batch.shape == (3, 3, 320, 320) and batch.dtype == np.float32
        assert 0.0 <= batch.min() and batch.max() <= 1.0
    from posestream.engines.preprocess import letterbox, to_input
    import cv2

    canvas, _ = letterbox(cv2.imread(str(images.files[0])), (320, 320), 114)
    np.testing.assert_array_equal(batches[0][0], to_input([canvas])[0])  # the pipeline's own numpy path
    other = CalibrationImages(folder, (320, 320), batch_size=2, max_images=7)
    assert other.tag() != images.tag()
    np.testing.assert_array_equal(list(other)[0][0], batches[0][0])  # no card: what to_input does


def test_calibration_images_follow_the_card(shared: Path):
    """A card asking for BGR, a mean, a std and another pad gets exactly that; a malformed card is
    one ModelError, as when the model itself is loaded."""
    folder = shared / "data" / "coco" / "images"
    card = {"color": "BGR", "scale": 1.0, "mean": [100.0, 110.0, 120.0], "std": [50.0, 60.0, 70.0],
            "letterbox_pad": 0}
    batch = next(iter(CalibrationImages(folder, (256, 192), batch_size=1, max_images=1, normalization=card)))
    from posestream.engines.preprocess import letterbox
    import cv2

    image = cv2.imread(str(sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".png"))[0]))
    canvas, _ = letterbox(image, (256, 192), 0)
    expected = (canvas.transpose(2, 0, 1).astype(np.float32) - np.float32([100, 110, 120])[:, None, None]) \
        / np.float32([50, 60, 70])[:, None, None]
    np.testing.assert_allclose(batch[0], expected, rtol=1e-6)
    with pytest.raises(ModelError, match="input.color"):
        CalibrationImages(folder, (64, 64), 1, 1, normalization={"color": "YUV"})
    with pytest.raises(ModelError, match="std has a zero"):
        CalibrationImages(folder, (64, 64), 1, 1, normalization={"std": [1, 0, 1]})


def test_calibration_folder_errors(tmp_path: Path):
    with pytest.raises(InputNotFoundError):
        CalibrationImages(tmp_path / "nope", (64, 64), 2, 10)
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(InputError):
        CalibrationImages(tmp_path, (64, 64), 2, 10)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(InputError):
        list(CalibrationImages(tmp_path, (64, 64), 1, 10))


# --- backend selection ----------------------------------------------------------------------

def _ort_has_cuda() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def test_auto_on_a_machine_without_nvidia_devices_never_imports_torch():
    """Asking torch whether it sees a GPU costs each stage seconds and hundreds of MB: without
    /dev/nvidia* devices `auto` must decide without importing it."""
    import subprocess
    import sys

    code = ("import sys; from posestream.engines.backends import factory; "
            "factory.nvidia_device_present = lambda: False; "
            "print(factory.resolve_backend('auto')[0], 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    backend, torch_loaded = out.stdout.split()
    assert backend in ("openvino", "onnxruntime") and torch_loaded == "False"


def test_auto_picks_what_this_machine_has():
    backend, device = resolve_backend("auto")
    if tensorrt_available() is None:
        assert (backend, device) == ("tensorrt", "cuda")
    elif _ort_has_cuda():
        assert (backend, device) == ("onnxruntime", "cuda")
    else:  # openvino is a dependency: the fastest CPU backend
        assert (backend, device) == ("openvino", "cpu")


SELECTION_TABLE = [  # (requested, device, trt reason, ort providers, expected or exception)
    ("auto", "cpu", None, ["CPUExecutionProvider"], ("tensorrt", "cuda")),
    ("auto", "cuda:1", None, ["CPUExecutionProvider"], ("tensorrt", "cuda:1")),
    ("auto", "cpu", "no CUDA device", ["CUDAExecutionProvider", "CPUExecutionProvider"],
     ("onnxruntime", "cuda")),
    ("auto", "cpu", "tensorrt not importable", ["CPUExecutionProvider"], ("openvino", "cpu")),
    ("onnxruntime", "cpu", None, ["CUDAExecutionProvider"], ("onnxruntime", "cpu")),
    ("tensorrt", "cpu", None, ["CPUExecutionProvider"], ("tensorrt", "cuda")),
    ("tensorrt", "cuda:0", "no CUDA device", ["CPUExecutionProvider"], BackendUnavailableError),
    ("openvino", "cpu", None, ["CPUExecutionProvider"], ("openvino", "cpu")),
    ("nosuch", "cpu", None, ["CPUExecutionProvider"], ConfigError),
]


@pytest.mark.parametrize("requested,device,reason,providers,expected", SELECTION_TABLE)
def test_backend_selection_table(monkeypatch, requested, device, reason, providers, expected):
    """The decision for machines unlike this one: the two facts it depends on are set explicitly."""
    import onnxruntime

    monkeypatch.setattr(base, "tensorrt_available", lambda: reason)
    monkeypatch.setattr(factory, "importable", lambda package: True)  # as if tensorrt were installed
    monkeypatch.setattr(factory, "nvidia_device_present", lambda: True)  # the GPU backends are asked
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: providers)
    if isinstance(expected, type):
        with pytest.raises(expected) as info:
            resolve_backend(requested, device)
        if reason:
            assert reason in str(info.value)
    else:
        assert resolve_backend(requested, device) == expected


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real two-layer conv net with a dynamic batch axis."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 2, 1)).eval()
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    with torch.no_grad():
        torch.onnx.export(net, (torch.rand(1, 3, 16, 16),), str(path), input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "b"}, "y": {0: "b"}},
                          opset_version=17, dynamo=False)
    return path


def test_auto_backend_runs_a_real_model_here(tiny_onnx: Path):
    with create_engine(tiny_onnx, backend="auto", threads=1) as engine:
        expected_backend = "tensorrt" if tensorrt_available() is None else "openvino"
        assert engine.backend == expected_backend
        out = engine.run1(np.random.default_rng(0).random((3, 3, 16, 16), dtype=np.float32))
        assert out.shape == (3, 2, 16, 16)


@pytest.mark.skipif(tensorrt_available() is None, reason="TensorRT can run here")
def test_tensorrt_request_without_it_is_one_clear_error(tiny_onnx: Path):
    from posestream.engines.backends.tensorrt_engine import TensorRTEngine

    reason = tensorrt_available()
    with pytest.raises(BackendUnavailableError, match=reason):
        create_engine(tiny_onnx, backend="tensorrt")
    with pytest.raises(BackendUnavailableError, match=reason):
        TensorRTEngine.from_onnx(tiny_onnx, load_config(), "cuda")


# --- the `posestream engines` command -------------------------------------------------------

def _cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "POSESTREAM_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "posestream", "engines", *args], env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(tensorrt_available() is None, reason="TensorRT can run here: the GPU test builds")
def test_engines_build_says_precisely_why_it_cannot_run(config: Settings, prepared_home: Path):
    result = _cli("build", "--model", config.model.name, "--precision", "fp16", home=prepared_home)
    assert result.returncode == 2
    assert f"cannot build a TensorRT engine here: {tensorrt_available()}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args,message", [
    (["--max-batch", "0"], "outside the allowed range"),
    (["--variant", "999"], "no variant '999'"),
    (["--set", "tensorrt.opt_batch=99"], "min <= opt <= max"),
])
def test_engines_build_rejects_bad_flags(config: Settings, prepared_home: Path, args, message):
    result = _cli("build", "--model", config.model.name, *args, home=prepared_home)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_engines_build_unknown_model(tmp_path: Path):
    result = _cli("build", "--model", "no-such-model", home=tmp_path)
    assert result.returncode == 2 and "not prepared" in result.stderr


def test_engines_list_shows_cached_engines(tmp_path: Path):
    assert "no TensorRT engines" in _cli("list", home=tmp_path).stdout
    EngineCache(tmp_path / "engines").store(KEY, "yolo11n-pose-dynamic", b"x" * 2_000_000)
    result = _cli("list", home=tmp_path)
    assert result.returncode == 0
    assert "yolo11n-pose-dynamic" in result.stdout and "RTX 3060" in result.stdout
    assert "sm 8.6" in result.stdout and "TensorRT 10.3.0" in result.stdout and "ok" in result.stdout


def test_build_picks_the_most_dynamic_variant_by_default(config: Settings):
    from posestream.engines.models import load_card
    from posestream.commands.engines import pick_variant

    card, _ = load_card(config, config.model.name)
    assert pick_variant(card.files, None) == "dynamic"  # dynamic batch and height/width
    assert pick_variant(card.files, "320-dynamic-batch") == "320-dynamic-batch"
    with pytest.raises(ModelError, match="no variant"):
        pick_variant(card.files, "1280")
