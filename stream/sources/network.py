"""Network cameras (RTSP, RTSPS, HTTP/HTTPS) through PyAV, built to survive the network.

A background thread owns the connection: it keeps reading and decoding so the socket never backs
up, and leaves only the newest frame in a one-frame slot (older undelivered frames are counted as
dropped). Every blocking FFmpeg call is bounded by socket timeouts and PyAV's interrupt timeout, so
a frozen server turns into "lost" instead of a hang. A lost stream is reopened with capped
exponential backoff; "lost" and "restored" are logged and counted in `stats`.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any, Iterator
from urllib.parse import urlsplit, urlunsplit

import av
from av.video.reformatter import VideoReformatter

from posestream.stream.core.errors import InputError, PosestreamError
from posestream.stream.sources.base import Frame, Source, SourceInfo, SourceSettings
from posestream.stream.sources.pyav_media import (decode_frames, describe, open_container, to_bgr,
                                                   video_stream)

log = logging.getLogger(__name__)

NETWORK_SCHEMES = ("rtsp", "rtsps", "http", "https")


def redact(url: str) -> str:
    """The URL with any password replaced, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def default_name(url: str) -> str:
    """A topic-safe stream name from host and path, e.g. `127.0.0.1_live`."""
    parts = urlsplit(url)
    text = f"{parts.hostname or 'camera'}{parts.path}"
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_") or "camera"


def blocking_timeout_s(settings: SourceSettings) -> float:
    """The bound on one blocking FFmpeg read: half the read timeout. At its first timeout FFmpeg's
    parser hands out the frame it was holding back (it waits for the next frame's start to know
    where the last one ends), and only the second timeout fails; so a silent camera is declared
    lost after at most `read_timeout_s`."""
    return settings.read_timeout_s / 2


def ffmpeg_options(scheme: str, settings: SourceSettings) -> dict[str, str]:
    """FFmpeg (>= 5) input options. `timeout` is the socket I/O timeout in microseconds for the
    RTSP demuxer and the HTTP protocol (FFmpeg 5 renamed RTSP's old `stimeout` to it). It is only
    a backstop, longer than both of ours: PyAV's interrupt timeouts bound each call, and FFmpeg's
    own socket timeout would surface mid-handshake as "invalid data" instead of a timeout."""
    socket_timeout_us = str(int((settings.connect_timeout_s + settings.read_timeout_s) * 1e6))
    options = {"timeout": socket_timeout_us,
               "analyzeduration": str(int(settings.probe_s * 1e6))}
    if scheme in ("rtsp", "rtsps"):
        options["rtsp_transport"] = settings.rtsp_transport
    else:
        options["rw_timeout"] = socket_timeout_us
    return options


