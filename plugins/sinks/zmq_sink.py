"""ZMQ sink: publishes every finished frame as a schema-v1 msgpack message, topic = stream name.

The socket is an XPUB (a PUB that also reports subscriptions), for one reason: the slow-joiner
problem. A subscriber that connected before the pipeline started still needs a few milliseconds
after our bind to (re)connect and subscribe; anything published before that is lost. So the first
frame waits until a first subscription arrives, but never later than `zmq.wait_for_subscriber_s`
after the bind; model loading usually takes longer than that, so the wait is normally free.

Publishing never blocks the pipeline: each subscriber has its own queue of `zmq.hwm` messages and
when a slow subscriber's queue is full, ZMQ drops *that* subscriber's messages. The publisher cannot
see those per-subscriber drops (the client reports them as gaps in `frame`); `dropped` counts the
messages ZMQ refused outright.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import msgpack
import numpy as np
import zmq

from posestream.stream import curve_keys
from posestream.stream.client import check_endpoint, is_loopback
from posestream.stream.core.config import Config, check_range
from posestream.stream.core.errors import ConfigError, StageError
from posestream.stream.core.results import FrameResult

log = logging.getLogger(__name__)


def _plain(value: Any) -> Any:
    """msgpack fallback for numpy scalars that slipped into a message."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__} in a stream message")


class ZmqSink:
    """`ZmqSink(config, target)`: binds `target` (or `zmq.endpoint` when target is "")."""

    needs_pixels = False

    def __init__(self, config: Config, target: str = "") -> None:
        settings = config["zmq"]
        self.endpoint = check_endpoint(target or settings["endpoint"],
                                       "zmq sink target" if target else "zmq.endpoint")
        check_range("zmq.hwm", settings["hwm"], 1, 1_000_000)
        check_range("zmq.sndbuf", settings["sndbuf"], 0, 1 << 30)
        check_range("zmq.linger_ms", settings["linger_ms"], 0, 60_000)
        check_range("zmq.wait_for_subscriber_s", settings["wait_for_subscriber_s"], 0, 60)
        self._linger_ms = settings["linger_ms"]
        server_keys, allowed = self._load_curve(settings)
        if server_keys is None and not is_loopback(self.endpoint):
            log.warning("zmq sink binds %s, reachable from other machines, without CURVE: anyone "
                        "there can read the stream (set zmq.curve = true)", self.endpoint)
        self.sent = 0
        self.dropped = 0
        self._closed = False
        self._context = zmq.Context()
        self._auth = None
        self._socket = None
        try:
            if server_keys is not None:
                self._auth = curve_keys.start_authenticator(self._context, allowed)
            self._socket = self._context.socket(zmq.XPUB)
            self._socket.sndhwm = settings["hwm"]
            self._socket.linger = self._linger_ms
            if settings["sndbuf"]:
                self._socket.sndbuf = settings["sndbuf"]
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
        self._wait_until = time.monotonic() + settings["wait_for_subscriber_s"]
        self._subscribed = False
        log.info("zmq sink publishing on %s%s", self.bound_endpoint,
                 " (CURVE)" if server_keys is not None else "")

    @staticmethod
    def _load_curve(settings: dict[str, Any]) -> tuple[curve_keys.KeyPair | None, frozenset[bytes]]:
        if not settings["curve"]:
            return None, frozenset()
        for key in ("server_secret_key", "allowed_clients"):
            if not settings[key]:
                raise ConfigError(f"zmq.curve = true needs zmq.{key} (make keys with "
                                  "`posestream keys generate`)")
        return (curve_keys.load_key_pair(settings["server_secret_key"]),
                curve_keys.load_allowed_keys(settings["allowed_clients"]))

    def _read_subscriptions(self, timeout_ms: int = 0) -> None:
        """Consume XPUB subscription notices (they would otherwise pile up unread)."""
        while self._socket.poll(timeout_ms, zmq.POLLIN):
            notice = self._socket.recv(zmq.NOBLOCK)
            if notice[:1] == b"\x01":
                self._subscribed = True
                log.debug("zmq sink: subscription to %r", notice[1:])
            timeout_ms = 0

    def write(self, result: FrameResult, frame: np.ndarray | None = None) -> None:
        """Publish `result` now; never waits for subscribers (except the bounded slow-joiner wait)."""
        if self._closed:
            raise StageError(f"zmq sink {self.endpoint}: write after close")
        self._read_subscriptions()
        while not self._subscribed:
            remaining = self._wait_until - time.monotonic()
            if remaining <= 0:
                break
            self._read_subscriptions(max(1, int(remaining * 1000)))
        message = result.to_message(publish_ts=time.time())
        payload = msgpack.packb(message, default=_plain)
        try:
            self._socket.send_multipart([result.stream.encode("utf-8"), payload], flags=zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1
            return
        except zmq.ZMQError as exc:
            raise StageError(f"zmq sink {self.endpoint}: send failed: {exc}") from None
        self.sent += 1

    def end_stream(self, stream: str, last_frame: int | None) -> None:
        """Nothing to do when a stream ends (the Sink contract asks every sink)."""
        del stream, last_frame

    def close(self) -> None:
        """Stop publishing; queued messages get up to `zmq.linger_ms` to leave. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        # Socket before authenticator: a CURVE socket without a ZAP handler would admit any client.
        if self._socket is not None:
            self._socket.close(linger=self._linger_ms)
        if self._auth is not None:
            self._auth.stop()
        self._context.term()
        log.info("zmq sink %s closed: %d messages sent, %d refused", self.endpoint, self.sent,
                 self.dropped)

    def __enter__(self) -> "ZmqSink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
