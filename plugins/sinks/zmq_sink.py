"""ZMQ sink: publishes every finished frame as a schema-v2 msgpack message, topic = stream name,
plus an end-of-stream message per stream and a heartbeat every `zmq.heartbeat_s` (`core.wire`).

Heartbeats must go out also while no frame flows (the sinks stage then sits waiting for input), so a
small sink-owned thread sends them. ZMQ sockets are not thread-safe: libzmq allows a socket to pass
between threads only across a full memory barrier. So every use of the socket, by the caller's
`write`/`end_stream` and by the heartbeat thread, happens inside one `threading.Lock` (acquire and
release are such barriers), and each holds it only for a non-blocking send or poll. Frames are sent
straight from the caller's thread: an earlier version fed a socket-owning thread through an inproc
pipe, which cost the latency of a hop and of the GIL hand-over (publish->receive p50 0.64 -> 0.76 ms
at 100 msg/s, queueing under load; see docs/zmq.md).

The socket is an XPUB (a PUB that also reports subscriptions), for one reason: the slow-joiner
problem. A subscriber that connected before the pipeline started still needs a few milliseconds
after our bind to (re)connect and subscribe; anything published before that is lost. So the first
frame waits until a first subscription arrives, but never later than `zmq.wait_for_subscriber_s`
after the bind; model loading usually takes longer than that, so the wait is normally free.

Publishing never blocks the pipeline: each subscriber has its own queue of `zmq.hwm` messages and
when a slow subscriber's queue is full, ZMQ drops *that* subscriber's messages. The publisher cannot
see those per-subscriber drops (the client reports them as gaps in `frame`, and at the tail from the
end-of-stream message); `dropped` counts the messages ZMQ refused outright.
"""
from __future__ import annotations

import logging
import os
import socket as _socket
import threading
import time
import uuid
from typing import Sequence

import numpy as np
import zmq

from posestream.stream import curve_keys
from posestream.stream.client import check_endpoint, warn_if_exposed
from posestream.stream.core import wire
from posestream.stream.core.contracts import Sink
from posestream.stream.core.settings import Settings
from posestream.stream.core.errors import ConfigError, StageError
from posestream.stream.core.results import FrameResult

log = logging.getLogger(__name__)

_WAIT_SLICE_MS = 50  # the slow-joiner wait polls in slices, so heartbeats are not held up by it


