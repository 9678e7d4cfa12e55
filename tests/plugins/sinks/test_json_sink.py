"""JsonSink: AlphaPose entries from real COCO poses; valid JSON after every frame, also when the
writing process is killed with SIGKILL; recovery of a file torn mid-write."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from coco_frames import coco_poses, image_results, video_results
from posestream.plugins.sinks.json_sink import JsonSink, read_alphapose_json
from posestream.stream.core.config import load_config
from posestream.stream.core.errors import ConfigError, InputError, StageError
from posestream.stream.core.results import FrameResult, Poses

HERE = Path(__file__).resolve().parent


def expected_entries(count: int, stream: str = "cam0") -> list[dict]:
    """What a sink must hold after the first `count` frames of `video_results` (no stream prefix)."""
    poses = coco_poses()
    return [entry for n in range(count)
            for entry in FrameResult(stream, n, 640, 480, poses[n % len(poses)][1]).to_alphapose(f"{n}.jpg")]


def test_image_source_entries(tmp_path: Path) -> None:
    frames = image_results()
    with JsonSink(load_config(), str(tmp_path / "out.json")) as sink:
        for result, _ in frames:
            sink.write(result, None)
    data = json.loads((tmp_path / "out.json").read_text())
    assert len(data) == sum(len(r.poses) for r, _ in frames) == 19
    assert [e["image_id"] for e in data[:3]] == ["000000000036.jpg", "000000000049.jpg",
                                                  "000000000049.jpg"]
    first = data[0]
    assert set(first) == {"image_id", "category_id", "keypoints", "score", "box", "idx"}
    assert first["category_id"] == 1 and first["idx"] == 1 and len(first["keypoints"]) == 51
    poses = frames[0][0].poses
    assert first["box"] == pytest.approx(poses.boxes[0].tolist(), abs=0.01)
    assert first["keypoints"][:3] == pytest.approx(poses.keypoints[0, 0].tolist(), abs=0.01)
    assert data == [e for r, _ in frames for e in r.to_alphapose(r.image_id)]


def test_video_frames_untracked_and_empty(tmp_path: Path) -> None:
    name, poses = coco_poses()[6]
    poses.ids[:] = -1
    empty = FrameResult("cam0", 1, 640, 480, Poses.empty())
    with JsonSink(load_config(), str(tmp_path)) as sink:  # a directory: AlphaPose's file name inside
        sink.write(FrameResult("cam0", 0, 640, 480, poses), None)
        assert json.loads((tmp_path / "alphapose-results.json").read_text())[0]["idx"] is None
        sink.write(empty, None)
        sink.write(FrameResult("cam0", 7, 640, 480, poses.select([0])), None)
    data = json.loads((tmp_path / "alphapose-results.json").read_text())
    assert [e["image_id"] for e in data] == ["0.jpg"] * 4 + ["7.jpg"]
    assert all(e["idx"] is None for e in data)
    assert sink.frames == 3 and sink.entries == 5


def test_several_streams_prefix_image_ids(tmp_path: Path) -> None:
    a, b = video_results(2, "cam0"), video_results(2, "rtsp://host/live")
    with JsonSink(load_config(), str(tmp_path / "r.json"), streams=["cam0", "rtsp://host/live"]) as sink:
        for (ra, _), (rb, _) in zip(a, b):
            sink.write(ra, None)
            sink.write(rb, None)
        with pytest.raises(StageError, match="unknown stream 'cam9'"):
            sink.write(video_results(1, "cam9")[0][0], None)
    ids = [e["image_id"] for e in json.loads((tmp_path / "r.json").read_text())]
    # frame 0 shows one person, frame 1 two
    assert ids == ["cam0/0.jpg", "rtsp://host/live/0.jpg",
                   "cam0/1.jpg", "cam0/1.jpg", "rtsp://host/live/1.jpg", "rtsp://host/live/1.jpg"]


def test_second_stream_without_streams_is_a_wiring_error(tmp_path: Path) -> None:
    with JsonSink(load_config(), str(tmp_path / "r.json")) as sink:
        sink.write(video_results(1, "cam0")[0][0], None)
        with pytest.raises(StageError, match="created for one stream .'cam0'. but got frames from 'cam1'"):
            sink.write(video_results(1, "cam1")[0][0], None)


def test_valid_after_every_frame(tmp_path: Path) -> None:
    path = tmp_path / "live.json"
    frames = video_results(12)
    with JsonSink(load_config(), str(path)) as sink:
        assert json.loads(path.read_text()) == []
        for n, (result, _) in enumerate(frames, start=1):
            sink.write(result, None)
            assert json.loads(path.read_text()) == expected_entries(n)
    assert len(path.read_text().splitlines()) == 12 + 2  # one line per frame between "[" and "]"


def test_flush_every_buffers_frames(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    config = load_config(overrides={"sinks.json_flush_every": 5})
    with JsonSink(config, str(path)) as sink:
        for n, (result, _) in enumerate(video_results(7), start=1):
            sink.write(result, None)
            assert len(json.loads(path.read_text())) == len(expected_entries(5 if n >= 5 else 0))
    assert json.loads(path.read_text()) == expected_entries(7)  # close wrote the last two


def test_close_twice_and_write_after_close(tmp_path: Path) -> None:
    sink = JsonSink(load_config(), str(tmp_path / "c.json"))
    sink.close()
    sink.close()
    with pytest.raises(StageError, match="write after close"):
        sink.write(video_results(1)[0][0], None)


@pytest.mark.parametrize("target, overrides, streams, error, match", [
    ("{file}/x.json", {}, [], InputError, "is a file, not a directory"),
    ("/proc/posestream-no-such-dir/x.json", {}, [], InputError, "cannot be created"),
    ("{tmp}/ok.json", {"sinks.json_flush_every": 0}, [], ConfigError, r"json_flush_every.*\[1, 1000\]"),
    ("{tmp}/ok.json", {}, ["a", "a"], InputError, "stream names must be unique"),
])
def test_bad_targets(tmp_path: Path, target: str, overrides: dict, streams: list[str], error: type,
                     match: str) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(error, match=match):
        JsonSink(load_config(overrides=overrides), target.format(file=tmp_path / "file", tmp=tmp_path),
                 streams=streams)


_CHILD = """
import sys, time
sys.path.insert(0, {here!r})
from coco_frames import video_results
from posestream.plugins.sinks.json_sink import JsonSink
from posestream.stream.core.config import load_config
frames = video_results(40)
sink = JsonSink(load_config(), {path!r})
for n, (result, _) in enumerate(frames * 1000):
    result.frame = n
    sink.write(result, None)
    print(n, flush=True)
    if {step}:
        sys.stdin.readline()  # wait for the parent's go
