"""Subscriber side of the ZMQ keypoint stream.

`Subscriber` yields decoded, schema-checked messages (DESIGN.md section 6) as plain dicts. ZMQ
reconnects by itself when the publisher restarts, so the client only has to notice the restart
(the frame numbers start again) and not mistake it for a gap. A message that does not decode or
does not match the schema is skipped with a warning: one bad publisher must not kill a consumer.

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

import msgpack
import zmq

from posestream.stream.curve_keys import ClientCurve, configure_client
from posestream.stream.core.errors import ConfigError, InputError
from posestream.stream.core.keypoints import FORMATS
from posestream.stream.core.results import SCHEMA_VERSION, Poses

log = logging.getLogger(__name__)

_NUMBER = (int, float)
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


def _fail(problem: str) -> None:
    raise InputError(f"stream message: {problem}")


def _is_number(value: Any) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool) and math.isfinite(value)


def _check_field(message: dict, key: str, check: Callable[[Any], bool], want: str) -> None:
    if key not in message:
        _fail(f"missing field '{key}'")
    if not check(message[key]):
        _fail(f"field '{key}' must be {want}, got {message[key]!r:.60}")


def _check_person(person: Any, index: int, num_keypoints: int) -> None:
    where = f"persons[{index}]"
    if not isinstance(person, dict):
        _fail(f"{where} must be a map, got {type(person).__name__}")
    for key in ("id", "box", "box_score", "score", "keypoints"):
        if key not in person:
            _fail(f"{where} has no '{key}'")
    pid = person["id"]
    if pid is not None and (not isinstance(pid, int) or isinstance(pid, bool) or pid < 0):
        _fail(f"{where}.id must be null or a non-negative integer, got {pid!r}")
    box = person["box"]
    if not (isinstance(box, list) and len(box) == 4 and all(map(_is_number, box))):
        _fail(f"{where}.box must be [x, y, w, h], got {box!r:.60}")
    for key in ("box_score", "score"):
        if not _is_number(person[key]):
            _fail(f"{where}.{key} must be a number, got {person[key]!r}")
    keypoints = person["keypoints"]
    if not isinstance(keypoints, list) or len(keypoints) != num_keypoints:
        _fail(f"{where}.keypoints must hold {num_keypoints} [x, y, score] triplets")
    for kp in keypoints:
        if not (isinstance(kp, list) and len(kp) == 3 and all(map(_is_number, kp))):
            _fail(f"{where}.keypoints has an entry that is not [x, y, score]: {kp!r:.60}")


def validate_message(message: Any) -> dict[str, Any]:
    """`message` itself if it is a schema-v1 frame message; else `InputError` naming the problem."""
    if not isinstance(message, dict):
        _fail(f"expected a map, got {type(message).__name__}")
    if message.get("v") != SCHEMA_VERSION:
        _fail(f"schema version {message.get('v')!r} is not supported (this client reads "
              f"v{SCHEMA_VERSION})")
    _check_field(message, "stream", lambda v: isinstance(v, str) and v != "", "a non-empty string")
    _check_field(message, "frame", lambda v: isinstance(v, int) and not isinstance(v, bool)
                 and v >= 0, "a non-negative integer")
    _check_field(message, "pts", lambda v: v is None or _is_number(v), "a number or null")
    for key in ("capture_ts", "publish_ts"):
        _check_field(message, key, _is_number, "a number")
    for key in ("width", "height"):
        _check_field(message, key, lambda v: isinstance(v, int) and not isinstance(v, bool)
                     and v > 0, "a positive integer")
    _check_field(message, "format", lambda v: v in FORMATS, f"one of {', '.join(FORMATS)}")
    _check_field(message, "persons", lambda v: isinstance(v, list), "a list")
    num_keypoints = FORMATS[message["format"]].num_keypoints
    for index, person in enumerate(message["persons"]):
        _check_person(person, index, num_keypoints)
    return message


def decode_message(topic: bytes, payload: bytes) -> dict[str, Any]:
    """Unpack and validate one [topic, payload] pair; the topic must name the message's stream."""
    try:
        message = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:  # ExtraData etc. are ValueErrors
        raise InputError(f"stream message: not msgpack ({type(exc).__name__}: {exc})") from None
    validate_message(message)
    if topic != message["stream"].encode("utf-8"):
        _fail(f"topic {topic!r} differs from the message's stream {message['stream']!r}")
    return message


def to_poses(message: dict[str, Any]) -> Poses:
    """The message's persons as `Poses` (numpy arrays), for consumers that compute on them."""
    return Poses.from_persons(message["persons"], message["format"])


