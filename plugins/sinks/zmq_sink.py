"""ZMQ sink: publishes every finished frame as a schema-v2 msgpack message, topic = stream name,
plus an end-of-stream message per stream and a heartbeat every `zmq.heartbeat_s` (`core.wire`).

A ZMQ socket must be used by one thread at a time, and heartbeats must go out also while no frame
flows (the sinks stage then sits waiting for input). So the publishing socket belongs to one
sink-owned thread. The sink's `write`/`end_stream` encode the message in the caller's thread and
hand it over an inproc PAIR pipe without waiting; the thread forwards what comes down the pipe,
reads subscription notices and sends heartbeats when they are due. The XPUB socket is bound in
`__init__` (so a bad endpoint is an error right there) and handed to the thread when it starts;
the caller's thread touches it again only after the thread has ended.

The socket is an XPUB (a PUB that also reports subscriptions), for the slow-joiner problem: a
subscriber that connected before the pipeline started still needs a few milliseconds after our bind
to (re)connect and subscribe; anything published before that is lost. So the thread holds messages
back until a first subscription arrives, but never later than `zmq.wait_for_subscriber_s` after the
bind; model loading usually takes longer than that, so normally nothing is held.

Publishing never blocks the pipeline: each subscriber has its own queue of `zmq.hwm` messages and
when a slow subscriber's queue is full, ZMQ drops *that* subscriber's messages. The publisher cannot
see those per-subscriber drops (the client reports them as gaps in `frame`, and at the tail from the
end-of-stream message); `dropped` counts the messages ZMQ or the hand-over pipe refused outright.
"""
from __future__ import annotations

import logging
import os
import socket as _socket
import threading
import time
import uuid
from typing import Any, Sequence

import msgpack
import numpy as np
import zmq

from posestream.stream import curve_keys
from posestream.stream.client import check_endpoint, is_loopback
from posestream.stream.core import wire
from posestream.stream.core.config import Config, check_range
from posestream.stream.core.errors import ConfigError, StageError
from posestream.stream.core.results import FrameResult

log = logging.getLogger(__name__)

_PIPE_HWM = 100_000  # messages waiting for the publishing thread; it never waits on the network
_FRAME, _END, _STOP = b"f", b"e", b"q"