"""


def _child(path: Path, step: bool) -> subprocess.Popen:
    code = _CHILD.format(here=str(HERE), path=str(path), step=step)
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=HERE)


def test_sigkill_between_frames_leaves_valid_json(tmp_path: Path) -> None:
    path = tmp_path / "killed.json"
    child = _child(path, step=True)
    try:
        for n in range(25):
            assert child.stdout.readline().strip() == str(n)
            if n < 24:
                child.stdin.write("\n")
                child.stdin.flush()
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        child.kill()
        child.wait()
    data = json.loads(path.read_text())  # plain json, no recovery needed
    assert data == expected_entries(25)


def test_sigkill_while_writing_keeps_every_finished_frame(tmp_path: Path) -> None:
    path = tmp_path / "running.json"
    child = _child(path, step=False)
    try:
        for n in range(150):
            assert child.stdout.readline().strip() == str(n)
        child.send_signal(signal.SIGKILL)  # the child is still writing frames
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        child.kill()
        child.wait()
    data = read_alphapose_json(path)
    written = int(data[-1]["image_id"].removesuffix(".jpg")) + 1
    assert written >= 150  # every acknowledged frame, each one complete and correct
    assert data == expected_entries(written)


def test_torn_write_recovers_every_complete_frame(tmp_path: Path) -> None:
    """Cut the file of a 6-frame run at every byte inside its last write, as a SIGKILL mid-write
    would: the reader returns exactly the frames before that write, or all six once it is complete."""
    path = tmp_path / "full.json"
    frames = video_results(6)
    with JsonSink(load_config(), str(path)) as sink:
        for result, _ in frames[:5]:
            sink.write(result, None)
        before_last = path.read_bytes()
        sink.write(frames[5][0], None)
    full = path.read_bytes()
    start = len(before_last) - 3  # the last write began where the old "\n]\n" was
    assert full[:start] == before_last[:start]
    five, six = expected_entries(5), expected_entries(6)
    cut = tmp_path / "cut.json"
    for end in range(start, len(full) + 1):
        # bytes past the cut are still the old file's (its tail), as after a torn overwrite
        cut.write_bytes(full[:end] + before_last[end:])
        entries = read_alphapose_json(cut)
        assert entries == (six if end >= len(full) - 2 else five), end


def test_reader_rejects_foreign_files(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('{"a": 1}')
    (tmp_path / "b.json").write_text('{"a": ')
    with pytest.raises(InputError, match="not an AlphaPose result list"):
        read_alphapose_json(tmp_path / "a.json")
    with pytest.raises(InputError, match="neither valid JSON"):
        read_alphapose_json(tmp_path / "b.json")
    with pytest.raises(FileNotFoundError, match="not found"):
        read_alphapose_json(tmp_path / "missing.json")
