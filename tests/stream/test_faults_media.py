"""Damaged media: a real clip with bytes overwritten in its second half, a Matroska copy the
demuxer gives up on early, and an image folder with unreadable files. Sources skip what does not
decode and go on; the loss is counted against the container's (or folder's) count, named, logged,
shown in the run summary, and `--strict` turns it into exit 3."""
from __future__ import annotations

import json
import logging
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import av
import pytest

from posestream.stream.core.config import load_config, shared_dir
from posestream.stream.sources import open_source
from posestream.stream.sources.damage import damaged, frames_lost, summary

CLIP = "data/video/two_person_interaction_72f.mp4"   # 72 frames, moov atom at the end
FRAMES = 72


@pytest.fixture(scope="module")
def clip() -> Path:
    return shared_dir(load_config()) / CLIP


@pytest.fixture(scope="module")
def corrupted(clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The clip with 50 kB of random bytes written over its second half (sample data only: the
    index at the end stays intact, so the container still says 72 frames)."""
    data = bytearray(clip.read_bytes())
    index = data.rfind(b"moov")
    start = len(data) * 6 // 10
    assert start + 50_000 < index
    data[start:start + 50_000] = random.Random(17).randbytes(50_000)
    path = tmp_path_factory.mktemp("damaged") / "corrupted.mp4"
    path.write_bytes(bytes(data))
    return path


def _remux(src: Path, dst: Path, fmt: str) -> None:
    with av.open(str(src)) as inp, av.open(str(dst), "w", format=fmt) as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)


def test_corrupted_clip_is_read_past_the_damage_and_the_loss_counted(
        corrupted: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), open_source(str(corrupted), load_config()) as source:
        frames = list(source.frames())
    stats = source.stats.as_dict()
    assert 36 < len(frames) < FRAMES  # the frames after the damage were read too
    assert [f.index for f in frames] == list(range(len(frames)))
    assert stats["frames_expected"] == FRAMES and not stats["expected_is_estimate"]
    assert stats["decode_errors"] > 0 and frames_lost(stats) == FRAMES - len(frames)
    assert any("undecodable packet" in message for message in stats["errors"])
    line = summary("clip", stats)
    assert line is not None and f"read {len(frames)} of {FRAMES} frames ({FRAMES - len(frames)} lost)" in line
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(f"read {len(frames)} of {FRAMES} frames" in m for m in warnings)
    # One warning per kind of damage, not one per packet.
    assert sum("undecodable packet" in m and "later ones" in m for m in warnings) == len(stats["errors"])


def test_intact_clip_is_not_damaged(clip: Path) -> None:
    with open_source(str(clip), load_config()) as source:
        assert sum(1 for _ in source.frames()) == FRAMES
    assert not damaged(source.stats.as_dict()) and summary("clip", source.stats.as_dict()) is None


def test_matroska_cut_short_by_the_demuxer_is_a_loss_against_the_estimate(
        clip: Path, tmp_path: Path) -> None:
    """Matroska keeps no frame count; against duration x rate a silent early end still shows."""
    mkv = tmp_path / "clip.mkv"
    _remux(clip, mkv, "matroska")
    with open_source(str(mkv), load_config()) as source:
        assert sum(1 for _ in source.frames()) == FRAMES
    assert not damaged(source.stats.as_dict())  # the estimate is close enough on a healthy file
    data = bytearray(mkv.read_bytes())
    start = len(data) // 2
    data[start:start + 50_000] = random.Random(0).randbytes(50_000)
    mkv.write_bytes(bytes(data))
    with open_source(str(mkv), load_config()) as source:
        read = sum(1 for _ in source.frames())
    stats = source.stats.as_dict()
    assert read < FRAMES - 5 and stats["expected_is_estimate"]
    assert frames_lost(stats) == stats["frames_expected"] - read and damaged(stats)
    assert "of about" in summary("mkv", stats)


def test_unreadable_images_are_skipped_counted_and_named(tmp_path: Path) -> None:
    image = next((shared_dir(load_config()) / "data/coco").rglob("*.jpg"))
    for name in ("a.jpg", "c.jpg", "e.jpg"):
        shutil.copy(image, tmp_path / name)
    (tmp_path / "b.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "d.png").write_bytes(image.read_bytes()[:200])  # truncated
    with open_source(str(tmp_path), load_config()) as source:
        frames = list(source.frames())
    stats = source.stats.as_dict()
    assert [f.image_id for f in frames] == ["a.jpg", "c.jpg", "e.jpg"]
    assert (stats["frames_expected"], stats["frames_read"], stats["decode_errors"]) == (5, 3, 2)
    assert set(stats["errors"]) == {"unreadable image b.jpg", "unreadable image d.png"}
    assert "read 3 of 5 frames (2 lost)" in summary("folder", stats)


def _run(home: Path, source: Path, out: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, POSESTREAM_HOME=str(home))
    return subprocess.run(
        [sys.executable, "-m", "posestream", "run", "--quiet", "--source", str(source),
         "--sink", f"json:{out}", "--metrics", str(out.with_suffix(".metrics.json")),
         "--set", "detector.threads=1", "--set", "detector.input_size=320", *flags],
        capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_run_reports_the_loss_and_strict_fails_on_it(prepared_home: Path, corrupted: Path,
                                                     tmp_path: Path) -> None:
    run = _run(prepared_home, corrupted, tmp_path / "strict.json", "--strict")
    assert run.returncode == 3, run.stderr[-3000:]
    assert "run completed" in run.stderr and "Traceback" not in run.stderr
    damage = [line for line in run.stderr.splitlines() if line.startswith("input damaged: ")]
    assert len(damage) == 1 and "stream corrupted: read" in damage[0] and f"of {FRAMES} frames" in damage[0]
    metrics = json.loads((tmp_path / "strict.metrics.json").read_text())
    stream = metrics["streams"]["corrupted"]
    assert stream["source"]["frames_expected"] == FRAMES
    assert stream["frames_in"] == stream["frames_out"] == stream["source"]["frames_read"] < FRAMES
    images = {e["image_id"] for e in json.loads((tmp_path / "strict.json").read_text())}
    assert f"{stream['frames_out'] - 1}.jpg" in images  # frames after the damage were processed

    folder = tmp_path / "images"
    folder.mkdir()
    image = next((shared_dir(load_config()) / "data/coco").rglob("*.jpg"))
    shutil.copy(image, folder / "a.jpg")
    (folder / "b.jpg").write_bytes(b"not a jpeg")
    run = _run(prepared_home, folder, tmp_path / "images.json")
    assert run.returncode == 0, run.stderr[-3000:]  # not strict: reported, not failed
    assert "input damaged: stream images: read 1 of 2 frames (1 lost); errors: unreadable image b.jpg" \
        in run.stderr


def test_a_run_stopped_by_a_signal_reports_errors_but_not_the_unread_rest() -> None:
    from posestream.commands.run import input_damage

    stopped = {"source": {"frames_read": 30, "frames_expected": FRAMES, "decode_errors": 0, "errors": {}}}
    damaged_too = {"source": {"frames_read": 30, "frames_expected": FRAMES, "decode_errors": 2,
                              "errors": {"undecodable packet: Invalid data": 2}}}
    assert input_damage({"a": stopped}, interrupted=True) == []
    assert input_damage({"a": stopped}, interrupted=False) == [
        f"stream a: read 30 of {FRAMES} frames ({FRAMES - 30} lost)"]
    assert input_damage({"b": damaged_too}, interrupted=True) == [
        "stream b: read 30 frames, 2 lost; errors: undecodable packet: Invalid data (2x)"]
