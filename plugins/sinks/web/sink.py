"""The sinks-process half of the web viewer: hands each finished frame to the viewer server.

The server (`host.WebHost`) lives in the supervisor process; this half connects an XPUB socket to
the server's private feed (an ipc:// socket in a directory only this user can open) and sends, per
frame, one small message: the wire message plus the per-stage timings (for the latency histograms).
A JPEG goes along only when the server subscribed to that stream's pictures (someone watches it) and
at most `web.max_fps` times a second per stream; otherwise nothing is encoded. Sending never waits:
when the feed is full the frame is dropped for the viewer and counted.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Sequence

import cv2
import numpy as np
import zmq

from posestream.plugins.sinks.web.feed import TOPIC_FRAME, TOPIC_KEYPOINTS, pack, topic
from posestream.plugins.sinks.web.settings import web_settings
from posestream.stream.core.config import Config
from posestream.stream.core.contracts import Sink
from posestream.stream.core.errors import ConfigError, StageError
from posestream.stream.core.results import FrameResult
from posestream.stream.core.settings import Settings
from posestream.stream.core.wire import frame_message

if TYPE_CHECKING:
    from posestream.plugins.sinks.web.host import WebHost

log = logging.getLogger(__name__)

FEED_HWM = 32  # messages the feed queues before frames are dropped for the viewer (bounded memory)


def encode_jpeg(frame: np.ndarray, max_width: int, quality: int) -> bytes:
    """BGR frame -> JPEG bytes, scaled down to `max_width` first (the page draws keypoints in frame
    pixels scaled to whatever size the picture has, so scaling here never shifts them)."""
    height, width = frame.shape[:2]
    if width > max_width:
        frame = cv2.resize(frame, (max_width, max(1, round(height * max_width / width))),
                           interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise StageError("web sink: JPEG encoding failed")
    return data.tobytes()


class WebSink(Sink):
    """`WebSink(settings, target, streams)`. `posestream run --sink web[:HOST:PORT]` starts the
    server in the supervisor (`in_supervisor`), which hands this class the feed endpoint as target."""

    needs_pixels = True

    @classmethod
    def in_supervisor(cls, config: Settings | Config, target: str) -> "WebHost":
        """The server half, started by the pipeline in the supervisor process before the stages."""
        from posestream.plugins.sinks.web.host import WebHost

        return WebHost(config, target)

    def __init__(self, settings: Settings | Config, target: str = "", streams: Sequence[str] = ()) -> None:
        if not target.startswith("ipc://"):
            raise ConfigError(f"web sink: '{target}' is not a viewer feed; the web sink runs inside "
                              "`posestream run --sink web[:HOST:PORT]`, which starts its server")
        self.settings = web_settings(settings)
        self._interval = 1.0 / self.settings.max_fps
        self._next_due: dict[str, float] = {}
        self._subscribed: set[bytes] = set()
        self.sent = 0
        self.encoded = 0
        self.dropped = 0
        self._closed = False
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.XPUB)
        self._socket.sndhwm = FEED_HWM
        self._socket.linger = 0
        self._socket.connect(target)
        log.debug("web sink feeding %s (streams %s)", target, ", ".join(streams))

    def _read_subscriptions(self) -> None:
        """XPUB reports the server's (un)subscriptions: b"\\x01" + topic, b"\\x00" + topic."""
        while self._socket.poll(0, zmq.POLLIN):
            notice = self._socket.recv(zmq.NOBLOCK)
            (self._subscribed.add if notice[:1] == b"\x01" else self._subscribed.discard)(notice[1:])

    def _watched(self, stream: str) -> bool:
        """True when a viewer watches `stream` and its next picture is due (the rate cap)."""
        if topic(TOPIC_FRAME, stream) not in self._subscribed:
            return False
        now = time.monotonic()
        due = self._next_due.get(stream, 0.0)
        if now < due:
            return False
        # one interval after the previous slot, not after now: frames arriving with jitter at about
        # max_fps all get pictures; a slot is never older than one interval, so bursts stay short
        self._next_due[stream] = max(due, now - self._interval) + self._interval
        return True

    def write(self, result: FrameResult, frame: np.ndarray | None) -> None:
        if self._closed:
            raise StageError("web sink: write after close")
        self._read_subscriptions()
        body = pack(frame_message(result, publish_ts=time.time()), result.timings)
        if frame is not None and self._watched(result.stream):
            parts = [topic(TOPIC_FRAME, result.stream), body,
                     encode_jpeg(frame, self.settings.max_width, self.settings.jpeg_quality)]
            self.encoded += 1
        else:
            parts = [topic(TOPIC_KEYPOINTS, result.stream), body]
        try:
            self._socket.send_multipart(parts, flags=zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1
            return
        self.sent += 1

    def end_stream(self, stream: str, last_frame: int | None) -> None:
        """Nothing to flush: the server notices the end from its own stream counters."""
        del stream, last_frame

    def close(self) -> None:
        """Disconnect; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._socket.close(linger=0)
        self._context.term()
        log.info("web sink closed: %d frames sent (%d with a picture), %d dropped", self.sent,
                 self.encoded, self.dropped)

    def __enter__(self) -> "WebSink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

