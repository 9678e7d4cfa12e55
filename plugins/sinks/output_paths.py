"""What the file sinks share: output names per frame and per stream, and target checks made when a
sink is created (a bad target is reported before the first frame, not after the run)."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

from posestream.stream.core.errors import InputError, StageError
from posestream.stream.core.results import FrameResult


def image_name(result: FrameResult) -> str:
    """The frame's name in every output: the file name for image sources, else `<frame>.jpg` as in
    AlphaPose's video mode, so JSON `image_id`s and rendered image files match."""
    return result.image_id or f"{result.frame}.jpg"


def safe_stream_name(stream: str) -> str:
    """`stream` made usable as a file or folder name (a URL becomes e.g. `rtsp_cam1_live`)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", stream).strip("._")
    return cleaned or "stream"


def writable_dir(path: Path, what: str) -> Path:
    """`path` as an existing, writable directory (created if missing), else one clear `InputError`."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InputError(f"{what} {path} is a file, not a directory") from None
    except OSError as exc:
        raise InputError(f"{what} {path} cannot be created: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise InputError(f"{what} {path} is not writable")
    return path


def check_render_write(sink: str, closed: bool, result: FrameResult, frame: object | None) -> None:
    """What every rendering sink requires of a `write`: it is still open and it got the pixels."""
    if closed:
        raise StageError(f"{sink}: write after close")
    if frame is None:
        raise StageError(f"{sink}: got no pixels for frame {result.frame} of '{result.stream}' "
                         "(the pipeline must pass frames to needs_pixels sinks)")


class StreamNames:
    """The streams a sink serves. With several, outputs carry the stream's name; with one (or when
    the caller did not say), a second stream turning up is a wiring error, reported as such rather
    than silently mixing two streams into one output."""

    def __init__(self, streams: Sequence[str], sink: str) -> None:
        if len(set(streams)) != len(streams):
            raise InputError(f"{sink}: stream names must be unique, got {list(streams)}")
        self.several = len(streams) > 1
        self._known = list(streams)
        self._sink = sink

    def check(self, stream: str) -> None:
        if stream in self._known:
            return
        if self.several:
            raise StageError(f"{self._sink}: frame from unknown stream '{stream}' "
                             f"(expected one of: {', '.join(self._known)})")
        if self._known:
            raise StageError(f"{self._sink} was created for one stream ('{self._known[0]}') but got "
                             f"frames from '{stream}' too; create it with streams=[...] naming all")
        self._known.append(stream)
