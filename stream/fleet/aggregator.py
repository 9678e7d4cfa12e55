"""The aggregated stream: one SUB socket per camera endpoint in, one PUB socket (`fleet.publish`) out.

Each camera's pipeline publishes on its own endpoint on its node; the aggregator subscribes to all
of them and republishes every frame under the camera's name (topic and `stream` field), so a
consumer sees one stream with one topic per camera, in the shared wire format (`core.wire`). One
socket per camera means a message's camera is known from the socket it came in on, whatever the
pipeline called its stream. The aggregator never waits on a camera: a silent or vanished endpoint
is just a socket with nothing to read (ZMQ reconnects by itself), so one camera's trouble never
stops the stream.

Camera streams are CURVE-authenticated by default (`fleet.keys` says why and how): each camera's
SUB socket is a CURVE client that completes a handshake only with the server key the controller
gave for that camera, so nothing but the camera's current incarnation can feed it; failed
handshakes are counted per camera (a socket monitor) for the status table. The aggregated stream
itself binds with the `[zmq]` CURVE options, like the zmq sink.

Fencing: fleet pipelines stamp an `epoch` on their frames that grows with every restart and move.
Per camera the aggregator forwards only frames of the newest epoch seen, in increasing frame
order within it; frames of an older epoch (a stale incarnation) or at or below the last forwarded
number are dropped and counted, so subscribers never see a camera's frames twice or out of order.

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
from zmq.utils.monitor import recv_monitor_message

from posestream.stream import curve_keys
from posestream.stream.client import warn_if_exposed
from posestream.stream.core import wire
from posestream.stream.core.errors import ConfigError, InputError, PosestreamError
from posestream.stream.core.settings import ZmqSettings
from posestream.stream.curve_keys import ClientCurve, KeyPair
from posestream.stream.fleet.status import CameraStatus, FrameStats, status_message

log = logging.getLogger(__name__)

POLL_MS = 100
_HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                     | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
_MONITORED = _HANDSHAKE_FAILED | zmq.EVENT_HANDSHAKE_SUCCEEDED


class _Camera:
    """The aggregator's view of one camera: where to read it, with which key, what came."""

    def __init__(self, window_s: float) -> None:
        self.endpoint = ""
        self.server_key: bytes | None = None
        self.stats = FrameStats(window_s)
        self.epoch = -1              # newest epoch forwarded
        self.last_frame = -1         # last frame number forwarded in that epoch
        self.dropped = 0             # stale or repeated frames not forwarded
        self.handshake_failures = 0  # since the last successful CURVE handshake


