"""Session fixtures shared by every test: the shared evaluation data and a prepared model cache.

`POSESTREAM_HOME` (set by scripts/test.sh after `posestream models prepare`) is reused when it
holds an intact default model; otherwise the model is prepared once into a session temp dir. The
variable is exported so CLI subprocesses and spawned stage processes use the same cache.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from posestream.stream.core.config import load_config, shared_dir
from posestream.stream.core.settings import Settings


@pytest.fixture(scope="session")
def shared() -> Path:
    path = shared_dir()
    if not (path / "data").is_dir() or not (path / "golden").is_dir():
        pytest.fail(f"shared evaluation data missing at {path} (set POSESTREAM_SHARED or paths.shared)")
    return path


@pytest.fixture(scope="session")
def prepared_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from posestream.engines.models import prepare_default_model

    home = Path(os.environ.get("POSESTREAM_HOME") or tmp_path_factory.mktemp("posestream-home"))
    os.environ["POSESTREAM_HOME"] = str(home)
    prepare_default_model(load_config())
    return home


@pytest.fixture
def config(prepared_home: Path) -> Settings:
    """Fresh defaults bound to the prepared cache (each test may change its copy)."""
    return load_config()
