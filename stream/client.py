"""Subscriber side of the ZMQ keypoint stream.

`Subscriber` yields decoded, schema-checked frame messages (`core.wire`, docs/zmq.md) as plain
dicts. ZMQ reconnects by itself when the publisher restarts, so the client only has to notice the
restart (the frame numbers start again) and not mistake it for a gap. A message that does not
decode or does not match the schema is skipped with a warning: one bad publisher must not kill a
consumer.

The control messages of schema v2 let it tell loss from quiet: an `end` message gives a stream's
last frame number, so frames lost at the tail are counted like any other gap; heartbeats arrive
every `interval_s` even when no frame flows, so when `dead_after` intervals pass without one the
publisher is reported dead (a warning, `stats.publisher_dead`). v1 publishers send neither; their
frames are still read.

`latest=True` keeps only the newest frame per stream. ZMQ_CONFLATE cannot do this: it does not
support multipart messages (ours are [topic, payload]), so we drain the socket's queue ourselves
and decode only the newest message per stream.
"""
from __future__ import annotations

import ipaddress
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import zmq

from posestream.stream.curve_keys import ClientCurve, configure_client
from posestream.stream.core.errors import ConfigError, InputError
from posestream.stream.core.wire import CONTROL_PREFIX, decode, message_type, to_poses

__all__ = ["Gap", "Subscriber", "SubscriberStats", "check_endpoint", "is_loopback", "to_poses",
           "warn_if_exposed"]

log = logging.getLogger(__name__)

SCHEMES = ("tcp", "ipc")


def check_endpoint(endpoint: str, key: str = "zmq.endpoint") -> str:
    """`endpoint` if it is `tcp://HOST:PORT` (PORT may be `*` for any free port) or `ipc://PATH`;
    else a `ConfigError` naming `key`. Publisher and subscriber share this one grammar."""
    scheme, sep, rest = endpoint.partition("://")
    ok = bool(sep) and scheme in SCHEMES and bool(rest)
    if ok and scheme == "tcp":
        host, colon, port = rest.rpartition(":")
        ok = bool(host) and bool(colon) and (port == "*" or (port.isdigit() and int(port) <= 65535))
    if not ok:
        raise ConfigError(f"{key} = {endpoint!r} is not a ZMQ endpoint "
                          "(expected tcp://HOST:PORT, tcp://HOST:* or ipc://PATH)")
    return endpoint


def is_loopback(endpoint: str) -> bool:
    """True when only this machine can reach `endpoint` (ipc://, or tcp on a loopback address)."""
    scheme, _, rest = endpoint.partition("://")
    if scheme != "tcp":
        return True
    host = rest.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # "*", an interface name or a host name: reachable from elsewhere
        return False


def warn_if_exposed(endpoint: str, curve: bool, what: str, switch: str = "zmq.curve = true") -> None:
    """Warn when `endpoint` is reachable from other machines without CURVE: the one place that
    says so, for every publisher (zmq sink, the fleet's camera streams and aggregated stream)."""
    if not curve and not is_loopback(endpoint):
        log.warning("%s binds %s, reachable from other machines, without CURVE: anyone there can "
                    "read the stream (set %s)", what, endpoint, switch)


@dataclass(frozen=True)
class Gap:
    """Frames of `stream` numbered `first`..`last` (inclusive) never arrived. `tail`: they were the
    stream's last frames (known from its end-of-stream message)."""

    stream: str
    first: int
    last: int
    tail: bool = False

    @property
    def missing(self) -> int:
        return self.last - self.first + 1


_END_KEY = b"\x00end"
_SMALL_PAYLOAD = 256  # end messages are ~100 bytes; frames with persons are larger


def _pending_key(parts: list[bytes]) -> bytes:
    """Latest mode keeps one message per key: the stream's topic for frames, and a key of its own
    for the stream's end message, so the end never displaces that stream's last frame."""
    topic = parts[0] if parts else b""
    if topic.startswith(CONTROL_PREFIX) or len(parts) < 2 or len(parts[1]) > _SMALL_PAYLOAD:
        return topic
    try:
        message = decode(topic, parts[1])
    except InputError:
        return topic
    return topic + _END_KEY if message_type(message) == "end" else topic