class Aggregator:
    """`Aggregator(publish, zmq, window_s, client)`: `zmq` gives the queue sizes, heartbeat and the
    aggregated stream's CURVE options; `client` is the pair used to read CURVE camera streams (None:
    read them in the clear). `start()` binds `publish` (a `ConfigError` if it cannot)."""

    def __init__(self, publish: str, zmq_settings: ZmqSettings, window_s: float,
                 client: KeyPair | None = None) -> None:
        self.publish = publish
        self.window_s = window_s
        self.hwm = zmq_settings.hwm
        self.linger_ms = zmq_settings.linger_ms
        self.heartbeat_s = zmq_settings.heartbeat_s
        self.zmq_settings = zmq_settings
        self.client = client
        self.publisher_id = f"fleet:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.started = time.time()
        self.forward_ends = False
        self.forwarded = 0
        self.malformed = 0
        self._beat_seq = 0
        self._ended: dict[str, int | None] = {}
        self._cameras: dict[str, _Camera] = {}
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

    def set_endpoint(self, camera: str, endpoint: str, server_key: bytes | None = None) -> None:
        """Read `camera` from `endpoint` ("" = not now), authenticating it by `server_key` (its
        CURVE public key; needed when the aggregator has a client pair)."""
        if self.client is not None and endpoint and server_key is None:
            raise ConfigError(f"camera {camera}: a CURVE stream needs the camera's server key")
        with self._lock:
            state = self._cameras.setdefault(camera, _Camera(self.window_s))
            if (state.endpoint, state.server_key) != (endpoint, server_key):
                state.handshake_failures = 0
            state.endpoint, state.server_key = endpoint, server_key

    def figures(self, camera: str, now: float) -> tuple[float, float | None, float | None]:
        with self._lock:
            state = self._cameras.get(camera)
            return state.stats.figures(now) if state is not None else (0.0, None, None)

    def handshake_failures(self, camera: str) -> int:
        """Failed CURVE handshakes with `camera`'s stream since the last good one (wrong key?)."""
        with self._lock:
            state = self._cameras.get(camera)
            return state.handshake_failures if state is not None else 0

    def dropped(self, camera: str) -> int:
        """Frames of `camera` not forwarded: from a stale incarnation, or repeated."""
        with self._lock:
            state = self._cameras.get(camera)
            return state.dropped if state is not None else 0

    def publish_status(self, rows: list[CameraStatus]) -> None:
        self._outbox.put(wire.encode(status_message(rows)))

    def close(self, drain_s: float = 0.5) -> None:
        """Forward what is still arriving for `drain_s`, then close every socket. Safe twice."""
        if self._thread.is_alive():
            time.sleep(drain_s)
            self._stop.set()
            self._thread.join()

    # -- the socket thread ------------------------------------------------------------------------
    def _bind(self, context: zmq.Context) -> tuple[zmq.Socket, Any]:
        """The aggregated stream's PUB socket, bound with the `[zmq]` CURVE options (and its ZAP
        handler, or None)."""
        server, allowed = curve_keys.server_keys(self.zmq_settings)
        warn_if_exposed(self.publish, server is not None, "fleet.publish")
        auth = curve_keys.start_authenticator(context, allowed) if server is not None else None
        out = context.socket(zmq.PUB)
        out.sndhwm = self.hwm
        out.linger = self.linger_ms
        if server is not None:
            curve_keys.configure_server(out, server)
        try:
            out.bind(self.publish)
        except zmq.ZMQError as exc:
            out.close(0)
            if auth is not None:
                auth.stop()
            raise ConfigError(f"fleet.publish: cannot bind {self.publish}: {exc}") from None
        return out, auth

    def _run(self) -> None:
        context = zmq.Context()
        try:
            out, auth = self._bind(context)
        except PosestreamError as exc:
            self._error = exc
            context.term()
            self._ready.set()
            return
        log.info("fleet: aggregated stream on %s%s", self.publish, " (CURVE)" if auth else "")
        self._ready.set()
        sockets: dict[str, tuple[tuple[str, bytes | None], zmq.Socket, zmq.Socket]] = {}
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
                owners = {sock: camera for camera, (_, sock, _) in sockets.items()}
                monitors = {monitor: camera for camera, (_, _, monitor) in sockets.items()}
                for sock, _ in poller.poll(POLL_MS):
                    if sock in monitors:
                        self._monitor_event(monitors[sock], sock)
                        continue
                    camera = owners[sock]
                    for _ in range(100):  # fair share per camera per round
                        try:
                            parts = sock.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._forward(out, camera, parts)
        finally:
            for camera in list(sockets):
                self._close_camera(poller, sockets.pop(camera))
            out.close(self.linger_ms)
            if auth is not None:  # after the socket: a CURVE socket without ZAP would admit anyone
                auth.stop()
            context.term()

    @staticmethod
    def _close_camera(poller: zmq.Poller, entry: tuple[Any, zmq.Socket, zmq.Socket]) -> None:
        _, sock, monitor = entry
        for item in (sock, monitor):
            poller.unregister(item)
        sock.disable_monitor()
        monitor.close(0)
        sock.close(0)

    def _reconcile(self, context: zmq.Context, poller: zmq.Poller,
                   sockets: dict[str, tuple[tuple[str, bytes | None], zmq.Socket, zmq.Socket]]) -> None:
        """Connect a SUB socket to each camera's current endpoint, as a CURVE client of its current
        key; replace it when either changed (a stale incarnation's socket is closed unread)."""
        with self._lock:
            wanted = {camera: (c.endpoint, c.server_key) for camera, c in self._cameras.items()}
        for camera, (endpoint, server_key) in wanted.items():
            current = sockets.get(camera)
            if current is not None and current[0] == (endpoint, server_key):
                continue
            if current is not None:
                self._close_camera(poller, sockets.pop(camera))
            if not endpoint:
                continue
            sock = context.socket(zmq.SUB)
            sock.linger = 0
            sock.rcvhwm = self.hwm
            sock.reconnect_ivl = 100
            sock.reconnect_ivl_max = 1000
            if self.client is not None and server_key is not None:
                curve_keys.configure_client(sock, ClientCurve(self.client, server_key))
            sock.subscribe(b"")
            monitor = sock.get_monitor_socket(_MONITORED)
            sock.connect(endpoint)
            poller.register(sock, zmq.POLLIN)
            poller.register(monitor, zmq.POLLIN)
            sockets[camera] = ((endpoint, server_key), sock, monitor)
            log.info("fleet: camera %s read from %s%s", camera, endpoint,
                     " (CURVE)" if server_key is not None and self.client is not None else "")

    def _monitor_event(self, camera: str, monitor: zmq.Socket) -> None:
        try:
            event = recv_monitor_message(monitor, zmq.NOBLOCK)["event"]
        except zmq.Again:
            return
        with self._lock:
            state = self._cameras[camera]
            if event & _HANDSHAKE_FAILED:
                state.handshake_failures += 1
                if state.handshake_failures == 1:
                    log.warning("fleet: camera %s: CURVE handshake with %s failed (wrong key?)",
                                camera, state.endpoint)
            elif event & zmq.EVENT_HANDSHAKE_SUCCEEDED:
                state.handshake_failures = 0

    def _heartbeat(self, out: zmq.Socket) -> None:
        with self._lock:
            cameras = list(self._cameras)
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
                state = self._cameras[camera]
                if not self._in_order(state, message):
                    state.dropped += 1
                    return
                state.stats.add(arrival, float(message["publish_ts"]) - float(message["capture_ts"]))
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

    @staticmethod
    def _in_order(state: _Camera, message: dict[str, Any]) -> bool:
        """Whether a frame may be forwarded: a newer epoch starts the camera's numbering again; an
        older epoch is a stale incarnation; within an epoch the number must grow. Frames without
        an epoch (not from a fleet pipeline) are not checked."""
        epoch = message.get("epoch")
        if epoch is None:
            return True
        if epoch > state.epoch:
            state.epoch = epoch
        elif epoch < state.epoch or message["frame"] <= state.last_frame:
            return False
        state.last_frame = message["frame"]
        return True
