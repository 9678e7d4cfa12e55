"""Video files (PyAV, threaded decoding) and FFmpeg lavfi test sources, which decode the same way."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Iterator

import av
from av.video.reformatter import VideoReformatter

from posestream.stream.core.errors import InputError
from posestream.stream.sources.base import Frame, Source, SourceInfo, SourceSettings
from posestream.stream.sources.damage import summary
from posestream.stream.sources.pyav_media import (decode_frames, describe, open_container, to_bgr,
                                                   video_stream)

log = logging.getLogger(__name__)


class PyAVSource(Source):
    """Frames of one PyAV container, decoded in order on the caller's thread: every frame is
    delivered (offline policy); the caller's pace is the decode pace."""

    def __init__(self, container: Any, what: str, name: str, kind: str, live: bool,
                 settings: SourceSettings) -> None:
        super().__init__()
        self._container = container
        self._what = what
        self._reformatter = VideoReformatter()  # to_bgr's scaler, kept between frames
        try:
            self._stream = video_stream(container, what, settings.decode_threads)
            width = self._stream.codec_context.width
            height = self._stream.codec_context.height
            if width <= 0 or height <= 0:
                raise InputError(f"{what}: the video stream has no frame size (damaged header?)")
        except BaseException:
            container.close()
            raise
        rate = self._stream.average_rate or self._stream.guessed_rate
        fps = float(rate) if rate else None
        count = None if live else frame_count(container, self._stream, fps)
        self.stats.frames_expected = count
        self.stats.expected_is_estimate = count is not None and not self._stream.frames
        self.info = SourceInfo(name=name, kind=kind, live=live, width=width, height=height,
                               fps=fps, max_width=width, max_height=height, frame_count=count)

    def _frames(self) -> Iterator[Frame]:
        """Every decodable frame. A demuxer error ends reading but not the run: the frames so far
        stand, and the loss is logged and kept in `stats` (a `--strict` run fails on it)."""
        try:
            for frame in decode_frames(self._container, self._stream, self.stats, self._what):
                image = to_bgr(frame, self.decode_size(frame.width, frame.height), self._reformatter)
                yield self._frame(image, frame.time, time.time(), source_hw=(frame.height, frame.width))
        except av.FFmpegError as exc:
            if self.stats.frames_read == 0:
                raise InputError(f"{self._what}: reading failed before the first frame: "
                                 f"{describe(exc)}") from None
            self.stats.ended_by = f"{describe(exc)} after {self.stats.frames_read} frames"
        if self.stats.frames_read == 0:
            raise InputError(f"{self._what}: no frame could be decoded "
                             f"({self.stats.decode_errors} damaged packets)")
        line = summary(self._what, self.stats.as_dict())
        if line is not None and not self.closed:
            log.warning("%s", line)

    def _release(self) -> None:
        self._container.close()


def frame_count(container: Any, stream: Any, fps: float | None) -> int | None:
    """Frames in a file: the count the container keeps (MP4, MOV), else duration x rate, an
    estimate (Matroska, WebM keep no count); None when neither is known."""
    if stream.frames:
        return int(stream.frames)
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration:
        seconds = container.duration / av.time_base
    else:
        return None
    return max(1, round(seconds * fps)) if fps else None


def open_video_file(path: Path, settings: SourceSettings, name: str | None) -> PyAVSource:
    what = f"video file {path}"
    container = open_container(str(path), what)
    return PyAVSource(container, what, name or path.stem, "video", False, settings)


def open_lavfi(graph: str, settings: SourceSettings, name: str | None) -> PyAVSource:
    """An FFmpeg filter-graph source such as `testsrc=size=640x360:rate=30`. With
    `lavfi_realtime` a `realtime` filter paces it like a camera, so it exercises the live path."""
    if not graph:
        raise InputError("lavfi source needs a filter graph, e.g. lavfi:testsrc=size=640x360:rate=30")
    if settings.lavfi_realtime:
        graph = f"{graph},realtime"
    what = f"lavfi source '{graph}'"
    container = open_container(graph, what, format="lavfi")
    return PyAVSource(container, what, name or "lavfi", "lavfi", True, settings)