@dataclass
class SubscriberStats:
    received: int = 0       # valid frame messages handed to the caller
    malformed: int = 0      # messages skipped because they did not decode or validate
    missing: int = 0        # frames lost in gaps, tail included (publisher queue full, network, drops)
    tail_missing: int = 0   # of those, frames lost after the last one that arrived (end-of-stream)
    skipped: int = 0        # older frames passed over on purpose in `latest` mode
    restarts: int = 0       # times a stream's frame numbers started again (publisher restart)
    gaps: list[Gap] = field(default_factory=list)
    ended: dict[str, int | None] = field(default_factory=dict)  # stream -> its last frame number
    heartbeats: int = 0     # publisher heartbeats received
    statuses: int = 0       # fleet status messages received
    publisher: str | None = None  # id of the publisher whose heartbeats arrive (None: v1 or none yet)
    publisher_dead: bool = False  # heartbeats stopped for `dead_after` intervals (and not resumed)
    dead_events: int = 0    # times the publisher was found dead


class Subscriber:
    """`Subscriber(url, topics=..., conflate=False, curve=...)`: connect to a posestream publisher.

    topics: stream names to receive (exact names; empty = every stream). conflate (alias latest):
    hand out only the newest frame per stream. curve: a `ClientCurve` or a pair of paths
    (client .key_secret, server .key). rcvhwm (messages) and rcvbuf (kernel bytes, 0 = OS default)
    bound what queues up locally while the caller is busy. `on_gap(gap)` is called for every gap,
    tail gaps included. control: also hand out the `end`, `heartbeat` and `status` messages (tell
    them apart by `message["type"]`); by default only frames come out. dead_after: heartbeat
    intervals without a heartbeat after which the publisher counts as dead.
    Iterate to get messages forever, or call `receive(timeout)`. Close it (or use `with`).
    """

    def __init__(self, url: str, topics: Iterable[str] = (), conflate: bool = False,
                 curve: ClientCurve | tuple[str | Path, str | Path] | None = None, *,
                 rcvhwm: int = 1000, rcvbuf: int = 0,
                 on_gap: Callable[[Gap], None] | None = None, control: bool = False,
                 dead_after: float = 3.0) -> None:
        self.url = check_endpoint(url, "subscriber URL")
        if not (isinstance(dead_after, (int, float)) and dead_after >= 1):
            raise ConfigError(f"dead_after = {dead_after!r} must be a number >= 1 (heartbeat "
                              "intervals)")
        self.topics = frozenset([topics] if isinstance(topics, str) else topics)
        self.latest = conflate
        self.control = control
        self.dead_after = float(dead_after)
        self.stats = SubscriberStats()
        self._on_gap = on_gap
        self._last_frame: dict[str, int] = {}
        self._epochs: dict[str, int] = {}  # stream -> epoch of its last frame (fleet publishers)
        self._announced: set[str] = set()  # streams named in heartbeats
        self._alive_until: float | None = None  # monotonic; None until a first heartbeat
        self._pending: dict[bytes, list[bytes]] = {}  # latest mode: newest raw message per topic
        if curve is not None and not isinstance(curve, ClientCurve):
            curve = ClientCurve.from_files(*curve)
        self._closed = False
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.SUB)
        try:
            self._socket.linger = 0
            self._socket.rcvhwm = rcvhwm
            if rcvbuf:
                self._socket.rcvbuf = rcvbuf
            # Retries back off to at most 0.5 s: a subscriber started before the pipeline must be
            # connected within the sink's slow-joiner wait (zmq.wait_for_subscriber_s, 1 s after
            # its bind), or it misses the first frames.
            self._socket.reconnect_ivl = 100
            self._socket.reconnect_ivl_max = 500
            # TCP keepalive (answered by the kernel) notices a publisher whose host vanished. Not ZMTP
            # heartbeats: with a full receive queue they kill healthy connections and can abort
            # libzmq <= 4.3.5 ("Assertion failed: _input_stopped", zeromq/libzmq#3937).
            self._socket.tcp_keepalive = 1
            self._socket.tcp_keepalive_idle = 10
            self._socket.tcp_keepalive_intvl = 5
            if curve is not None:
                configure_client(self._socket, curve)
            if self.topics:
                for topic in sorted(self.topics):
                    self._socket.subscribe(topic.encode("utf-8"))
                self._socket.subscribe(CONTROL_PREFIX)  # heartbeats and fleet status
            else:
                self._socket.subscribe(b"")
            self._socket.connect(self.url)
        except zmq.ZMQError as exc:
            self.close()
            raise InputError(f"cannot connect to {self.url}: {exc}") from None
        except BaseException:
            self.close()
            raise

    def _wanted(self, topic: bytes) -> bool:
        # ZMQ subscriptions match prefixes ("cam1" also matches "cam10"); names must match exactly.
        return (not self.topics or topic.startswith(CONTROL_PREFIX)
                or topic.decode("utf-8", "replace") in self.topics)

    def _wanted_stream(self, stream: str) -> bool:
        return not self.topics or stream in self.topics

    def _recv_raw(self, timeout_ms: int | None) -> list[bytes] | None:
        if not self._socket.poll(timeout_ms if timeout_ms is not None else -1, zmq.POLLIN):
            return None
        return self._socket.recv_multipart(zmq.NOBLOCK)

    def _next_raw(self, timeout_ms: int | None) -> list[bytes] | None:
        if not self.latest:
            return self._recv_raw(timeout_ms)
        if not self._pending:
            parts = self._recv_raw(timeout_ms)
            if parts is None:
                return None
            self._pending[_pending_key(parts)] = parts
        while True:  # drain what has arrived; keep the newest message of each topic
            parts = self._recv_raw(0)
            if parts is None:
                break
            topic = _pending_key(parts)
            if topic in self._pending:
                if not topic.startswith(CONTROL_PREFIX):
                    self.stats.skipped += 1
                del self._pending[topic]  # re-insert last: streams are served oldest-updated first
            self._pending[topic] = parts
        return self._pending.pop(next(iter(self._pending)))

    def _add_gap(self, gap: Gap) -> None:
        self.stats.missing += gap.missing
        if gap.tail:
            self.stats.tail_missing += gap.missing
        self.stats.gaps.append(gap)
        if self._on_gap is not None:
            self._on_gap(gap)

    def _track(self, message: dict[str, Any]) -> None:
        stream, frame = message["stream"], message["frame"]
        last = self._last_frame.get(stream)
        self._last_frame[stream] = frame
        if stream in self.stats.ended:  # a restarted publisher serves the stream again
            del self.stats.ended[stream]
            log.info("stream %r runs again (frame %d) after its end", stream, frame)
        epoch, last_epoch = message.get("epoch"), self._epochs.get(stream)
        if epoch is not None:
            self._epochs[stream] = epoch
        if last is None:
            return
        if epoch is not None and last_epoch is not None and epoch != last_epoch:
            # A new incarnation (a fleet camera restarted or moved): its numbers start again.
            self.stats.restarts += 1
            log.info("stream %r restarted (epoch %d, frame %d)", stream, epoch, frame)
        elif frame <= last:
            self.stats.restarts += 1
            log.info("stream %r restarted at frame %d (last seen %d)", stream, frame, last)
        elif frame > last + 1 and not self.latest:
            gap = Gap(stream, last + 1, frame - 1)
            log.warning("stream %r: %d frame(s) missing (%d..%d)", stream, gap.missing, gap.first,
                        gap.last)
            self._add_gap(gap)

    def _end(self, stream: str, last_frame: int | None) -> None:
        """`stream` ended with `last_frame`: count what never arrived after the last frame seen."""
        if stream in self.stats.ended or not self._wanted_stream(stream):
            return
        self.stats.ended[stream] = last_frame
        seen = self._last_frame.get(stream)
        if last_frame is None or seen is None:
            log.info("stream %r ended (last frame %s; %s)", stream, last_frame,
                     "none of its frames arrived here" if seen is None else f"last seen {seen}")
        elif seen < last_frame and not self.latest:
            gap = Gap(stream, seen + 1, last_frame, tail=True)
            log.warning("stream %r ended at frame %d: its last %d frame(s) never arrived (%d..%d)",
                        stream, last_frame, gap.missing, gap.first, gap.last)
            self._add_gap(gap)
        else:
            log.info("stream %r ended at frame %d", stream, last_frame)

    def _heartbeat(self, message: dict[str, Any]) -> None:
        stats = self.stats
        stats.heartbeats += 1
        if stats.publisher is not None and message["publisher"] != stats.publisher:
            log.info("publisher %s replaced by %s (restart)", stats.publisher, message["publisher"])
        stats.publisher = message["publisher"]
        if stats.publisher_dead:
            stats.publisher_dead = False
            log.warning("publisher %s on %s is alive again", stats.publisher, self.url)
        self._alive_until = time.monotonic() + self.dead_after * message["interval_s"]
        self._announced.update(s for s in message["streams"] if self._wanted_stream(s))
        for stream, last_frame in message["ended"].items():  # repeats an end message we lost
            self._end(stream, last_frame)

    def _check_alive(self) -> None:
        if self._alive_until is None or self.stats.publisher_dead:
            return
        if time.monotonic() > self._alive_until:
            self.stats.publisher_dead = True
            self.stats.dead_events += 1
            log.warning("publisher %s on %s is dead: no heartbeat for %g intervals",
                        self.stats.publisher, self.url, self.dead_after)

    @property
    def all_ended(self) -> bool:
        """True once at least one stream was seen and every stream seen (through frames, end
        messages or heartbeats) has ended."""
        seen = set(self._last_frame) | set(self.stats.ended) | self._announced
        return bool(seen) and seen <= set(self.stats.ended)

    def receive(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next valid frame (with `control=True`: or control message), or None when nothing
        arrived within `timeout` seconds (None = wait forever). Malformed messages are logged and
        skipped. Waiting also watches the publisher's heartbeats."""
        if self._closed:
            raise InputError(f"subscriber {self.url} is closed")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._check_alive()
            now = time.monotonic()
            wake = deadline
            if self._alive_until is not None and not self.stats.publisher_dead:
                wake = self._alive_until if wake is None else min(wake, self._alive_until)
            timeout_ms = None if wake is None else max(0, math.ceil((wake - now) * 1000))
            parts = self._next_raw(timeout_ms)
            if parts is None:
                if deadline is not None and time.monotonic() >= deadline:
                    self._check_alive()
                    return None
                continue
            if len(parts) != 2 or not self._wanted(parts[0]):
                if len(parts) != 2:
                    self.stats.malformed += 1
                    log.warning("skipped a message of %d part(s) from %s (expected [topic, "
                                "payload])", len(parts), self.url)
                continue
            try:
                message = decode(parts[0], parts[1])
            except InputError as exc:
                self.stats.malformed += 1
                log.warning("skipped a malformed message on topic %r: %s", parts[0][:40], exc)
                continue
            kind = message_type(message)
            if kind == "frame":
                self._track(message)
                self.stats.received += 1
                return message
            if kind == "end":
                self._end(message["stream"], message["last_frame"])
            elif kind == "heartbeat":
                self._heartbeat(message)
            else:
                self.stats.statuses += 1
            if self.control:
                return message

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while not self._closed:
            message = self.receive()
            if message is not None:
                yield message

    def close(self) -> None:
        """Disconnect. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._socket.close(linger=0)
        self._context.term()

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