@dataclass(frozen=True)
class Gap:
    """Frames of `stream` numbered `first`..`last` (inclusive) never arrived."""

    stream: str
    first: int
    last: int

    @property
    def missing(self) -> int:
        return self.last - self.first + 1


@dataclass
class SubscriberStats:
    received: int = 0       # valid messages handed to the caller
    malformed: int = 0      # messages skipped because they did not decode or validate
    missing: int = 0        # frames lost in gaps (publisher queue full, network, pipeline drops)
    skipped: int = 0        # older frames passed over on purpose in `latest` mode
    restarts: int = 0       # times a stream's frame numbers started again (publisher restart)
    gaps: list[Gap] = field(default_factory=list)


class Subscriber:
    """`Subscriber(url, topics=..., conflate=False, curve=...)`: connect to a posestream publisher.

    topics: stream names to receive (exact names; empty = every stream). conflate (alias latest):
    hand out only the newest frame per stream. curve: a `ClientCurve` or a pair of paths
    (client .key_secret, server .key). rcvhwm (messages) and rcvbuf (kernel bytes, 0 = OS default)
    bound what queues up locally while the caller is busy. `on_gap(gap)` is called for every gap.
    Iterate to get messages forever, or call `receive(timeout)`. Close it (or use `with`).
    """

    def __init__(self, url: str, topics: Iterable[str] = (), conflate: bool = False,
                 curve: ClientCurve | tuple[str | Path, str | Path] | None = None, *,
                 rcvhwm: int = 1000, rcvbuf: int = 0,
                 on_gap: Callable[[Gap], None] | None = None) -> None:
        self.url = check_endpoint(url, "subscriber URL")
        self.topics = frozenset([topics] if isinstance(topics, str) else topics)
        self.latest = conflate
        self.stats = SubscriberStats()
        self._on_gap = on_gap
        self._last_frame: dict[str, int] = {}
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
            for topic in sorted(self.topics) or [""]:
                self._socket.subscribe(topic.encode("utf-8"))
            self._socket.connect(self.url)
        except zmq.ZMQError as exc:
            self.close()
            raise InputError(f"cannot connect to {self.url}: {exc}") from None
        except BaseException:
            self.close()
            raise

    def _wanted(self, topic: bytes) -> bool:
        # ZMQ subscriptions match prefixes ("cam1" also matches "cam10"); names must match exactly.
        return not self.topics or topic.decode("utf-8", "replace") in self.topics

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
            self._pending[parts[0] if parts else b""] = parts
        while True:  # drain what has arrived; keep the newest message of each topic
            parts = self._recv_raw(0)
            if parts is None:
                break
            topic = parts[0] if parts else b""
            if topic in self._pending:
                self.stats.skipped += 1
                del self._pending[topic]  # re-insert last: streams are served oldest-updated first
            self._pending[topic] = parts
        return self._pending.pop(next(iter(self._pending)))

    def _track(self, message: dict[str, Any]) -> None:
        stream, frame = message["stream"], message["frame"]
        last = self._last_frame.get(stream)
        self._last_frame[stream] = frame
        if last is None:
            return
        if frame <= last:
            self.stats.restarts += 1
            log.info("stream %r restarted at frame %d (last seen %d)", stream, frame, last)
        elif frame > last + 1 and not self.latest:
            gap = Gap(stream, last + 1, frame - 1)
            self.stats.missing += gap.missing
            self.stats.gaps.append(gap)
            log.warning("stream %r: %d frame(s) missing (%d..%d)", stream, gap.missing, gap.first,
                        gap.last)
            if self._on_gap is not None:
                self._on_gap(gap)

    def receive(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next valid message, or None when nothing valid arrived within `timeout` seconds
        (None = wait forever). Malformed messages are logged and skipped."""
        if self._closed:
            raise InputError(f"subscriber {self.url} is closed")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            timeout_ms = (None if deadline is None
                          else max(0, math.ceil((deadline - time.monotonic()) * 1000)))
            parts = self._next_raw(timeout_ms)
            if parts is None:
                return None
            if len(parts) != 2 or not self._wanted(parts[0]):
                if len(parts) != 2:
                    self.stats.malformed += 1
                    log.warning("skipped a message of %d part(s) from %s (expected [topic, "
                                "payload])", len(parts), self.url)
                continue
            try:
                message = decode_message(parts[0], parts[1])
            except InputError as exc:
                self.stats.malformed += 1
                log.warning("skipped a malformed message on topic %r: %s", parts[0][:40], exc)
                continue
            self._track(message)
            self.stats.received += 1
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
