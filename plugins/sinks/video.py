"""Video sink: annotated frames (boxes, skeletons, track ids) encoded to MP4, one file per stream.

H.264 through PyAV's libx264 (MPEG-4 when PyAV's FFmpeg lacks it, with a warning). Frames keep the
source's timestamps (`sinks.video_fps = 0`), so a live stream that dropped frames plays back at real
speed; sources without timestamps are written at 30 fps. With several streams each gets
`<stem>_<stream><suffix>` beside the target.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from types import TracebackType
from typing import Sequence

import av
import numpy as np

from posestream.plugins.sinks.output_paths import StreamNames, check_render_write, safe_stream_name, writable_dir
from posestream.plugins.sinks.render_settings import Renderer
from posestream.stream.core.contracts import Sink
from posestream.stream.core.settings import Settings
from posestream.stream.core.errors import ConfigError, InputError, StageError
from posestream.stream.core.results import FrameResult
from posestream.stream.video_writer import VideoWriter, pick_codec

log = logging.getLogger(__name__)

SUFFIXES = (".mp4", ".mkv", ".mov")
DEFAULT_FPS = 30.0


class VideoSink(Sink):
    """`VideoSink(settings, target, streams)`: `target` is the output file, e.g. `out.mp4`."""

    needs_pixels = True

    def __init__(self, settings: Settings, target: str, streams: Sequence[str] = ()) -> None:
        table = settings.sinks
        if not target:
            raise ConfigError("video sink needs an output file, e.g. --sink video:out.mp4")
        self.path = Path(target).expanduser()
        if self.path.suffix.lower() not in SUFFIXES:
            raise ConfigError(f"video sink target {target!r} must end in one of: {', '.join(SUFFIXES)}")
        if self.path.is_dir():
            raise InputError(f"video sink target {self.path} is a directory; name a file such as "
                             f"{self.path / 'out.mp4'}")
        writable_dir(self.path.parent, "video sink directory")
        self._render = Renderer(table)
        self._codec = pick_codec(table.video_codec)
        self._crf = table.video_crf
        self._preset = table.video_preset
        self._fixed_fps = table.video_fps
        self._threads = table.video_threads
        self._fragmented = table.video_fragmented
        self._streams = StreamNames(streams, f"video sink {self.path}")
        self._writers: dict[str, VideoWriter] = {}
        self._closed = False

    def path_for(self, stream: str) -> Path:
        """The file that holds `stream`'s video."""
        if not self._streams.several:
            return self.path
        return self.path.with_name(f"{self.path.stem}_{safe_stream_name(stream)}{self.path.suffix}")

    def write(self, result: FrameResult, frame: np.ndarray | None) -> None:
        check_render_write(f"video sink {self.path}", self._closed, result, frame)
        self._streams.check(result.stream)
        writer = self._writers.get(result.stream)
        if writer is None:
            writer = VideoWriter(self.path_for(result.stream), frame.shape[1], frame.shape[0],
                                 fps=self._fixed_fps or DEFAULT_FPS, codec=self._codec, crf=self._crf,
                                 preset=self._preset, threads=self._threads,
                                 fragmented=self._fragmented)
            self._writers[result.stream] = writer
            log.info("video sink: writing '%s' to %s (%s)", result.stream, writer.path, writer.codec)
        try:
            writer.write(self._render(result, frame), None if self._fixed_fps else result.pts)
        except (av.FFmpegError, OSError) as exc:
            raise self._failed(result.stream, writer, exc) from None

    def _failed(self, stream: str, writer: VideoWriter, exc: BaseException) -> StageError:
        """The one error for a file that cannot be written (disk full, file too large): the writer is
        dropped without finishing it (finishing would write more); a fragmented file keeps every
        fragment completed before."""
        del self._writers[stream]
        with contextlib.suppress(InputError, av.FFmpegError, OSError):  # its trailer cannot be written either
            writer.close()
        kept = ("the frames already in it stay playable (fragmented MP4)"
                if self._fragmented else "the file is not finished (set sinks.video_fragmented = true "
                                         "to keep what was written playable)")
        return StageError(f"video sink cannot write {writer.path}: "
                          f"{getattr(exc, 'strerror', None) or exc}; {kept}")

    def end_stream(self, stream: str, last_frame: int | None) -> None:
        """Finish `stream`'s file now (its MP4 index), so it is complete before the run ends."""
        writer = self._writers.pop(stream, None)
        if writer is not None:
            try:
                writer.close()
            except InputError as exc:
                raise StageError(f"video sink: {exc}") from None

    def close(self) -> None:
        """Finish every file (MP4 needs its index written at the end); safe to call twice."""
        if self._closed:
            return
        self._closed = True
        errors = []
        for writer in self._writers.values():
            try:
                writer.close()
            except InputError as exc:
                errors.append(str(exc))
        if errors:
            raise StageError("video sink: " + "; ".join(errors))

    def __enter__(self) -> "VideoSink":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
