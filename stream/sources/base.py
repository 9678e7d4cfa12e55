"""What every source yields and exposes: `Frame`, `SourceInfo`, `SourceStats`, the `Source` base
class, and `SourceSettings` (the `[source]` config table, validated once where it enters)."""
from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterator

import cv2
import numpy as np

from posestream.stream.core.settings import SourceSettings  # noqa: F401  (the [source] type lives in the core)

log = logging.getLogger(__name__)



@dataclass
class Frame:
    """One decoded picture. `index` counts delivered frames from 0 without gaps; `pts` is the
    stream's presentation time in seconds (None when the source has none); `capture_ts` is
    `time.time()` when the frame was read; `image_id` is the file name for image sources;
    `source_hw` is the (H, W) the source has when the decoder scaled `image` down (`scale_to`)."""

    image: np.ndarray
    index: int
    pts: float | None
    capture_ts: float
    image_id: str | None = None
    source_hw: tuple[int, int] | None = None


@dataclass
class SourceInfo:
    """What a consumer needs before the first frame: the frame ring is sized from max_width/height,
    `live` chooses the drop-oldest policy over blocking, and `frame_count` (None for live sources
    and files that do not say) lets the progress bar show a percentage and an ETA."""

    name: str
    kind: str
    live: bool
    width: int
    height: int
    fps: float | None
    max_width: int
    max_height: int
    frame_count: int | None = None


@dataclass
class SourceStats:
    """Counters for the metrics report. Written by one reader thread, read by anyone."""

    frames_read: int = 0
    frames_delivered: int = 0
    frames_dropped: int = 0
    decode_errors: int = 0
    lost: int = 0
    restored: int = 0
    reconnect_attempts: int = 0
    frames_expected: int | None = None   # what the container or folder announced (files only)
    expected_is_estimate: bool = False   # duration x rate (Matroska, WebM keep no frame count)
    errors: dict[str, int] = field(default_factory=dict)  # what interrupted decoding -> times
    ended_by: str | None = None          # the error that ended reading early, if one did

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Source:
    """A context manager over one input. Subclasses set `info` last in `__init__` and implement
    `_frames()` (building frames with `_frame()`, so indices are consecutive) and `_release()`.

    `close()` is safe twice and from another thread, e.g. a watchdog stopping a pipeline while the
    consumer is inside `frames()`: decoders and capture devices are not thread-safe, so while a
    `frames()` is running the release is left to it (it notices at its next frame, or a live
    source's `_interrupt()` wakes it) and happens when that generator finishes."""

    info: SourceInfo
    # Longest side the decoder scales frames down to (None: full size). Set by the pipeline before
    # the first frame when only the detector reads pixels: scaling inside the decoder's colour
    # conversion costs less than converting, copying and letterboxing the full-size frame.
    scale_to: int | None = None

    def __init__(self) -> None:
        self.stats = SourceStats()
        self._next_index = 0
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._readers = 0
        self._released = False

    def frames(self) -> Iterator[Frame]:
        """Frames until the input ends or the source is closed."""
        with self._lock:
            if self._closed.is_set():
                return
            self._readers += 1
        try:
            for frame in self._frames():
                self.stats.frames_delivered += 1
                yield frame
                if self._closed.is_set():
                    return
        finally:
            with self._lock:
                self._readers -= 1
                release = self._closed.is_set() and self._readers == 0
            if release:
                self._release_once()

    def _frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def scale_down_to(self, long_side: int) -> None:
        """Deliver every frame with its longest side at most `long_side` (call before the first
        frame); `info.max_width`/`max_height` become the largest such frame."""
        self.scale_to = long_side
        info = self.info
        if (info.width, info.height) == (info.max_width, info.max_height):  # one frame size
            width, height = self.decode_size(info.width, info.height) or (info.width, info.height)
        else:  # frames of several sizes (a folder): each fits within long_side x long_side
            width, height = min(info.max_width, long_side), min(info.max_height, long_side)
        self.info = replace(info, max_width=width, max_height=height)

    def decode_size(self, width: int, height: int) -> tuple[int, int] | None:
        """(width, height) to decode a `width` x `height` picture at under `scale_to`, or None for
        its full size."""
        if self.scale_to is None or max(width, height) <= self.scale_to:
            return None
        scale = self.scale_to / max(width, height)
        return max(1, round(width * scale)), max(1, round(height * scale))

    def _frame(self, image: np.ndarray, pts: float | None, capture_ts: float,
               image_id: str | None = None, source_hw: tuple[int, int] | None = None) -> Frame:
        """Wrap a decoded picture with the next delivered index (scaled down to `scale_to` here
        unless the decoder did it: then `source_hw` is the size it had)."""
        size = self.decode_size(image.shape[1], image.shape[0])
        if size is not None:
            source_hw = source_hw or image.shape[:2]
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        frame = Frame(np.ascontiguousarray(image), self._next_index, pts, capture_ts, image_id,
                      source_hw if source_hw != image.shape[:2] else None)
        self._next_index += 1
        return frame

    def _interrupt(self) -> None:
        """Wake a `frames()` that is waiting for a live frame; called by `close()` at once."""

    def _release(self) -> None:
        raise NotImplementedError

    def _release_once(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._release()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def close(self) -> None:
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
            release_now = self._readers == 0
        self._interrupt()
        if release_now:
            self._release_once()

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:  # backstop only; callers close explicitly
        if getattr(self, "info", None) is not None and not self._closed.is_set():
            try:
                self.close()
            except Exception:  # noqa: BLE001 - never raise from a finalizer
                log.debug("source close during garbage collection failed", exc_info=True)

    def __repr__(self) -> str:
        info = getattr(self, "info", None)
        return f"<{type(self).__name__} {info.name if info else '?'} closed={self.closed}>"
