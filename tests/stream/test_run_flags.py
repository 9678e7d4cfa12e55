"""`posestream run --backend/--device` reach the engines and fail in one line when unavailable."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from posestream.engines.backends.base import tensorrt_available


@pytest.mark.skipif(tensorrt_available() is None, reason="TensorRT runs here; the error path cannot be shown")
def test_unavailable_backend_is_one_clear_line(shared: Path, prepared_home: Path) -> None:
    video = shared / "data/video/street_walk_5f.mp4"
    result = subprocess.run([sys.executable, "-m", "posestream", "run", "--quiet", "--source", str(video),
                             "--backend", "tensorrt"], capture_output=True, text=True, timeout=120,
                            env=os.environ.copy())
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if " INFO " not in line]
    assert len(errors) == 1 and errors[0].startswith("posestream: error: backend 'tensorrt' is unavailable"), errors


def test_auto_backend_reports_its_choice(shared: Path, prepared_home: Path, tmp_path: Path) -> None:
    video = shared / "data/video/street_walk_5f.mp4"
    result = subprocess.run([sys.executable, "-m", "posestream", "run", "--quiet", "--source", str(video),
                             "--backend", "auto", "--sink", f"json:{tmp_path / 'out.json'}"],
                            capture_output=True, text=True, timeout=180, env=os.environ.copy())
    assert result.returncode == 0, result.stderr
    assert "(asked for auto on cpu)" in result.stderr
    assert (tmp_path / "out.json").is_file()
