"""`open_source`: one string (or a list of image paths) in, the right kind of `Source` out."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from posestream.stream.core.errors import InputError, InputNotFoundError
from posestream.stream.core.settings import Settings
from posestream.stream.sources.base import Source
from posestream.stream.core.images import is_image_path
from posestream.stream.sources.images import open_image_folder, open_image_list
from posestream.stream.sources.network import NETWORK_SCHEMES, NetworkSource
from posestream.stream.sources.video_file import open_lavfi, open_video_file
from posestream.stream.sources.webcam import WebcamSource, webcam_index

LAVFI_PREFIX = "lavfi:"


def open_source(spec: str | os.PathLike | Sequence[str | os.PathLike], settings: Settings,
                name: str | None = None) -> Source:
    """Open what `spec` names, checked in this order:

    - `lavfi:GRAPH` (e.g. `lavfi:testsrc=size=640x360:rate=30`): an FFmpeg test source, live;
    - `rtsp://`, `rtsps://`, `http://`, `https://`: a network camera, live;
    - `N` or `/dev/videoN`: a V4L2 webcam, live;
    - an existing directory: its images, sorted by name;
    - an existing image file, a comma-separated list of images, or a list/tuple of paths: those images;
    - any other existing file: a video file.

    Raises `InputNotFoundError` for a path that does not exist, `InputError` for one that cannot
    be used, `SourceTimeoutError` for a camera that does not answer in time.
    """
    source_settings = settings.source
    if isinstance(spec, (list, tuple)):
        return open_image_list([Path(p) for p in spec], name)
    text = os.fspath(spec).strip()
    if not text:
        raise InputError("empty source: give a file, folder, image list, webcam or URL")
    if text.startswith(LAVFI_PREFIX):
        return open_lavfi(text[len(LAVFI_PREFIX):], source_settings, name)
    scheme, sep, _ = text.partition("://")
    if sep:
        if scheme.lower() not in NETWORK_SCHEMES:
            raise InputError(f"unsupported source URL scheme '{scheme}' in {text!r} "
                             f"(supported: {', '.join(NETWORK_SCHEMES)})")
        return NetworkSource(text, source_settings, name)
    index = webcam_index(text)
    if index is not None:
        return WebcamSource(index, source_settings, name or f"webcam{index}")
    path = Path(text).expanduser()
    if path.is_dir():
        return open_image_folder(path, name)
    if path.is_file():
        if is_image_path(path):
            return open_image_list([path], name or path.stem)
        return open_video_file(path, source_settings, name)
    if "," in text:
        return open_image_list([Path(p.strip()).expanduser() for p in text.split(",") if p.strip()],
                               name)
    raise InputNotFoundError(f"source not found: {text} (no such file or folder)")