class NetworkSource(Source):
    """A live network stream. The first connection happens in the constructor and fails with one
    clear error (unreachable, refused, no answer in `connect_timeout_s`); later losses are retried
    forever by the reader thread until `close()`."""

    def __init__(self, url: str, settings: SourceSettings, name: str | None) -> None:
        super().__init__()
        scheme = urlsplit(url).scheme.lower()
        if scheme not in NETWORK_SCHEMES:
            raise InputError(f"unsupported URL scheme '{scheme}' (supported: {', '.join(NETWORK_SCHEMES)})")
        self._url = url
        self._what = f"camera {redact(url)}"
        self._settings = settings
        self._options = ffmpeg_options(scheme, settings)
        self._slot = threading.Condition()
        self._latest: tuple[Any, float] | None = None
        self._failure: BaseException | None = None
        self._reformatter = VideoReformatter()  # to_bgr's scaler, kept between frames (consumer's thread)
        container, frames, first = self._connect()
        self._put(first)
        self.info = SourceInfo(name=name or default_name(url), kind="network", live=True,
                               width=first.width, height=first.height, fps=self._fps(container),
                               max_width=first.width, max_height=first.height)
        self._thread = threading.Thread(target=self._run, args=(container, frames),
                                        name=f"source-{self.info.name}", daemon=True)
        self._thread.start()

    @staticmethod
    def _fps(container: Any) -> float | None:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        return float(rate) if rate else None

    def _connect(self) -> tuple[Any, Iterator[Any], Any]:
        """Open the stream and decode its first frame, all within the timeouts; returns the
        container, its frame iterator (to continue from) and that first frame."""
        settings = self._settings
        container = open_container(self._url, self._what, options=self._options,
                                   timeout=(settings.connect_timeout_s, blocking_timeout_s(settings)))
        try:
            stream = video_stream(container, self._what, settings.decode_threads, "SLICE")
            # Packets without a decodable frame count as silence; the first frame may wait for
            # a key frame, so the longer of the two timeouts applies.
            frames = decode_frames(container, stream, self.stats, self._what,
                                   stall_s=max(settings.connect_timeout_s, settings.read_timeout_s))
            try:
                first = next(frames)
            except StopIteration:
                raise InputError(f"{self._what}: the stream ended before its first frame") from None
            except av.FFmpegError as exc:
                raise InputError(f"{self._what}: reading the first frame failed: "
                                 f"{describe(exc)}") from None
        except BaseException:
            container.close()
            raise
        return container, frames, first

    def _put(self, frame: Any) -> None:
        with self._slot:
            if self._latest is not None:
                self.stats.frames_dropped += 1
            self._latest = (frame, time.time())
            self._slot.notify_all()

    def _run(self, container: Any, frames: Iterator[Any]) -> None:
        try:
            while container is not None:
                reason = self._pump(container, frames)
                if self.closed:
                    return
                self.stats.lost += 1
                log.warning("source %s: lost (%s)", self.info.name, reason)
                container, frames = self._reconnect()
        except Exception as exc:  # noqa: BLE001 - reported to the consumer by frames()
            log.exception("source %s: reader thread failed", self.info.name)
            self._failure = exc
        finally:
            with self._slot:
                self._slot.notify_all()

    def _pump(self, container: Any, frames: Iterator[Any]) -> str:
        """Move frames into the slot until the stream fails; returns why it stopped."""
        try:
            for frame in frames:
                self._put(frame)
                if self.closed:
                    return "closed"
            return "end of stream"
        except (av.error.ExitError, av.error.TimeoutError):
            return f"no data for {self._settings.read_timeout_s} s"
        except (av.FFmpegError, OSError, PosestreamError) as exc:
            return describe(exc)
        finally:
            container.close()

    def _reconnect(self) -> tuple[Any, Iterator[Any]] | tuple[None, None]:
        lost_at = time.monotonic()
        delay = self._settings.reconnect_initial_s
        attempts = 0
        while not self._closed.wait(delay):
            attempts += 1
            self.stats.reconnect_attempts += 1
            try:
                container, frames, first = self._connect()
            except PosestreamError as exc:
                delay = min(delay * 2, self._settings.reconnect_max_s)
                log.info("source %s: reconnect attempt %d failed (%s); next in %.1f s",
                         self.info.name, attempts, exc, delay)
                continue
            self._put(first)
            self.stats.restored += 1
            log.warning("source %s: restored (after %.1f s, %d attempts)", self.info.name,
                        time.monotonic() - lost_at, attempts)
            return container, frames
        return None, None

    def _frames(self) -> Iterator[Frame]:
        while True:
            with self._slot:
                while self._latest is None and not self.closed and self._failure is None:
                    self._slot.wait(0.5)
                if self.closed:
                    return
                if self._failure is not None:
                    raise InputError(f"{self._what}: reader failed: {self._failure}")
                frame, capture_ts = self._latest
                self._latest = None
            image = to_bgr(frame, self.decode_size(frame.width, frame.height), self._reformatter)
            yield self._frame(image, frame.time, capture_ts, source_hw=(frame.height, frame.width))

    def _interrupt(self) -> None:
        with self._slot:
            self._slot.notify_all()

    def _release(self) -> None:
        thread = getattr(self, "_thread", None)
        if thread is None:
            return
        # A blocked FFmpeg call returns within its timeout; wait for that, no longer.
        thread.join(self._settings.connect_timeout_s + self._settings.read_timeout_s + 1.0)
        if thread.is_alive():
            log.warning("source %s: reader thread still busy after close", self.info.name)
