"""The sinks-process half of the web viewer: hands each finished frame to the viewer server.

The server (`host.WebHost`) lives in the supervisor process; this half connects an XPUB socket to
the server's private feed (an ipc:// socket in a directory only this user can open) and sends, per
frame, one small message: the wire message plus the per-stage timings (for the latency histograms).
A JPEG goes along only when the server subscribed to that stream's pictures (someone watches it) and
at most `web.max_fps` times a second per stream; otherwise nothing is encoded. The encoding happens in
a thread of its own (OpenCV releases the GIL), so the sinks stage only copies the frame and moves on;
if the encoder is still busy when the next picture is due, the newer frame replaces the waiting one.
Sending never waits: when the feed is full the frame is dropped for the viewer and counted.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Sequence

import cv2
import numpy as np
import zmq

from posestream.plugins.sinks.web.feed import TOPIC_FRAME, TOPIC_KEYPOINTS, pack, topic
from posestream.plugins.sinks.web.settings import web_settings
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
    def in_supervisor(cls, config: Settings, target: str) -> "WebHost":
        """The server half, started by the pipeline in the supervisor process before the stages."""
        from posestream.plugins.sinks.web.host import WebHost

        return WebHost(config, target)

    def __init__(self, settings: Settings, target: str = "", streams: Sequence[str] = ()) -> None:
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
        self._lock = threading.Lock()  # the socket is shared by the stage's thread and the encoder
        self._pending: dict[str, tuple[bytes, np.ndarray]] = {}  # stream -> newest (body, frame)
        self._wake = threading.Condition()
        self._stopping = False
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.XPUB)
        self._socket.sndhwm = FEED_HWM
        self._socket.linger = 0
        self._socket.connect(target)
        self._encoder = threading.Thread(target=self._encode_loop, name="web-jpeg", daemon=True)
        self._encoder.start()
        log.debug("web sink feeding %s (streams %s)", target, ", ".join(streams))

    def _read_subscriptions(self) -> None:
        """XPUB reports the server's (un)subscriptions: b"\\x01" + topic, b"\\x00" + topic."""
        with self._lock:
            while self._socket.poll(0, zmq.POLLIN):
                notice = self._socket.recv(zmq.NOBLOCK)
                (self._subscribed.add if notice[:1] == b"\x01" else self._subscribed.discard)(notice[1:])

    def _send(self, parts: list[bytes]) -> None:
        with self._lock:
            try:
                self._socket.send_multipart(parts, flags=zmq.NOBLOCK)
            except zmq.Again:
                self.dropped += 1
                return
            self.sent += 1

    def _encode_loop(self) -> None:
        """Encode and send the newest waiting picture of each stream until closed."""
        while True:
            with self._wake:
                while not self._pending and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
                stream, (body, frame) = self._pending.popitem()
            try:
                jpeg = encode_jpeg(frame, self.settings.max_width, self.settings.jpeg_quality)
            except StageError as exc:  # a picture the viewer does without; the keypoints still go
                log.warning("%s", exc)
                self._send([topic(TOPIC_KEYPOINTS, stream), body])
                continue
            self._send([topic(TOPIC_FRAME, stream), body, jpeg])
            self.encoded += 1

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
            with self._wake:  # the copy: other sinks may draw on `frame` after this one
                replaced = self._pending.get(result.stream)
                self._pending[result.stream] = (body, frame.copy())
                self._wake.notify()
            if replaced is None:
                return
            body = replaced[0]  # the encoder was still busy: that frame goes without its picture
        self._send([topic(TOPIC_KEYPOINTS, result.stream), body])

    def end_stream(self, stream: str, last_frame: int | None) -> None:
        """Nothing to flush: the server notices the end from its own stream counters."""
        del stream, last_frame

    def close(self) -> None:
        """Disconnect; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._encoder.join(10.0)
        self._socket.close(linger=0)
        self._context.term()
        log.info("web sink closed: %d frames sent (%d with a picture), %d dropped", self.sent,
                 self.encoded, self.dropped)

    def __enter__(self) -> "WebSink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

