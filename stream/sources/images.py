"""Image folders and image lists: one frame per readable image, in order, with `image_id` = file name."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Iterator, Sequence

import cv2
from PIL import Image, UnidentifiedImageError

from posestream.stream.core.errors import InputError, InputNotFoundError
from posestream.stream.core.images import IMAGE_SUFFIXES, is_image_path, list_images
from posestream.stream.sources.base import Frame, Source, SourceInfo
from posestream.stream.sources.damage import note, summary

log = logging.getLogger(__name__)

# EXIF orientations 5..8 rotate by 90 degrees; cv2.imread applies them, so the decoded frame is
# taller than the header says.
_ROTATED_ORIENTATIONS = (5, 6, 7, 8)
_EXIF_ORIENTATION = 0x0112


def header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) as cv2.imread will decode it, read from the header only; None when the file
    is not an image Pillow can identify (it is then skipped at read time, like a corrupt image)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if image.getexif().get(_EXIF_ORIENTATION) in _ROTATED_ORIENTATIONS:
                width, height = height, width
            return width, height
    except (UnidentifiedImageError, OSError, ValueError):
        return None


class ImageSource(Source):
    """Images read with OpenCV in the given order. A file that does not decode is logged, counted in
    `stats.decode_errors`, named in `stats.errors` and skipped; indices stay consecutive over the
    delivered images, and the end of the folder logs how many of its images were read."""

    def __init__(self, paths: Sequence[Path], name: str, kind: str) -> None:
        super().__init__()
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise InputNotFoundError(f"image not found: {', '.join(missing[:5])}"
                                     + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""))
        self._paths = list(paths)
        sizes = [size for size in map(header_size, self._paths) if size is not None]
        if not sizes:
            raise InputError(f"none of the {len(self._paths)} images can be read "
                             f"(first: {self._paths[0]})")
        width, height = sizes[0]
        self.info = SourceInfo(name=name, kind=kind, live=False, width=width, height=height,
                               fps=None, max_width=max(w for w, _ in sizes),
                               max_height=max(h for _, h in sizes), frame_count=len(self._paths))
        self.stats.frames_expected = len(self._paths)

    def _frames(self) -> Iterator[Frame]:
        for path in self._paths:
            if self.closed:
                return
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                self.stats.decode_errors += 1
                note(self.stats, f"unreadable image {path.name}", log, f"source {self.info.name}")
                continue
            self.stats.frames_read += 1
            yield self._frame(image, None, time.time(), image_id=path.name)
        line = summary(f"source {self.info.name}", self.stats.as_dict())
        if line is not None:
            log.warning("%s", line)

    def _release(self) -> None:
        """Nothing is held open between images."""


def open_image_folder(folder: Path, name: str | None) -> ImageSource:
    return ImageSource(list_images(folder), name or folder.name or "images", "image_folder")


def open_image_list(paths: Sequence[Path], name: str | None) -> ImageSource:
    if not paths:
        raise InputError("image list is empty")
    not_images = [str(p) for p in paths if not is_image_path(p)]
    if not_images:
        raise InputError(f"not an image file name ({', '.join(IMAGE_SUFFIXES)}): "
                         f"{', '.join(not_images[:5])}")
    return ImageSource(paths, name or "images", "image_list")