class ZmqSink:
    """`ZmqSink(config, target, streams=...)`: binds `target` (or `zmq.endpoint` when target is "");
    `streams` are announced in heartbeats from the start (streams seen later are added)."""

    needs_pixels = False

    def __init__(self, config: Config, target: str = "", *, streams: Sequence[str] = ()) -> None:
        settings = config["zmq"]
        self.endpoint = check_endpoint(target or settings["endpoint"],
                                       "zmq sink target" if target else "zmq.endpoint")
        check_range("zmq.hwm", settings["hwm"], 1, 1_000_000)
        check_range("zmq.sndbuf", settings["sndbuf"], 0, 1 << 30)
        check_range("zmq.linger_ms", settings["linger_ms"], 0, 60_000)
        check_range("zmq.wait_for_subscriber_s", settings["wait_for_subscriber_s"], 0, 60)
        check_range("zmq.heartbeat_s", settings["heartbeat_s"], 0.01, 3600)
        self._linger_ms = settings["linger_ms"]
        self.heartbeat_s: float = float(settings["heartbeat_s"])
        server_keys, allowed = self._load_curve(settings)
        if server_keys is None and not is_loopback(self.endpoint):
            log.warning("zmq sink binds %s, reachable from other machines, without CURVE: anyone "
                        "there can read the stream (set zmq.curve = true)", self.endpoint)
        self.publisher_id = f"{_socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.started = time.time()
        self.sent = 0  # messages handed to ZMQ, frames and end-of-stream (heartbeats not counted)
        self.heartbeats = 0  # heartbeats sent; their `seq` also counts those ZMQ refused
        self._beat_seq = 0
        self._refused = 0  # by ZMQ (publishing thread)
        self._pipe_refused = 0  # by the hand-over pipe (caller's thread)
        self._streams: dict[str, None] = dict.fromkeys(map(wire.check_stream_name, streams))
        self._ended: dict[str, int | None] = {}
        self._error: BaseException | None = None
        self._closed = False
        self._context = zmq.Context()
        self._auth = None
        self._socket: zmq.Socket | None = None
        self._pipe: zmq.Socket | None = None
        self._thread: threading.Thread | None = None
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
        pipe_name = f"inproc://zmq-sink-{uuid.uuid4().hex}"
        self._pipe = self._context.socket(zmq.PAIR)
        self._pipe.sndhwm = _PIPE_HWM
        self._pipe.linger = 0
        self._pipe.bind(pipe_name)
        self._thread = threading.Thread(target=self._publish_loop, args=(pipe_name,),
                                        name=f"zmq-sink {self.bound_endpoint}", daemon=True)
        self._thread.start()
        log.info("zmq sink publishing on %s%s, heartbeat every %g s", self.bound_endpoint,
                 " (CURVE)" if server_keys is not None else "", self.heartbeat_s)

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

    @property
    def dropped(self) -> int:
        """Messages refused outright (not the per-subscriber drops, which only subscribers see)."""
        return self._refused + self._pipe_refused

    # -- caller's thread ------------------------------------------------------------------------

    def _hand_over(self, kind: bytes, parts: list[bytes]) -> None:
        if self._closed:
            raise StageError(f"zmq sink {self.endpoint}: write after close")
        if self._error is not None:
            raise StageError(f"zmq sink {self.endpoint}: publishing failed: {self._error}")
        try:
            self._pipe.send_multipart([kind, *parts], flags=zmq.NOBLOCK)
        except zmq.Again:
            self._pipe_refused += 1

    def write(self, result: FrameResult, frame: np.ndarray | None = None) -> None:
        """Publish `result`; returns at once (the publishing thread sends it)."""
        self._hand_over(_FRAME, wire.encode(wire.frame_message(result, publish_ts=time.time())))

    def end_stream(self, stream: str, last_frame: int | None) -> None:
        """Announce that `stream` ended with frame `last_frame` (None: it had no frame). Also
        repeated in every later heartbeat, so a subscriber that lost this message still learns it."""
        message = wire.end_message(wire.check_stream_name(stream), last_frame, time.time(),
                                   self.publisher_id)
        self._hand_over(_END, wire.encode(message))

    # -- publishing thread ----------------------------------------------------------------------

    def _publish_loop(self, pipe_name: str) -> None:
        pipe = self._context.socket(zmq.PAIR)
        pipe.rcvhwm = _PIPE_HWM
        pipe.linger = 0
        try:
            pipe.connect(pipe_name)
            self._serve(pipe)
        except BaseException as exc:  # reported to the caller's thread by the next write
            self._error = exc
            log.error("zmq sink %s: publishing thread failed: %s", self.endpoint, exc)
        finally:
            pipe.close(linger=0)

    def _serve(self, pipe: zmq.Socket) -> None:
        poller = zmq.Poller()
        poller.register(pipe, zmq.POLLIN)
        poller.register(self._socket, zmq.POLLIN)
        subscribed = False
        held: list[list[bytes]] = []  # before the first subscription (slow joiner), in order
        next_beat = time.monotonic()
        stopping = False
        while True:
            now = time.monotonic()
            if now >= next_beat:
                self._send_heartbeat()
                next_beat = now + self.heartbeat_s
            waiting = not subscribed and now < self._wait_until
            if held and not waiting:
                for parts in held:
                    self._send(parts)
                held.clear()
            if stopping and not held:
                return
            until = next_beat if not waiting else min(next_beat, self._wait_until)
            timeout_ms = max(0, int((until - time.monotonic()) * 1000) + 1)
            events = dict(poller.poll(timeout_ms))
            if self._socket in events:
                subscribed |= self._read_subscriptions()
            if pipe not in events:
                continue
            while not stopping:
                try:
                    kind, *parts = pipe.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if kind == _STOP:
                    stopping = True
                    break
                self._note(kind, parts)
                if subscribed or time.monotonic() >= self._wait_until:
                    self._send(parts)
                else:
                    held.append(parts)

    def _note(self, kind: bytes, parts: list[bytes]) -> None:
        """Keep the heartbeat's list of served and ended streams current."""
        stream = parts[0].decode("utf-8")
        self._streams.setdefault(stream)
        if kind == _END:
            self._ended[stream] = msgpack.unpackb(parts[1])["last_frame"]

    def _read_subscriptions(self) -> bool:
        """Consume XPUB subscription notices; True when one was a subscription."""
        subscribed = False
        while self._socket.poll(0, zmq.POLLIN):
            notice = self._socket.recv(zmq.NOBLOCK)
            if notice[:1] == b"\x01":
                subscribed = True
                log.debug("zmq sink: subscription to %r", notice[1:])
        return subscribed

    def _send(self, parts: list[bytes]) -> bool:
        try:
            self._socket.send_multipart(parts, flags=zmq.NOBLOCK)
        except zmq.Again:
            self._refused += 1
            return False
        self.sent += 1
        return True

    def _send_heartbeat(self) -> None:
        message = wire.heartbeat_message(self.publisher_id, self.started, self._beat_seq,
                                         time.time(), self.heartbeat_s, self._streams, self._ended)
        self._beat_seq += 1
        try:
            self._socket.send_multipart(wire.encode(message), flags=zmq.NOBLOCK)
        except zmq.Again:
            return
        self.heartbeats += 1

    def close(self) -> None:
        """Stop publishing; queued messages get up to `zmq.linger_ms` to leave. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            if self._thread.is_alive():
                self._pipe.sndtimeo = 5000  # the thread drains the pipe; it is full only briefly
                try:
                    self._pipe.send_multipart([_STOP])  # after every message handed over before it
                except zmq.Again:
                    log.error("zmq sink %s: publishing thread does not answer", self.endpoint)
            # Held messages wait at most until the slow-joiner deadline, then leave.
            self._thread.join(max(0.0, self._wait_until - time.monotonic()) + 10.0)
        if self._pipe is not None:
            self._pipe.close(linger=0)
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
