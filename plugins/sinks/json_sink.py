"""AlphaPose-format JSON (`alphapose-results.json`) that is valid after every written frame.

Layout: `[` on the first line, then one line per frame holding that frame's entries, then `]`:

    [
    {"image_id":"0.jpg","category_id":1,"keypoints":[...],"score":0.93,"box":[...],"idx":1}, {...},
    {"image_id":"1.jpg",...}
    ]

Each write seeks back over the closing `]`, writes the new frame lines and a fresh `]` in one
`write()`, and flushes to the OS. So a run killed even with SIGKILL leaves a JSON array holding every
frame whose `write()` returned; no companion file and no final rewrite are needed. The one remaining
risk is a kill in the middle of that `write()` (the kernel may stop a large write between pages):
the file then ends in a partial line, and `read_alphapose_json` recovers every complete frame from it,
because a frame is never split across lines. Data still in the OS cache is lost only on power loss
(no fsync: it would cost a disk flush per frame).

`image_id` is the image's file name for image sources, else `<frame>.jpg` (AlphaPose's video mode);
when the sink serves several streams it is `<stream>/<name>`. `idx` is the track id (null when the
pipeline runs without a tracker). Frames without persons write no line, as in AlphaPose.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from types import TracebackType
from typing import Any, Sequence

import numpy as np

from posestream.plugins.sinks.output_paths import StreamNames, image_name, writable_dir
from posestream.stream.core.contracts import Sink
from posestream.stream.core.settings import Settings
from posestream.stream.core.errors import InputError, InputNotFoundError, StageError
from posestream.stream.core.results import FrameResult

log = logging.getLogger(__name__)

DEFAULT_NAME = "alphapose-results.json"
_CLOSING = b"\n]\n"


def resolve_target(target: str) -> Path:
    """"" -> `alphapose-results.json` here; an existing directory (or a path ending in "/") -> that
    file inside it, like AlphaPose's `--outdir`; anything else is the file itself."""
    if not target:
        return Path(DEFAULT_NAME)
    path = Path(target).expanduser()
    if target.endswith(("/", "\\")) or path.is_dir():
        return path / DEFAULT_NAME
    return path


class JsonSink(Sink):
    """`JsonSink(settings, target, streams)`: appends each frame's AlphaPose entries to one file."""

    needs_pixels = False

    def __init__(self, settings: Settings, target: str = "", streams: Sequence[str] = ()) -> None:
        self._flush_every = settings.sinks.json_flush_every
        self.path = resolve_target(target)
        writable_dir(self.path.parent, "json sink directory")
        self._streams = StreamNames(streams, f"json sink {self.path}")
        self._closed = True
        try:
            self._file = self.path.open("wb", buffering=0)  # unbuffered: a failed write is undone below
            self._write_at(0, b"[" + _CLOSING)
        except OSError as exc:
            raise InputError(f"json sink cannot write {self.path}: {exc.strerror or exc}") from None
        self._closed = False
        self._tail = 1  # byte offset of the closing "\n]\n"
        self._pending: list[str] = []
        self._pending_frames = 0
        self.frames = 0  # frames received
        self.frames_written = 0  # frames whose lines are in the file
        self.entries = 0  # persons written

    def write(self, result: FrameResult, frame: np.ndarray | None = None) -> None:
        if self._closed:
            raise StageError(f"json sink {self.path}: write after close")
        self._streams.check(result.stream)
        name = image_name(result)
        image_id = f"{result.stream}/{name}" if self._streams.several else name
        entries = result.to_alphapose(image_id)
        if entries:
            self._pending.append(", ".join(json.dumps(e, separators=(",", ":")) for e in entries))
            self.entries += len(entries)
        self.frames += 1
        self._pending_frames += 1
        if self._pending_frames >= self._flush_every:
            self._flush()

    def end_stream(self, stream: str, last_frame: int | None) -> None:
        """Nothing to do: the file is a complete JSON array after every write, and AlphaPose's
        format has no per-stream end marker. (Buffered lines are written by `close`.)"""

    def _flush(self) -> None:
        flushed, self._pending_frames = self._pending_frames, 0
        if not self._pending:
            self.frames_written += flushed
            return
        lead = "\n" if self._tail == 1 else ",\n"
        data = (lead + ",\n".join(self._pending)).encode("utf-8")
        self._pending.clear()
        try:
            self._write_at(self._tail, data + _CLOSING)
        except OSError as exc:
            raise StageError(f"json sink cannot write {self.path}: {exc.strerror or exc}; "
                             f"{self._restore()}") from None
        self._tail += len(data)
        self.frames_written += flushed

    def _write_at(self, offset: int, data: bytes) -> None:
        """All of `data` at `offset` (a write may be short when the disk fills up)."""
        view = memoryview(data)
        while view:
            written = os.pwrite(self._file.fileno(), view, offset)
            offset += written
            view = view[written:]

    def _restore(self) -> str:
        """After a failed write (disk full, file too large): cut the partial frame lines off and put
        the closing bracket back, so the file is the valid array it was before. Returns what the
        file holds now, for the error message."""
        try:
            os.ftruncate(self._file.fileno(), self._tail)
            self._write_at(self._tail, _CLOSING)
        except OSError as exc:
            return f"the file could not be restored ({exc.strerror or exc}); read it with read_alphapose_json"
        return f"the file keeps the {self.frames_written} frames written before, as valid JSON"

    def end_stream(self, stream: str, last_frame: int | None) -> None:
        """Nothing to do per stream: all streams share one file, finished by `close`."""

    def close(self) -> None:
        """Write what is buffered and close the file; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._flush()
        finally:
            self._file.close()
        log.info("json sink %s: %d frames, %d persons", self.path, self.frames, self.entries)

    def __enter__(self) -> "JsonSink":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def read_alphapose_json(path: str | Path) -> list[dict[str, Any]]:
    """The entries of an AlphaPose JSON file. A file whose writer was killed mid-write (see the module
    docstring) is read up to its last complete frame line, with a warning saying so."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise InputNotFoundError(f"AlphaPose JSON not found: {path}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return _recover(path, text)
    if not isinstance(data, list):
        raise InputError(f"{path} is not an AlphaPose result list (top level is {type(data).__name__})")
    return data


def _recover(path: Path, text: str) -> list[dict[str, Any]]:
    """Entries of every frame line that a newline follows. The sink writes each frame line and then
    the character after it, so a line with a newline after it is complete; the text after the last
    newline is the torn write. A tear within the first bytes of a write can leave `,]` from the old
    closing bracket at the end of the last complete line, hence the suffix stripping."""
    *lines, _torn = text.split("\n")
    if not lines or lines[0].strip() != "[":
        raise InputError(f"{path} is neither valid JSON nor a partial file written by posestream's "
                         "json sink")
    entries: list[dict[str, Any]] = []
    frames = 0
    for line in lines[1:]:
        body = line.strip().removesuffix("]").removesuffix(",")
        if not body:
            break
        try:
            entries.extend(json.loads(f"[{body}]"))
        except json.JSONDecodeError:
            break
        frames += 1
    log.warning("%s was cut off mid-write; recovered %d complete frame lines (%d persons)", path,
                frames, len(entries))
    return entries
