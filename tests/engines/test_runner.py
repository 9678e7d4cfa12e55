"""`ModelRunner`: the one place a model is opened - sha256 against its card, the card's task, the factory."""
from __future__ import annotations

import ast
import shutil
from pathlib import Path

import numpy as np
import pytest

from posestream.engines.backends import factory
from posestream.engines.backends.base import Engine
from posestream.engines.model_card import ModelCard
from posestream.engines.families.yolo11.detector import YoloDetector
from posestream.engines.families.heatmap.pose import HeatmapPose
from posestream.stream.core.config import load_config
from posestream.stream.core.errors import BackendUnavailableError, ConfigError, ModelError
from posestream.stream.core.settings import Settings

ENGINES = Path(factory.__file__).parent


@pytest.fixture
def copied_home(tmp_path: Path, prepared_home: Path, config: Settings) -> tuple[Path, ModelCard, Path]:
    """A cache holding a real copy of the default model's card and its `dynamic` file."""
    name = config.model.name
    source = prepared_home / "models" / name
    target = tmp_path / "models" / name
    target.mkdir(parents=True)
    shutil.copy(source / "model.json", target)
    card = ModelCard.load(target)
    onnx = target / card.files["dynamic"]["file"]
    shutil.copy(source / onnx.name, onnx)
    return tmp_path, card, onnx


def test_the_copied_model_opens(copied_home):
    home, _, _ = copied_home
    with YoloDetector(load_config(overrides={"paths.home": str(home)})) as detector:
        assert detector.variant == "dynamic"
        poses = detector.detect([np.zeros((96, 128, 3), np.uint8)])
        assert len(poses) == 1


def test_a_tampered_model_file_is_refused_by_the_detector(copied_home):
    home, _, onnx = copied_home
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the weights: still loadable, wrong numbers
    onnx.write_bytes(bytes(data))
    with pytest.raises(ModelError) as info:
        YoloDetector(load_config(overrides={"paths.home": str(home)}))
    message = str(info.value)
    assert "does not match the sha256 in its card" in message and onnx.name in message
    assert "\n" not in message


def test_a_missing_model_file_is_refused(copied_home):
    home, _, onnx = copied_home
    onnx.unlink()
    with pytest.raises(ModelError, match="is missing"):
        YoloDetector(load_config(overrides={"paths.home": str(home)}))


def test_the_detector_pads_with_the_cards_letterbox_fill(copied_home):
    """The grey around a frame that does not fill the canvas is the card's `letterbox_pad` (the model
    learnt on it); a fill that is no grey level is one clear error naming the key."""
    home, card, onnx = copied_home
    frame = np.random.default_rng(0).integers(0, 256, (64, 256, 3), dtype=np.uint8)  # wide: pad above and below
    outputs = {}
    for pad in (114, 0):
        card.input["letterbox_pad"] = pad
        card.save(onnx.parent)
        with YoloDetector(load_config(overrides={"paths.home": str(home)})) as detector:
            assert detector.pad == pad
            rows, _ = detector._infer([frame], (256, 256))
            outputs[pad] = rows[0]
    assert not np.allclose(outputs[114], outputs[0], atol=1e-3)  # the model saw another fill
    for bad in (300, -1, "114", 1.5, True):
        card.input["letterbox_pad"] = bad
        card.save(onnx.parent)
        with pytest.raises(ModelError, match="input.letterbox_pad") as info:
            YoloDetector(load_config(overrides={"paths.home": str(home)}))
        assert "\n" not in str(info.value)


def test_the_card_kind_is_checked(copied_home):
    home, _, _ = copied_home
    config = load_config(overrides={"paths.home": str(home), "pose.model": "yolo11n-pose"})
    with pytest.raises(ModelError, match="needs a 'pose-heatmap' model"):
        HeatmapPose(config)


def test_plugins_take_the_run_settings(config: Settings):
    with YoloDetector(config) as a, YoloDetector(config.with_overrides({"detector.threads": 1})) as b:
        expected = factory.resolve_backend("auto")[0]  # the default backend is auto
        assert a.variant == b.variant and a.engine.backend == b.engine.backend == expected
    a.close()  # safe twice


# --- the factory --------------------------------------------------------------------------------

def test_every_backend_in_the_table_is_an_engine_when_installed():
    for name, (package, _) in factory.BACKENDS.items():
        if factory.importable(package) and name != "tensorrt":  # tensorrt's module imports torch's CUDA
            assert issubclass(factory.backend_class(name), Engine)
    assert factory.backend_names()[-1] == "auto"


def test_unknown_backend_names_the_key_and_the_choices():
    with pytest.raises(ConfigError, match=r"engine.backend' = 'tpu' is not one of: .*onnxruntime.*auto"):
        factory.resolve_backend("tpu")


def test_a_backend_that_is_not_installed_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(factory.BACKENDS, "nothing", ("no_such_package_xyz", "x:Y"))
    with pytest.raises(BackendUnavailableError, match="backend 'nothing' is unavailable: no_such_package_xyz"):
        factory.resolve_backend("nothing")


def test_auto_skips_what_is_not_installed(monkeypatch):
    monkeypatch.setattr(factory, "BACKENDS", {"nothing": ("no_such_package_xyz", "x:Y"),
                                              **{k: v for k, v in factory.BACKENDS.items() if k != "tensorrt"}})
    first_cpu = "openvino" if factory.importable("openvino") else "onnxruntime"
    assert factory.resolve_backend("auto", "cpu")[0] == first_cpu


def test_engine_base_imports_no_backend_and_no_factory():
    """The old circle: base.py held the factory and imported the backends, which import base."""
    tree = ast.parse((ENGINES / "base.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    backends = {target.partition(":")[0] for _, target in factory.BACKENDS.values()}
    assert not imported & (backends | {"posestream.engines.backends.factory"}), imported