class ZmqSink(Sink):
    """`ZmqSink(settings, target, streams)`: binds `target` (or `zmq.endpoint` when target is "");
    `streams` are announced in heartbeats from the start (streams seen later are added)."""

    needs_pixels = False

    def __init__(self, settings: Settings, target: str = "", streams: Sequence[str] = ()) -> None:
        table = settings.zmq
        self.endpoint = check_endpoint(target or table.endpoint,
                                       "zmq sink target" if target else "zmq.endpoint")
        self._linger_ms = table.linger_ms
        self.heartbeat_s: float = float(table.heartbeat_s)
        self.epoch: int | None = table.epoch or None
        server_keys, allowed = curve_keys.server_keys(table)
        warn_if_exposed(self.endpoint, server_keys is not None, "zmq sink")
        self.publisher_id = f"{_socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.started = time.time()
        self.sent = 0  # frame and end-of-stream messages handed to ZMQ (heartbeats not counted)
        self.dropped = 0  # messages ZMQ refused outright
        self.heartbeats = 0  # heartbeats sent; their `seq` also counts any ZMQ refused
        self._beat_seq = 0
        # Everything below `_lock` is used by the caller's thread and the heartbeat thread.
        self._lock = threading.Lock()
        self._streams: dict[str, None] = dict.fromkeys(map(wire.check_stream_name, streams))
        self._ended: dict[str, int | None] = {}
        self._closed = False
        self._stop = threading.Event()
        self._context = zmq.Context()
        self._auth = None
        self._socket: zmq.Socket | None = None
        self._thread: threading.Thread | None = None
        try:
            if server_keys is not None:
                self._auth = curve_keys.start_authenticator(self._context, allowed)
            self._socket = self._context.socket(zmq.XPUB)
            self._socket.sndhwm = table.hwm
            self._socket.linger = self._linger_ms
            if table.sndbuf:
                self._socket.sndbuf = table.sndbuf
            if server_keys is not None:
                curve_keys.configure_server(self._socket, server_keys)
            self._socket.bind(self.endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise ConfigError(f"zmq sink cannot bind {self.endpoint}: {exc}") from None
        except BaseException:
            self.close()
            raise
        self.bound_endpoint: str = self._socket.last_endpoint.decode()
        self._wait_until = time.monotonic() + table.wait_for_subscriber_s
        self._subscribed = False
        self._thread = threading.Thread(target=self._beat_loop, daemon=True,
                                        name=f"zmq-sink heartbeat {self.bound_endpoint}")
        self._thread.start()
        log.info("zmq sink publishing on %s%s, heartbeat every %g s", self.bound_endpoint,
                 " (CURVE)" if server_keys is not None else "", self.heartbeat_s)

    def _read_subscriptions(self, timeout_ms: int = 0) -> None:
        """Consume XPUB subscription notices (they would otherwise pile up unread). Lock held."""
        while self._socket.poll(timeout_ms, zmq.POLLIN):
            notice = self._socket.recv(zmq.NOBLOCK)
            if notice[:1] == b"\x01":
                self._subscribed = True
                log.debug("zmq sink: subscription to %r", notice[1:])
            timeout_ms = 0

    def _wait_for_subscriber(self) -> None:
        """The bounded slow-joiner wait, in slices so the heartbeat thread gets the socket too."""
        while not self._subscribed:
            remaining = self._wait_until - time.monotonic()
            if remaining <= 0:
                return
            with self._lock:
                self._read_subscriptions(max(1, min(_WAIT_SLICE_MS, int(remaining * 1000))))

    def _publish(self, parts: list[bytes]) -> None:
        """Send now, never waiting for subscribers. Lock held."""
        try:
            self._socket.send_multipart(parts, flags=zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1
            return
        except zmq.ZMQError as exc:
            raise StageError(f"zmq sink {self.endpoint}: send failed: {exc}") from None
        self.sent += 1

    def _check_open(self) -> None:
        if self._closed:
            raise StageError(f"zmq sink {self.endpoint}: write after close")

    def write(self, result: FrameResult, frame: np.ndarray | None = None) -> None:
        """Publish `result` now; never waits for subscribers (except the bounded slow-joiner wait)."""
        self._check_open()
        self._wait_for_subscriber()
        parts = wire.encode(wire.frame_message(result, publish_ts=time.time(), epoch=self.epoch))
        with self._lock:
            self._read_subscriptions()
            self._streams.setdefault(result.stream)
            self._publish(parts)

    def end_stream(self, stream: str, last_frame: int | None) -> None:
        """Announce that `stream` ended with frame `last_frame` (None: it had no frame). Every later
        heartbeat repeats it, so a subscriber that lost this message still learns it."""
        self._check_open()
        self._wait_for_subscriber()
        message = wire.end_message(wire.check_stream_name(stream), last_frame, time.time(),
                                   self.publisher_id)
        with self._lock:
            self._streams.setdefault(stream)
            self._ended[stream] = last_frame
            self._publish(wire.encode(message))

    def _beat_loop(self) -> None:
        """Heartbeat thread: one heartbeat now and every `heartbeat_s` until close."""
        while True:
            with self._lock:
                message = wire.heartbeat_message(self.publisher_id, self.started, self._beat_seq,
                                                 time.time(), self.heartbeat_s, self._streams,
                                                 self._ended)
                self._beat_seq += 1
                try:
                    self._read_subscriptions()
                    self._socket.send_multipart(wire.encode(message), flags=zmq.NOBLOCK)
                    self.heartbeats += 1
                except zmq.Again:
                    pass
                except zmq.ZMQError as exc:  # the socket is gone or broken: nothing left to beat
                    log.error("zmq sink %s: heartbeat failed: %s", self.endpoint, exc)
                    return
            if self._stop.wait(self.heartbeat_s):
                return

    def close(self) -> None:
        """Stop publishing; queued messages get up to `zmq.linger_ms` to leave. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        # Socket before authenticator: a CURVE socket without a ZAP handler would admit any client.
        if self._socket is not None:
            self._socket.close(linger=self._linger_ms)
        if self._auth is not None:
            self._auth.stop()
        self._context.term()
        log.info("zmq sink %s closed: %d messages sent, %d refused, %d heartbeats", self.endpoint,
                 self.sent, self.dropped, self.heartbeats)

    def __enter__(self) -> "ZmqSink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
