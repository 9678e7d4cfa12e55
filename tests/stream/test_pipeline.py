"""The whole multi-process pipeline on real videos with the real model: offline exactness and
determinism, several streams, a stage killed with SIGKILL (offline: one clear error; live: restart),
Ctrl-C, bad input, and no shared-memory segment left behind in any of these cases."""
from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from posestream.benchmarks.clips import looped_clip
from posestream.stream.core.settings import Settings
from posestream.stream.core.errors import ConfigError, PluginNotFoundError
from posestream.stream.pipeline import Pipeline
from posestream.stream.progress import ProgressBar

VIDEO_72 = "data/video/two_person_interaction_72f.mp4"
SHORT_A = "data/video/street_walk_5f.mp4"
SHORT_B = "data/video/soccer_posetrack_000001_5f.mp4"
FAST = {"detector.threads": 1, "detector.input_size": 320}  # keep tests light on 2 shared cores


def _fast(config: Settings) -> Settings:
    return config.with_overrides(FAST)


def _frames_in(path: Path) -> list[str]:
    """image_id of every entry, in file order (the JSON sink writes frames as they finish)."""
    return [entry["image_id"] for entry in json.loads(path.read_text())]


def _frame_numbers(ids: list[str]) -> list[int]:
    return [int(Path(i).stem) for i in ids]


def _cli(*args: str, env_home: Path, verbose: bool = True) -> subprocess.Popen[str]:
    """`posestream run`; verbose logs the stage pids and ring names the tests need."""
    env = dict(os.environ, POSESTREAM_HOME=str(env_home))
    sets = [f"--set={k}={v}" for k, v in FAST.items()]
    flags = ["-v"] if verbose else []
    return subprocess.Popen([sys.executable, "-m", "posestream", *flags, "run", "--quiet", *args, *sets],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_lines(path: Path, count: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and sum(1 for line in path.read_text().splitlines() if line.startswith("{")) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"{path} did not reach {count} frames within {timeout} s")


def _stage_pids(log: str) -> dict[str, int]:
    return {m[0]: int(m[1]) for m in re.findall(r"started stage (\w+) \(pid (\d+)\)", log)}


def _rings(log: str) -> list[str]:
    return re.findall(r"created frame ring (\S+):", log)


def _read_stderr_until(proc: subprocess.Popen[str], pattern: str, timeout: float = 120.0) -> str:
    """Read stderr lines until one matches (the stage pids are logged at start)."""
    text = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        text += line
        if re.search(pattern, text):
            return text
    raise AssertionError(f"'{pattern}' not seen in stderr within {timeout} s:\n{text}")


@pytest.mark.slow
def test_offline_video_every_frame_in_order_and_deterministic(config: Settings, shared: Path,
                                                              tmp_path: Path) -> None:
    outputs = []
    for run in range(2):
        out = tmp_path / f"run{run}.json"
        with Pipeline(_fast(config), [str(shared / VIDEO_72)], [f"json:{out}"]) as pipeline:
            report = pipeline.run()
        stream = report.streams["two_person_interaction_72f"]
        assert report.status == "completed" and report.exit_code == 0
        assert (stream["policy"], stream["frames_in"], stream["frames_out"], stream["dropped"]) == \
            ("offline", 72, 72, 0)
        assert report.stages["detect"]["frames"] == 72
        outputs.append(out.read_bytes())
        frames = _frame_numbers(_frames_in(out))
        assert sorted(set(frames)) == list(range(72))   # two persons in every frame of this clip
        assert frames == sorted(frames)                 # in input order
    assert outputs[0] == outputs[1]


@pytest.mark.slow
def test_several_sources_have_their_own_streams(config: Settings, shared: Path, tmp_path: Path) -> None:
    out = tmp_path / "both.json"
    sources = [str(shared / SHORT_A), str(shared / SHORT_B)]
    with Pipeline(_fast(config), sources, [f"json:{out}"]) as pipeline:
        report = pipeline.run()
    assert {name: s["frames_out"] for name, s in report.streams.items()} == \
        {"street_walk_5f": 5, "soccer_posetrack_000001_5f": 5}
    ids = _frames_in(out)
    for stream in report.streams:
        frames = _frame_numbers([i for i in ids if i.startswith(f"{stream}/")])
        assert frames == sorted(frames) and set(frames) <= set(range(5)) and frames


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.slow
def test_progress_bar_gets_the_total_frame_count(config: Settings, shared: Path, tmp_path: Path) -> None:
    calls: list[tuple[bool, int | None]] = []
    out = _Terminal()

    def progress(live: bool, total: int | None) -> ProgressBar:
        calls.append((live, total))
        return ProgressBar(total, out)

    sources = [str(shared / SHORT_A), str(shared / SHORT_B)]
    with Pipeline(_fast(config), sources, [f"json:{tmp_path / 'both.json'}"], progress=progress) as pipeline:
        pipeline.run()
    assert calls == [(False, 10)]
    draws = out.getvalue().split("\r")[1:]
    assert draws and all(re.search(r"\] \d+/10 +\d+%", draw) for draw in draws), draws


@pytest.mark.parametrize("sources, sinks, policy, error, text", [
    ([], [], None, ConfigError, "at least one --source"),
    (["x.mp4"], ["nosuch:out"], None, PluginNotFoundError, "unknown sinks plugin 'nosuch'"),
    (["x.mp4"], [":out"], None, ConfigError, "KIND:TARGET"),
    (["x.mp4"], [], "sometimes", ConfigError, "pipeline.policy"),
])
def test_bad_arguments_fail_before_anything_starts(config: Settings, sources: list[str], sinks: list[str],
                                                   policy: str | None, error: type, text: str) -> None:
    with pytest.raises(error, match=re.escape(text)):
        Pipeline(config, sources, sinks, policy)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["missing file", "corrupt file", "unreachable url", "unknown sink",
                                  "bad config value"])
