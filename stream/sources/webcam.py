"""V4L2 webcams through OpenCV, with the requested resolution, frame rate and pixel format."""
from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Iterator

import cv2

from posestream.stream.core.errors import InputError, InputNotFoundError, SourceTimeoutError
from posestream.stream.sources.base import Frame, Source, SourceInfo, SourceSettings

log = logging.getLogger(__name__)

_DEVICE = re.compile(r"^/dev/video(\d+)$")


def webcam_index(spec: str) -> int | None:
    """The V4L2 index of `3` or `/dev/video3`; None when `spec` names no webcam."""
    if spec.isdigit():
        return int(spec)
    match = _DEVICE.match(spec)
    return int(match.group(1)) if match else None


class WebcamSource(Source):
    """A webcam read on the caller's thread. The driver's queue is set to one buffer, so a slow
    consumer gets a recent picture rather than a backlog."""

    def __init__(self, index: int, settings: SourceSettings, name: str) -> None:
        super().__init__()
        device = Path(f"/dev/video{index}")
        if not device.exists():
            raise InputNotFoundError(f"webcam {device} not found (no such V4L2 device)")
        self._device = device
        self._read_timeout_s = settings.read_timeout_s
        self._capture = cv2.VideoCapture(index, cv2.CAP_V4L2)
        if not self._capture.isOpened():
            self._capture.release()
            raise InputError(f"webcam {device} exists but cannot be opened (busy or not a camera?)")
        if settings.webcam_fourcc:
            self._capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*settings.webcam_fourcc))
        if settings.webcam_width:
            self._capture.set(cv2.CAP_PROP_FRAME_WIDTH, settings.webcam_width)
        if settings.webcam_height:
            self._capture.set(cv2.CAP_PROP_FRAME_HEIGHT, settings.webcam_height)
        if settings.webcam_fps:
            self._capture.set(cv2.CAP_PROP_FPS, settings.webcam_fps)
        self._capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        width = int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(self._capture.get(cv2.CAP_PROP_FPS)) or None
        if (settings.webcam_width, settings.webcam_height) not in ((0, 0), (width, height)):
            log.warning("webcam %s: asked for %dx%d, the device gives %dx%d", device,
                        settings.webcam_width, settings.webcam_height, width, height)
        self.info = SourceInfo(name=name, kind="webcam", live=True, width=width, height=height,
                               fps=fps, max_width=width, max_height=height)

    def _frames(self) -> Iterator[Frame]:
        last_frame = time.monotonic()
        while not self.closed:
            ok, image = self._capture.read()
            now = time.time()
            if not ok or image is None:
                if self.closed:
                    return
                if time.monotonic() - last_frame > self._read_timeout_s:
                    self.stats.lost += 1
                    raise SourceTimeoutError(f"webcam {self._device} delivered no frame for "
                                             f"{self._read_timeout_s} s (unplugged?)")
                self.stats.decode_errors += 1
                time.sleep(0.01)
                continue
            last_frame = time.monotonic()
            self.stats.frames_read += 1
            yield self._frame(image, None, now)

    def _release(self) -> None:
        self._capture.release()
