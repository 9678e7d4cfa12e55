"""A sink whose disk fills up. The disk is simulated with RLIMIT_FSIZE, set in a child process (a
sink written from a subprocess) or on the running pipeline's sinks process (`prlimit`): writes past
the limit fail with EFBIG ("File too large") as they would with ENOSPC (Python ignores SIGXFSZ).

Promises: one clear error naming the file; what was written before stays a valid file; the other
sinks keep going (`sinks.on_error = "continue"`) or the run stops cleanly (`"stop"`)."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from posestream.benchmarks.soak import descendants, label_processes
from posestream.stream.core.config import load_config, shared_dir
from posestream.stream.sources import open_source

SINKS_HELPERS = Path(__file__).resolve().parents[1] / "plugins" / "sinks"
LIMIT = 60_000  # bytes: a few frames' worth of any sink

_CHILD = """
import resource, sys
sys.path.insert(0, {helpers!r})
from coco_frames import video_results
from posestream.plugins.sinks.{module} import {cls}
from posestream.stream.core.config import load_config
from posestream.stream.core.errors import StageError
sink = {cls}(load_config(), {target!r})
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
written = 0
try:
    for n, (result, pixels) in enumerate(video_results(12) * 100):
        result.frame = n
        sink.write(result, pixels)
        written += 1
except StageError as exc:
    print("ERROR", exc)
print("WRITTEN", written)
sink.close()  # after a failure: must not raise, must not damage the file
print("CLOSED")
"""


def _write_until_full(module: str, cls: str, target: Path, limit: int = LIMIT) -> tuple[str, int]:
    code = _CHILD.format(helpers=str(SINKS_HELPERS), module=module, cls=cls, target=str(target),
                         limit=limit)
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert child.returncode == 0 and "CLOSED" in child.stdout, child.stderr[-3000:]
    assert "Traceback" not in child.stderr
    error = next(line for line in child.stdout.splitlines() if line.startswith("ERROR"))
    written = int(next(line for line in child.stdout.splitlines() if line.startswith("WRITTEN")).split()[1])
    return error, written


def test_json_sink_on_a_full_disk_keeps_a_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    error, written = _write_until_full("json_sink", "JsonSink", path)
    assert f"json sink cannot write {path}: File too large" in error
    assert f"keeps the {written} frames written before, as valid JSON" in error
    entries = json.loads(path.read_text())  # valid JSON, not only recoverable
    assert written > 0 and {e["image_id"] for e in entries} == {f"{n}.jpg" for n in range(written)}


def test_images_sink_on_a_full_disk_leaves_no_partial_image(tmp_path: Path) -> None:
    import cv2

    # The limit is per file: the first annotated frames are JPEGs under 70 kB, later ones over.
    error, written = _write_until_full("images", "ImagesSink", tmp_path / "out", limit=70_000)
    assert f"images sink cannot write {tmp_path / 'out'}" in error and "File too large" in error
    images = sorted((tmp_path / "out").iterdir())
    assert len(images) == written >= 1
    assert all(cv2.imread(str(p)) is not None for p in images)


def test_video_sink_on_a_full_disk_keeps_a_playable_file(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    error, written = _write_until_full("video", "VideoSink", path, limit=300_000)
    assert f"video sink cannot write {path}: File too large" in error and "stay playable" in error
    # The encoder holds frames back (look-ahead), so fewer are in the file than were written; those
    # that are decode, and the torn last fragment is skipped like any damaged packet.
    with open_source(str(path), load_config()) as source:
        decoded = sum(1 for _ in source.frames())
    assert 0 < decoded < written


def _run_with_full_video_disk(home: Path, tmp_path: Path, on_error: str) -> tuple[subprocess.CompletedProcess, Path, Path]:
    """`posestream run` of the real clip into a video and a JSON sink; the sinks process gets the
    file-size limit once it exists (before any frame reaches it: models load first)."""
    clip = shared_dir(load_config()) / "data/video/two_person_interaction_72f.mp4"
    video, js = tmp_path / "out.mp4", tmp_path / "out.json"
    env = dict(os.environ, POSESTREAM_HOME=str(home))
    proc = subprocess.Popen(
        [sys.executable, "-m", "posestream", "run", "--quiet", "--source", str(clip),
         "--sink", f"video:{video}", "--sink", f"json:{js}", "--set", f"sinks.on_error={on_error}",
         "--set", "detector.threads=1", "--set", "detector.input_size=320"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            names = label_processes(proc.pid, descendants(proc.pid))
            sinks = [pid for pid, name in names.items() if name == "sinks"]
            if sinks:
                break
            assert proc.poll() is None and time.monotonic() < deadline, "no sinks process"
            time.sleep(0.05)
        # Set while the sinks wait for their first frame (the detector is still loading its model).
        assert not js.exists() or js.stat().st_size <= 4
        resource.prlimit(sinks[0], resource.RLIMIT_FSIZE, (300_000, 300_000))
        out, err = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), video, js


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("on_error", ["continue", "stop"])
def test_run_with_a_full_disk_under_one_sink(prepared_home: Path, tmp_path: Path, on_error: str) -> None:
    run, video, js = _run_with_full_video_disk(prepared_home, tmp_path, on_error)
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    message = f"video sink cannot write {video}: File too large"
    assert run.stderr.count(message) == 1, run.stderr[-3000:]
    entries = json.loads(js.read_text())  # the JSON sink's file is valid either way
    frames = {e["image_id"] for e in entries}
    if on_error == "continue":
        assert run.returncode == 0 and "run completed" in run.stderr
        assert "sink video:" in run.stderr and "the other sinks go on" in run.stderr
        assert frames == {f"{n}.jpg" for n in range(72)}  # every frame, both persons found in each
    else:
        assert run.returncode != 0 and "posestream: error:" in run.stderr
        assert len(frames) < 72
    with open_source(str(video), load_config()) as source:  # what the video sink wrote plays
        assert sum(1 for _ in source.frames()) > 0
