"""Write BGR frames to an MP4 file with PyAV: H.264 (libx264) when PyAV's FFmpeg has it, else MPEG-4.

Used by the video sink and by the demo clip. Frames carry their own timestamps when the source had
them (variable frame rate, so live-mode drops keep real timing); otherwise they are spaced at `fps`.
"""
from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np

from posestream.stream.core.errors import BackendUnavailableError, InputError

log = logging.getLogger(__name__)

CODECS = ("libx264", "mpeg4")
FALLBACK_CODEC = "mpeg4"
# 1/60000 s is exact for 15/24/25/30/50/60 fps and for NTSC's 30000/1001, and stays under MPEG-4's
# limit of 65535 for the time-base denominator, so both codecs share it.
TIME_BASE = Fraction(1, 60000)
FRAGMENTED = {"movflags": "frag_every_frame+empty_moov+default_base_moof+negative_cts_offsets"}
_MPEG4_BIT_RATE = 4_000_000  # MPEG-4 has no CRF; FFmpeg's 200 kb/s default smears the skeletons


def _has_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except (av.codec.codec.UnknownCodecError, ValueError):
        return False
    return True


def pick_codec(preferred: str) -> str:
    """`preferred` when PyAV's FFmpeg can encode it, else MPEG-4 with a warning (some FFmpeg builds
    leave out the GPL x264)."""
    if _has_encoder(preferred):
        return preferred
    if preferred != FALLBACK_CODEC and _has_encoder(FALLBACK_CODEC):
        log.warning("encoder %s is not in PyAV's FFmpeg build; writing %s instead", preferred,
                    FALLBACK_CODEC)
        return FALLBACK_CODEC
    raise BackendUnavailableError(f"neither {preferred} nor {FALLBACK_CODEC} can be encoded by "
                                  f"PyAV's FFmpeg ({av.__version__}); reinstall the 'av' wheel")


class VideoWriter:
    """One MP4 file of fixed size. H.264 with yuv420p needs even sides, so an odd-sized frame gets one
    black row/column added at its bottom/right rather than being scaled."""

    def __init__(self, path: str | Path, width: int, height: int, *, fps: float = 30.0,
                 codec: str = "libx264", crf: int = 23, preset: str = "veryfast",
                 threads: int = 1, fragmented: bool = False) -> None:
        if width <= 0 or height <= 0:
            raise InputError(f"video size must be positive, got {width}x{height}")
        if fps <= 0:
            raise InputError(f"video fps must be positive, got {fps}")
        self.path = Path(path)
        self.width, self.height = width, height
        self.codec = pick_codec(codec)
        self._frame_step = 1.0 / fps
        self._last_pts: int | None = None
        self._first_ts: float | None = None
        self.frames_written = 0
        # FFmpeg opens the file only when it writes the header, so a bad path would surface at the end
        # of the run; creating the file here reports it before any frame is processed.
        try:
            self.path.open("wb").close()
        except OSError as exc:
            raise InputError(f"cannot write video {self.path}: {exc.strerror or exc}") from None
        # Fragmented MP4 (a fragment per frame, ~100 bytes each) stays playable when writing stops early.
        self._container = av.open(str(self.path), "w", options=FRAGMENTED if fragmented else {})
        self._closed = False
        self._stream = self._container.add_stream(self.codec, rate=Fraction(fps).limit_denominator(1001))
        self._stream.width = width + width % 2
        self._stream.height = height + height % 2
        self._stream.pix_fmt = "yuv420p"
        self._stream.time_base = TIME_BASE
        context = self._stream.codec_context
        context.time_base = TIME_BASE
        context.thread_count = threads
        if self.codec == "libx264":
            context.options = {"crf": str(crf), "preset": preset}
        else:
            context.bit_rate = _MPEG4_BIT_RATE

    def write(self, image_bgr: np.ndarray, timestamp: float | None = None) -> None:
        """Append one frame; `timestamp` in seconds (any origin), or None to follow `fps`. Timestamps
        that do not increase are nudged forward one tick, since MP4 needs strictly increasing pts."""
        if self._closed:
            raise InputError(f"video {self.path} is already closed")
        if image_bgr.shape != (self.height, self.width, 3) or image_bgr.dtype != np.uint8:
            raise InputError(f"video {self.path} is {self.width}x{self.height} BGR uint8; got a frame "
                             f"of shape {list(image_bgr.shape)} {image_bgr.dtype}")
        if timestamp is None:
            seconds = self.frames_written * self._frame_step
        else:
            if self._first_ts is None:
                self._first_ts = timestamp
            seconds = timestamp - self._first_ts
        pts = round(seconds / TIME_BASE)
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = pts
        if self._stream.width != self.width or self._stream.height != self.height:
            image_bgr = np.pad(image_bgr, ((0, self._stream.height - self.height),
                                           (0, self._stream.width - self.width), (0, 0)))
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image_bgr), format="bgr24")
        frame.pts = pts
        frame.time_base = TIME_BASE
        self._container.mux(self._stream.encode(frame))
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and finish the file (its index is written here); safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            try:
                self._container.mux(self._stream.encode())
            finally:
                self._container.close()
        except av.FFmpegError as exc:
            raise InputError(f"cannot finish video {self.path}: {exc}") from None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
