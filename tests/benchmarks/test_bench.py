"""`posestream bench` behaviour: a quick run writes a table and a JSON with every section; its parts
(looped clip, live replay source, latency trend, output comparison, targets, plot) do what they say.
No timing is asserted: the numbers depend on the machine and its load."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from posestream.benchmarks import bench, clips, live, plot
from posestream.stream.core.config import load_config
from posestream.stream.core.errors import ConfigError, InputError, InputNotFoundError

REFERENCE = "data/video/two_person_interaction_72f.mp4"
SECTIONS = ("machine", "config", "models", "videos", "live", "frame_bus", "accuracy", "targets")


def _posestream(*args: str, timeout: float = 280) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "posestream", *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ))


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-frame 320x180 clip of a person (the demo photo), small enough for a quick bench."""
    from posestream.stream.demo_clip import make_demo_clip

    return make_demo_clip(tmp_path_factory.mktemp("clip") / "short.mp4", seconds=0.8, fps=15,
                          size=(320, 180))


@pytest.mark.slow
def test_quick_run_writes_table_json_and_plot(prepared_home: Path, short_clip: Path, tmp_path: Path) -> None:
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    result = _posestream("bench", "--quick", "--video", str(short_clip), "--frames", "20",
                         "--live-seconds", "2", "--live-fps", "15", "--out", str(out), "--plot", str(png),
                         "--set", "detector.threads=1", "--set", "pose.threads=1", "--skip", "peer")
    assert result.returncode == 0, result.stderr[-3000:]
    for heading in ("1. isolated model latency", "2-4. throughput per video", "5. live latency",
                    "6. pipeline stages", "7. accuracy", "frame bus", "targets", "GPU"):
        assert heading in result.stdout
    data = json.loads(out.read_text())
    assert set(SECTIONS) <= set(data)
    assert data["models"]["rows"] and data["models"]["rows"][0]["role"] == "detector"
    assert {r["batch"] for r in data["models"]["rows"]} >= {1}
    assert data["models"]["gpu_available"] in (True, False) and data["models"]["gpu"]
    video = data["videos"][0]
    assert video["frames"] == 24  # 12-frame clip, whole copies up to >= 20 frames
    assert video["sequential"]["frames"] == 24 and video["pipeline"]["frames"] == 24
    assert video["same_output_as_sequential"] is True  # the pipeline changes speed, not results
    assert video["compute_bound"]["fps"] > 0
    assert set(video["pipeline"]["report"]["stages"]) == {"source0", "detect", "nms", "track", "sinks"}
    assert data["live"]["frames_offered"] == 30
    assert 0 < data["live"]["frames_out"] <= 30
    assert data["live"]["trend"]["windows"]
    assert data["live"]["processing_ms"] > 0 and "detect" in data["live"]["processing_ms_by_stage"]
    assert data["frame_bus"]["fps"]["ring"] > 0 and data["frame_bus"]["fps"]["queue"] > 0
    assert data["accuracy"]["images"] == 8 and 0.0 < data["accuracy"]["metrics"]["AP"] <= 1.0
    names = [t["target"] for t in data["targets"]]
    assert "pipeline / sequential" in names and "frame ring / mp.Queue" in names
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, message", [
    (["--video", "/nonexistent/clip.mp4"], "video not found"),
    (["--sink", "bogus"], "invalid choice"),
    (["--set", "bench.sink=bogus"], "bench.sink"),
])
def test_bad_input_is_one_clear_error(prepared_home: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = _posestream("bench", "--quick", "--skip", "live", "--skip", "frame_bus", "--skip", "accuracy",
                         *args, timeout=120)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_looped_clip_holds_whole_copies(shared: Path, tmp_path: Path) -> None:
    source = shared / REFERENCE
    path, frames = clips.looped_clip(source, 100, tmp_path / "loop.mp4")
    assert frames == 144 and clips.count_frames(path) == 144
    import av

    with av.open(str(path)) as container:
        times = [f.time for f in container.decode(video=0)]
    assert len(times) == 144 and np.all(np.diff(times) > 0)  # timestamps keep rising across the seam
    same, count = clips.looped_clip(source, 10, tmp_path / "unused.mp4")
    assert same == source and count == 72 and not (tmp_path / "unused.mp4").exists()


def test_looped_clip_errors(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError):
        clips.looped_clip(tmp_path / "missing.mp4", 10, tmp_path / "x.mp4")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video" * 100)
    with pytest.raises(InputError):
        clips.looped_clip(garbage, 10, tmp_path / "x.mp4")


def test_live_replay_spec_is_a_live_source_of_n_frames(shared: Path, tmp_path: Path) -> None:
    from posestream.stream.sources import open_source

    odd = tmp_path / "a b,c.mp4"  # characters a filter graph would misread
    odd.symlink_to(shared / REFERENCE)
    spec = clips.live_replay_spec(odd, 90.0, 100, tmp_path)
    config = load_config(overrides={"source.lavfi_realtime": False})
    with open_source(spec, config) as source:
        assert source.info.live and source.info.width == 1920
        frames = [f for f in source.frames()]
    assert len(frames) == 100  # 72-frame clip looped past its end
    assert frames[-1].pts == pytest.approx(99 / 90.0, abs=1e-3)
    with pytest.raises(InputError):
        clips.live_replay_spec(odd, 0, 10, tmp_path)


def _samples(latency_ms: np.ndarray, fps: float = 30.0) -> list[tuple[int, float, float]]:
    capture = 1000.0 + np.arange(len(latency_ms)) / fps
    return [(i, c, c + ms / 1e3) for i, (c, ms) in enumerate(zip(capture, latency_ms))]


@pytest.mark.parametrize("latency, rising", [
    (np.full(600, 80.0), False),
    (80.0 + np.random.default_rng(0).normal(0, 5, 600), False),
    (np.linspace(80.0, 400.0, 600), True),
])
def test_latency_trend(latency: np.ndarray, rising: bool) -> None:
    trend = live.latency_trend(_samples(latency), window_s=5.0, warmup_s=1.0, drain_s=0.5)
    assert [w["frames"] for w in trend["windows"]] == [150, 150, 150, 150]
    assert trend["steady_frames"] == 600 - 30 - 15
    assert (trend["rise_ms"] > 100) is rising
    assert trend["steady_ms"]["p50"] == pytest.approx(np.percentile(latency[30:-15], 50), abs=0.01)


def test_latency_trend_leaves_out_warm_up_and_drain() -> None:
    latency = np.full(300, 50.0)
    latency[:10] = 900.0  # models still warming up
    latency[-8:] = np.linspace(100, 500, 8)  # the ring's backlog after the replay stopped
    trend = live.latency_trend(_samples(latency), window_s=2.0, warmup_s=1.0, drain_s=8 / 30)
    assert trend["steady_ms"]["p99"] == pytest.approx(50.0)
    assert abs(trend["rise_ms"]) < 1e-6
    assert live.latency_trend([], 1.0, 0.0, 0.0)["steady_frames"] == 0


def _alphapose(path: Path, shift: float = 0.0, idx: int = 1) -> Path:
    path.write_text(json.dumps([{"image_id": "0.jpg", "category_id": 1, "score": 0.9, "idx": idx,
                                 "keypoints": [10.0 + shift, 20.0, 0.8] * 17, "box": [0, 0, 5, 5]}]))
    return path


@pytest.mark.parametrize("shift, idx, same", [(0.0, 1, True), (0.2, 1, True), (3.0, 1, False),
                                              (0.0, 2, False)])
def test_same_outputs(tmp_path: Path, shift: float, idx: int, same: bool) -> None:
    a = _alphapose(tmp_path / "a.json")
    b = _alphapose(tmp_path / "b.json", shift, idx)
    assert bench._same_outputs(a, b) is same
    assert bench._same_outputs(a, tmp_path / "missing.json") is None


def test_targets_report_the_miss() -> None:
    result = {
        "videos": [{"video": f"/x/{bench.REFERENCE_VIDEO}",
                    "pipeline": {"fps": 20.0, "wall_fps": 19.0, "work_bound_fps": 20.0},
                    "sequential": {"fps": 15.0}, "compute_bound": {"fps": 25.0}}],
        "live": {"fps_in": 30.0, "seconds": 60.0, "processing_ms": 50.0, "frame_ms": 45.0,
                 "trend": {"steady_ms": {"p99": 200.0}, "rise_ms": 2.0, "steady_mean_ms": 100.0,
                           "slope_ms_per_s": 0.03}},
        "frame_bus": {"ratio": 20.0},
    }
    rows = {t["target"]: t for t in bench.evaluate_targets(result)}
    work = rows["pipeline / work bound (all stages' CPU time / cores)"]
    assert work["measured"] == 0.95 and work["met"] is True
    compute = rows["pipeline / compute bound (inference only)"]
    assert compute["measured"] == 0.8 and compute["met"] is False
    assert compute["miss_pct"] == pytest.approx(11.1, abs=0.1)
    assert rows["pipeline / sequential"]["met"] is True
    assert rows["pipeline / tuned peer (18 FPS)"]["met"] is False
    assert rows["live p99 / mean frame time"]["measured"] == 4.0
    assert rows["live p99 / mean frame time"]["met"] is False
    assert rows["live latency rise over run / mean"]["met"] is True
    assert rows["frame ring / mp.Queue"]["met"] is True


def test_plot_without_matplotlib_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real(name, *a))
    with pytest.raises(ConfigError, match="matplotlib"):
        plot.check_plotting()
