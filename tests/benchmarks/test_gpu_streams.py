"""The many-streams bench: argument checks, target evaluation, and one small run on the CPU."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from posestream.benchmarks.gpu_streams import evaluate, parse_counts, parse_size
from posestream.stream.core.errors import ConfigError


@pytest.mark.parametrize("text, expected", [
    ("1,4,16", [1, 4, 16]), ("2", [2]), ("1,", [1]),
    ("", ConfigError), ("a,b", ConfigError), ("0,4", ConfigError), ("65", ConfigError),
])
def test_parse_counts(text: str, expected) -> None:
    if isinstance(expected, type):
        with pytest.raises(expected):
            parse_counts(text)
    else:
        assert parse_counts(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("1920x1080", (1920, 1080)), ("640X360", (640, 360)),
    ("1920", ConfigError), ("8x8", ConfigError), ("ax b", ConfigError),
])
def test_parse_size(text: str, expected) -> None:
    if isinstance(expected, type):
        with pytest.raises(expected):
            parse_size(text)
    else:
        assert parse_size(text) == expected


def _row(n: int, fps: float, p99: float, policy: str = "live") -> dict:
    return {"streams": n, "policy": policy, "aggregate_fps": fps, "p99_ms_max": p99}


def test_targets_are_judged_only_on_a_gpu() -> None:
    rows = [_row(1, 300.0, 20.0), _row(16, 900.0, 80.0), _row(16, 2000.0, 500.0, "offline")]
    judged = {t["target"]: t for t in evaluate(rows, on_gpu=True)}
    assert judged["one_stream_fps"]["met"] is True
    assert judged["sixteen_streams_fps"]["met"] is False and judged["sixteen_streams_fps"]["measured"] == 900.0
    assert judged["sixteen_streams_p99_ms"]["met"] is True  # the live row, not the offline one
    assert all(t["met"] is None and "CPU" in t["note"] for t in evaluate(rows, on_gpu=False))


@pytest.mark.slow
def test_two_streams_on_the_cpu(prepared_home: Path, tmp_path: Path) -> None:
    out = tmp_path / "streams.json"
    result = subprocess.run(
        [sys.executable, "-m", "posestream", "bench", "--streams", "1,2", "--stream-size", "320x192",
         "--stream-frames", "30", "--set", "engine.backend=torch", "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["device"]["gpu"] is None and data["device"]["backend"] == "torch"
    rows = {r["streams"]: r for r in data["streams"]}
    assert set(rows) == {1, 2} and rows[2]["detector_batch"] == 2
    for n, row in rows.items():
        assert 1 <= row["frames_out"] <= row["frames_in"] <= 30 * n
        assert len(row["p99_ms_per_stream"]) <= n and "detect" in row["stages"]
    assert [m["batch"] for m in data["model"]] == [1, 4] and data["targets"][0]["met"] is None
