"""Benchmark inputs: the default videos, a looped copy of a short clip, and a live replay spec.

A 72-frame clip is too short to measure a pipeline (start-up and drain dominate), so it is looped.
The loop is a remux (packets copied with shifted timestamps, nothing re-encoded), so every run and
the sequential baseline decode exactly the same bitstream. A live camera is simulated with an
FFmpeg lavfi `movie` source: the file replayed in a loop at a chosen frame rate and paced by the
`realtime` filter, which the lavfi source adds when `source.lavfi_realtime` is on; the pipeline
treats it like any camera (never blocks, drops the oldest frame when behind).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import av

from posestream.stream.core.config import shared_dir
from posestream.stream.core.settings import Settings
from posestream.stream.core.errors import InputError, InputNotFoundError

DEFAULT_VIDEO = "two_person_interaction_72f.mp4"
_SAFE_PATH = re.compile(r"^[A-Za-z0-9_./-]+$")  # needs no escaping inside a filter graph


def default_videos(config: Settings, scratch: Path) -> list[Path]:
    """The shared videos when present (the issue's reference clip first), else the demo clip."""
    folder = shared_dir(config) / "data" / "video"
    videos = sorted(folder.glob("*.mp4")) if folder.is_dir() else []
    if videos:
        videos.sort(key=lambda p: p.name != DEFAULT_VIDEO)
        return videos
    from posestream.stream.demo_clip import make_demo_clip

    return [make_demo_clip(scratch / "demo.mp4", seconds=4.0, fps=30, size=(1280, 720))]


def count_frames(path: Path) -> int:
    """Decodable video frames in `path` (counted by demuxing: container headers can be wrong)."""
    if not path.is_file():
        raise InputNotFoundError(f"video not found: {path}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path} has no video stream")
            stream = container.streams.video[0]
            return sum(1 for packet in container.demux(stream) if packet.size)
    except av.FFmpegError as exc:
        raise InputError(f"{path} cannot be read as video: {exc}") from None


def looped_clip(source: Path, min_frames: int, out: Path) -> tuple[Path, int]:
    """`source` repeated (whole copies) until it holds at least `min_frames` frames; returns the
    path and its frame count. A clip already long enough is returned as it is."""
    frames = count_frames(source)
    copies = max(1, math.ceil(min_frames / max(frames, 1)))
    if copies == 1:
        return source, frames
    with av.open(str(source)) as src, av.open(str(out), mode="w") as dst:
        in_stream = src.streams.video[0]
        out_stream = dst.add_stream_from_template(in_stream)
        shift, span = 0, 0
        for _ in range(copies):
            src.seek(0, stream=in_stream)
            for packet in src.demux(in_stream):
                if not packet.size:
                    continue
                if packet.pts is not None:
                    span = max(span, packet.pts + (packet.duration or 1))
                    packet.pts += shift
                if packet.dts is not None:
                    packet.dts += shift
                packet.stream = out_stream
                dst.mux(packet)
            shift += span
    return out, frames * copies


def live_replay_spec(video: Path, fps: float, frames: int, link_dir: Path) -> str:
    """A `lavfi:` source spec that plays `video` in a loop at `fps` for `frames` frames, paced in
    real time like a camera. Paths with characters special to filter graphs are linked first."""
    if fps <= 0 or frames <= 0:
        raise InputError(f"live replay needs fps > 0 and frames > 0, got fps={fps}, frames={frames}")
    path = video.resolve()
    if not path.is_file():
        raise InputNotFoundError(f"video not found: {video}")
    if not _SAFE_PATH.match(str(path)):
        link = link_dir / "live-replay.mp4"
        link.unlink(missing_ok=True)
        link.symlink_to(path)
        path = link
    return f"lavfi:movie={path}:loop=0,setpts=N/({fps:g}*TB),trim=end_frame={int(frames)}"
