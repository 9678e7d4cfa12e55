"""PyAV plumbing shared by the file, lavfi and network sources: opening a container with FFmpeg's
errors turned into ours, choosing the video stream, and a decode loop that survives bad packets."""
from __future__ import annotations

import logging
import time
from typing import Any, Iterator

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from posestream.stream.core.errors import InputError, InputNotFoundError, SourceTimeoutError
from posestream.stream.sources.base import SourceStats
from posestream.stream.sources.damage import note

log = logging.getLogger(__name__)


def describe(exc: BaseException) -> str:
    """FFmpeg's message without PyAV's errno prefix and repeated file name."""
    message = getattr(exc, "strerror", None) or str(exc)
    return str(message)


def open_container(target: str, what: str, *, format: str | None = None,
                   options: dict[str, str] | None = None,
                   timeout: tuple[float, float] | None = None) -> Any:
    """`av.open` for reading, with every failure turned into one `stream.core.errors` error naming `what`.
    With `timeout` = (open, read) seconds, an open that fails only when its time is up is a
    `SourceTimeoutError`, whatever FFmpeg called it (its RTSP demuxer reports an interrupted
    handshake as "invalid data")."""
    started = time.monotonic()
    try:
        return av.open(target, mode="r", format=format, options=options or {}, timeout=timeout)
    except av.error.FileNotFoundError:
        raise InputNotFoundError(f"{what} not found") from None
    except (av.FFmpegError, OSError) as exc:
        timed_out = isinstance(exc, (av.error.ExitError, av.error.TimeoutError)) or (
            timeout is not None and time.monotonic() - started >= 0.9 * timeout[0])
        if timed_out and timeout is not None:
            raise SourceTimeoutError(f"{what}: no answer within {timeout[0]} s") from None
        raise InputError(f"{what} cannot be opened: {describe(exc)}") from None


def video_stream(container: Any, what: str, decode_threads: int, thread_type: str = "AUTO") -> Any:
    """The first video stream, set up for FFmpeg's decoder threads (`decode_threads` 0 = auto).
    Live sources pass `thread_type="SLICE"`: frame threading holds back one frame per thread."""
    if not container.streams.video:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
        raise InputError(f"{what} has no video stream (streams: {kinds})")
    stream = container.streams.video[0]
    stream.codec_context.thread_type = thread_type
    stream.codec_context.thread_count = decode_threads
    return stream


def to_bgr(frame: Any, size: tuple[int, int] | None, reformatter: VideoReformatter) -> np.ndarray:
    """The decoded `av.VideoFrame` as a BGR array, scaled to `size` (width, height) by the same
    swscale pass that converts its colours (area averaging), or at full size for None.
    `reformatter` is the source's own: it keeps FFmpeg's scaler between frames, where
    `VideoFrame.to_ndarray(format=...)` sets up a new one for every frame (0.2-1 ms of CPU per 1080p
    frame; the pixels are the same)."""
    if size is None:
        return reformatter.reformat(frame, format="bgr24").to_ndarray()
    return reformatter.reformat(frame, width=size[0], height=size[1], format="bgr24",
                                interpolation="AREA").to_ndarray()


def decode_frames(container: Any, stream: Any, stats: SourceStats, what: str,
                  stall_s: float | None = None) -> Iterator[Any]:
    """Decoded `av.VideoFrame`s of `stream`. A packet that fails to decode is counted in
    `stats.decode_errors` (and by message in `stats.errors`) and skipped: one damaged frame must
    not end a stream. Demuxer errors
    (read failures, timeouts) propagate to the caller, which knows whether to reconnect. With
    `stall_s`, packets that keep coming without a decodable frame for that long raise
    `SourceTimeoutError` (a camera sending garbage is as good as a silent one)."""
    last_frame = time.monotonic()
    for packet in container.demux(stream):
        if stall_s is not None and time.monotonic() - last_frame > stall_s:
            raise SourceTimeoutError(f"{what}: no decodable frame for {stall_s} s")
        try:
            frames = packet.decode()
        except av.FFmpegError as exc:
            stats.decode_errors += 1
            note(stats, f"undecodable packet: {describe(exc)}", log, what)
            continue
        for frame in frames:
            last_frame = time.monotonic()
            stats.frames_read += 1
            yield frame
