"""Images sink: one annotated JPEG per frame in a folder, named like the frame's JSON `image_id`
(`<frame>.jpg` for video, the source file's name with a `.jpg` suffix for images), so a rendered
image and its AlphaPose entries match by name. With several streams each gets a sub-folder."""
from __future__ import annotations

from pathlib import Path, PurePath
from types import TracebackType
from typing import Sequence

import cv2
import numpy as np

from posestream.plugins.sinks.output_paths import (StreamNames, check_render_write, image_name, safe_stream_name,
                                        writable_dir)
from posestream.plugins.sinks.render_settings import Renderer
from posestream.stream.core.contracts import Sink
from posestream.stream.core.settings import Settings
from posestream.stream.core.errors import ConfigError, StageError
from posestream.stream.core.results import FrameResult


class ImagesSink(Sink):
    """`ImagesSink(settings, target, streams)`: `target` is the output folder (created if missing)."""

    needs_pixels = True

    def __init__(self, settings: Settings, target: str, streams: Sequence[str] = ()) -> None:
        if not target:
            raise ConfigError("images sink needs an output folder, e.g. --sink images:out/")
        quality = settings.sinks.images_quality
        self.directory = writable_dir(Path(target).expanduser(), "images sink folder")
        self._params = [cv2.IMWRITE_JPEG_QUALITY, quality]
        self._render = Renderer(settings.sinks)
        self._streams = StreamNames(streams, f"images sink {self.directory}")
        self._closed = False
        self.written = 0

    def path_for(self, result: FrameResult) -> Path:
        """Where `result`'s image goes. Only the name of an image source's file is used, so an odd
        `image_id` (absolute, with `..`) cannot write outside the folder."""
        folder = self.directory / safe_stream_name(result.stream) if self._streams.several else self.directory
        return folder / PurePath(image_name(result)).with_suffix(".jpg").name

    def write(self, result: FrameResult, frame: np.ndarray | None) -> None:
        check_render_write(f"images sink {self.directory}", self._closed, result, frame)
        self._streams.check(result.stream)
        path = self.path_for(result)
        ok, encoded = cv2.imencode(".jpg", self._render(result, frame), self._params)
        if not ok:
            raise StageError(f"images sink: could not encode {path}")
        try:
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(encoded.tobytes())
        except OSError as exc:
            # A partial JPEG would pass for a result: remove it; the images before stay whole.
            path.unlink(missing_ok=True)
            raise StageError(f"images sink cannot write {path}: {exc.strerror or exc}; the "
                             f"{self.written} images before it are complete") from None
        self.written += 1

    def end_stream(self, stream: str, last_frame: int | None) -> None:
        """Nothing to do per stream: each frame is its own file."""

    def close(self) -> None:
        """Nothing is buffered (each image is complete when `write` returns); safe to call twice."""
        self._closed = True

    def __enter__(self) -> "ImagesSink":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
