"""The aggregated stream: one SUB socket per camera endpoint in, one PUB socket (`fleet.publish`) out.

Each camera's pipeline publishes on its own endpoint on its node; the aggregator subscribes to all
of them and republishes every frame under the camera's name (topic and `stream` field), so a
consumer sees one stream with one topic per camera, in the shared wire format (`core.wire`). One
socket per camera means a message's camera is known from the socket it came in on, whatever the
pipeline called its stream. The aggregator never waits on a camera: a silent or vanished endpoint
is just a socket with nothing to read (ZMQ reconnects by itself), so one camera's trouble never
stops the stream.

The aggregated stream is one publisher: it sends its own heartbeat (naming every camera) and the
fleet's status; the cameras' own heartbeats stay inside. A camera pipeline's `end` is forwarded
only while the fleet stops (`forward_ends`): before that it is a restart, not the stream's end.

All sockets live in one thread (ZMQ sockets are not thread-safe); other threads hand it endpoint
changes and status rows through `set_endpoint` and `publish_status`.
"""
from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import uuid
from typing import Any

import zmq

from posestream.stream.core import wire
from posestream.stream.core.errors import ConfigError, InputError
from posestream.stream.fleet.status import CameraStatus, FrameStats, status_message

log = logging.getLogger(__name__)

POLL_MS = 100


class Aggregator:
    """`Aggregator(publish, window_s, hwm)`; `start()` binds `publish` (a `ConfigError` if it cannot)."""

    def __init__(self, publish: str, window_s: float, hwm: int, linger_ms: int,
                 heartbeat_s: float = 1.0) -> None:
        self.publish = publish
        self.window_s = window_s
        self.hwm = hwm
        self.linger_ms = linger_ms
        self.heartbeat_s = heartbeat_s
        self.publisher_id = f"fleet:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.started = time.time()
        self.forward_ends = False
        self.forwarded = 0
        self.malformed = 0
        self._beat_seq = 0
        self._ended: dict[str, int | None] = {}
        self._stats: dict[str, FrameStats] = {}
        self._wanted: dict[str, str] = {}           # camera -> endpoint it should be read from
        self._outbox: queue.SimpleQueue[list[bytes]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fleet-aggregator", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def set_endpoint(self, camera: str, endpoint: str) -> None:
        with self._lock:
            self._wanted[camera] = endpoint
            self._stats.setdefault(camera, FrameStats(self.window_s))

    def figures(self, camera: str, now: float) -> tuple[float, float | None, float | None]:
        with self._lock:
            stats = self._stats.get(camera)
            return stats.figures(now) if stats is not None else (0.0, None, None)

    def publish_status(self, rows: list[CameraStatus]) -> None:
        self._outbox.put(wire.encode(status_message(rows)))

    def close(self, drain_s: float = 0.5) -> None:
        """Forward what is still arriving for `drain_s`, then close every socket. Safe twice."""
        if self._thread.is_alive():
            time.sleep(drain_s)
            self._stop.set()
            self._thread.join()

    # -- the socket thread ------------------------------------------------------------------------
    def _run(self) -> None:
        context = zmq.Context()
        out = context.socket(zmq.PUB)
        out.sndhwm = self.hwm
        out.linger = self.linger_ms
        try:
            out.bind(self.publish)
        except zmq.ZMQError as exc:
            self._error = ConfigError(f"fleet.publish: cannot bind {self.publish}: {exc}")
            out.close(0)
            context.term()
            self._ready.set()
            return
        log.info("fleet: aggregated stream on %s", self.publish)
        self._ready.set()
        sockets: dict[str, tuple[str, zmq.Socket]] = {}
        poller = zmq.Poller()
        next_beat = time.monotonic()
        try:
            while not self._stop.is_set():
                self._reconcile(context, poller, sockets)
                if time.monotonic() >= next_beat:
                    self._heartbeat(out)
                    next_beat = time.monotonic() + self.heartbeat_s
                while True:
                    try:
                        out.send_multipart(self._outbox.get_nowait(), zmq.NOBLOCK)
                    except queue.Empty:
                        break
                    except zmq.Again:
                        continue
                owners = {sock: camera for camera, (_, sock) in sockets.items()}
                for sock, _ in poller.poll(POLL_MS):
                    camera = owners[sock]
                    for _ in range(100):  # fair share per camera per round
                        try:
                            parts = sock.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._forward(out, camera, parts)
        finally:
            for _, sock in sockets.values():
                sock.close(0)
            out.close(self.linger_ms)
            context.term()

    def _reconcile(self, context: zmq.Context, poller: zmq.Poller,
                   sockets: dict[str, tuple[str, zmq.Socket]]) -> None:
        """Connect a SUB socket to each camera's current endpoint; replace it when it moved."""
        with self._lock:
            wanted = dict(self._wanted)
        for camera, endpoint in wanted.items():
            current = sockets.get(camera)
            if current is not None and current[0] == endpoint:
                continue
            if current is not None:
                poller.unregister(current[1])
                current[1].close(0)
            if not endpoint:
                sockets.pop(camera, None)
                continue
            sock = context.socket(zmq.SUB)
            sock.linger = 0
            sock.rcvhwm = self.hwm
            sock.reconnect_ivl = 100
            sock.reconnect_ivl_max = 1000
            sock.subscribe(b"")
            sock.connect(endpoint)
            poller.register(sock, zmq.POLLIN)
            sockets[camera] = (endpoint, sock)
            log.info("fleet: camera %s read from %s", camera, endpoint)

    def _heartbeat(self, out: zmq.Socket) -> None:
        with self._lock:
            cameras = list(self._wanted)
            ended = dict(self._ended)
        message = wire.heartbeat_message(self.publisher_id, self.started, self._beat_seq, time.time(),
                                         self.heartbeat_s, cameras, ended)
        self._beat_seq += 1
        try:
            out.send_multipart(wire.encode(message), zmq.NOBLOCK)
        except zmq.Again:
            pass

    def _forward(self, out: zmq.Socket, camera: str, parts: list[bytes]) -> None:
        arrival = time.time()
        try:
            if len(parts) != 2:
                raise InputError(f"stream message: {len(parts)} parts, expected [topic, payload]")
            message: Any = wire.decode(parts[0], parts[1])
        except InputError as exc:
            self.malformed += 1
            log.warning("fleet: camera %s: %s; skipped", camera, exc)
            return
        kind = wire.message_type(message)
        if kind == "frame":
            with self._lock:
                self._stats[camera].add(arrival, float(message["publish_ts"]) - float(message["capture_ts"]))
        elif kind == "end" and self.forward_ends:
            with self._lock:
                self._ended[camera] = message["last_frame"]
        else:  # the camera's own heartbeat, or an end that is only a restart
            return
        message["stream"] = camera
        try:
            out.send_multipart(wire.encode(message), zmq.NOBLOCK)
            self.forwarded += 1
        except zmq.Again:
            pass