def test_cli_bad_input_is_one_clear_error(case: str, prepared_home: Path, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))
    args, text = {
        "missing file": (["--source", str(tmp_path / "nope.mp4")], "source not found"),
        "corrupt file": (["--source", str(corrupt)], str(corrupt)),
        "unreachable url": (["--source", f"rtsp://127.0.0.1:{_free_port()}/cam"], "127.0.0.1"),
        "unknown sink": (["--source", str(corrupt), "--sink", "carrier-pigeon:x"], "carrier-pigeon"),
        "bad config value": (["--source", str(corrupt), "--set", "pipeline.ring_slots=1"],
                             "pipeline.ring_slots"),
    }[case]
    proc = _cli(*args, env_home=prepared_home, verbose=False)
    _, stderr = proc.communicate(timeout=120)
    errors = [line for line in stderr.splitlines() if line.startswith("posestream: error:")]
    assert proc.returncode == 2, stderr
    assert len(errors) == 1 and text in errors[0], stderr
    assert "Traceback" not in stderr


@pytest.mark.slow
def test_sigkill_of_detect_offline_is_one_clear_error(prepared_home: Path, shared: Path,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "partial.json"
    # 5x the clip, so the detector is still busy when the kill comes even if the sink lags behind it.
    video, total = looped_clip(shared / VIDEO_72, 360, tmp_path / "long.mp4")
    proc = _cli("--source", str(video), "--sink", f"json:{out}", env_home=prepared_home)
    try:
        log = _read_stderr_until(proc, r"created frame ring \S+:")
        _wait_for_lines(out, 3)
        os.kill(_stage_pids(log)["detect"], signal.SIGKILL)
        killed = time.monotonic()
        _, rest = proc.communicate(timeout=60)
        exited = time.monotonic() - killed
    finally:
        proc.kill()
    stderr = log + rest
    errors = [line for line in stderr.splitlines() if line.startswith("posestream: error:")]
    assert proc.returncode == 2
    assert errors == ["posestream: error: stage 'detect' was killed by SIGKILL; stopping the pipeline"]
    assert exited < 10
    frames = _frame_numbers(_frames_in(out))        # readable JSON with what was finished
    assert 3 <= len(set(frames)) < total and frames == sorted(frames)
    assert _rings(log) and not any(Path("/dev/shm", name).exists() for name in _rings(log))


@pytest.mark.slow
def test_live_run_restarts_a_killed_detector(prepared_home: Path, tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.json"
    out = tmp_path / "live.json"
    proc = _cli("--source", "lavfi:testsrc=size=320x240:rate=10:duration=12", "--sink", f"json:{out}",
                "--metrics", str(metrics), env_home=prepared_home)
    try:
        log = _read_stderr_until(proc, r"created frame ring \S+:")
        time.sleep(3)
        os.kill(_stage_pids(log)["detect"], signal.SIGKILL)
        _, rest = proc.communicate(timeout=120)
    finally:
        proc.kill()
    log += rest
    assert proc.returncode == 0, log
    assert "stage 'detect' was killed by SIGKILL; restarting it (1 of at most 3)" in log
    report = json.loads(metrics.read_text())
    assert report["status"] == "completed"
    assert report["stages"]["detect"]["restarts"] == 1
    stream = next(iter(report["streams"].values()))
    assert stream["policy"] == "live" and stream["frames_out"] > 0
    assert not any(Path("/dev/shm", name).exists() for name in _rings(log))


@pytest.mark.slow
def test_ctrl_c_drains_flushes_and_exits_130(prepared_home: Path, shared: Path, tmp_path: Path) -> None:
    out = tmp_path / "interrupted.json"
    metrics = tmp_path / "metrics.json"
    proc = _cli("--source", str(shared / VIDEO_72), "--sink", f"json:{out}", "--metrics", str(metrics),
                env_home=prepared_home)
    try:
        log = _read_stderr_until(proc, r"created frame ring \S+:")
        _wait_for_lines(out, 2)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    report: dict[str, Any] = json.loads(metrics.read_text())
    stream = report["streams"]["two_person_interaction_72f"]
    assert report["status"] == "interrupted" and report["signal"] == "SIGINT"
    assert stream["frames_out"] == stream["frames_in"] < 72   # every frame read was finished
    assert len(set(_frame_numbers(_frames_in(out)))) == stream["frames_out"]
    assert not any(Path("/dev/shm", name).exists() for name in _rings(log))
