"""The viewer's HTTP server (aiohttp): the page, a WebSocket of frames, /metrics and /healthz.

It is fed by any async source of `(stream, jpeg | None, wire message)`: the web sink's feed in
`posestream run`, or a ZMQ subscription (keypoints only; the page then draws on a dark canvas).
`serve()` is that reusable entry point.

Newest wins: a `Hub` keeps only the latest item per stream. Each viewer has its own sender task that
wakes when something new arrives, sends at most `max_fps` items per stream per second and skips
what arrived meanwhile, so a slow or stalled browser only ever delays itself.

Safety: the page, the socket and the endpoints refuse requests whose Origin is not this server
(another site's page cannot read the cameras), and when bound to loopback also requests whose Host
is not a loopback name (DNS rebinding). With `[web] token` set, every request needs it, as
`Authorization: Bearer TOKEN` or `?token=TOKEN`.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

from posestream.plugins.sinks.web.settings import is_loopback_host, url_of
from posestream.stream.core.keypoints import get_format
from posestream.stream.core.settings import WebSettings

log = logging.getLogger(__name__)

Item = tuple[str, "bytes | None", dict[str, Any]]
Health = Callable[[], tuple[bool, str]]
FPS_WINDOW_S = 2.0
PICTURE_HOLD_S = 1.0  # a stream that sent a picture this recently is not overdrawn by keypoint-only items
STATUS_INTERVAL_S = 1.0


@dataclass
class StreamState:
    """The newest item of one stream and what the page shows about it."""

    name: str
    message: dict[str, Any] | None = None
    jpeg: bytes | None = None
    version: int = 0
    frames: int = 0
    dropped: int = 0
    first_frame: int | None = None
    last_frame: int | None = None
    latency_ms: float | None = None
    last_picture: float = 0.0
    arrivals: deque[float] = field(default_factory=lambda: deque(maxlen=512))
    _payload: tuple[int, bytes] | None = None

    def fps(self, now: float) -> float:
        while self.arrivals and now - self.arrivals[0] > FPS_WINDOW_S:
            self.arrivals.popleft()
        if len(self.arrivals) < 2:
            return 0.0
        return (len(self.arrivals) - 1) / max(self.arrivals[-1] - self.arrivals[0], 1e-6)

    def stats(self, now: float) -> dict[str, Any]:
        persons = len(self.message["persons"]) if self.message else 0
        return {"frames": self.frames, "fps": round(self.fps(now), 2), "dropped": self.dropped,
                "latency_ms": self.latency_ms, "persons": persons}

    def payload(self) -> bytes:
        """The WebSocket frame for the newest item: u32 header length, JSON header, JPEG (maybe
        empty). Built once per item, shared by every viewer."""
        if self._payload is None or self._payload[0] != self.version:
            header = json.dumps({"stream": self.name, "message": self.message,
                                 "stats": self.stats(time.monotonic())}).encode()
            self._payload = (self.version, struct.pack(">I", len(header)) + header + (self.jpeg or b""))
        return self._payload[1]


class Viewer:
    """One open page: what it watches and what it was last sent."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.watch: set[str] = set()
        self.sent: dict[str, int] = {}
        self.due: dict[str, float] = {}
        self.wake = asyncio.Event()


class Hub:
    """Latest item per stream and the viewers that want them; lives on the server's event loop."""

    def __init__(self, max_fps: float, registry: CollectorRegistry,
                 on_watch: Callable[[set[str]], None] | None = None) -> None:
        self.interval = 1.0 / max_fps
        self.streams: dict[str, StreamState] = {}
        self.viewers: set[Viewer] = set()
        self._on_watch = on_watch
        self._watched: set[str] = set()
        self.viewers_gauge = Gauge("posestream_web_viewers", "Open viewer pages", registry=registry)
        self.sent_total = Counter("posestream_web_frames_sent", "Frames sent to viewer pages",
                                  registry=registry)
        self.skipped_total = Counter("posestream_web_frames_skipped",
                                     "Frames a viewer never got because a newer one replaced them "
                                     "(slow browser: newest wins)", registry=registry)

    def publish(self, stream: str, jpeg: bytes | None, message: dict[str, Any]) -> None:
        state = self.streams.get(stream)
        if state is None:
            state = self.streams[stream] = StreamState(stream)
        now = time.monotonic()
        state.arrivals.append(now)
        state.frames += 1
        frame = int(message.get("frame", 0))
        # frames missing from the numbering so far (a picture may arrive after the next frame)
        state.first_frame = frame if state.first_frame is None else min(state.first_frame, frame)
        state.last_frame = frame if state.last_frame is None else max(state.last_frame, frame)
        state.dropped = max(0, state.last_frame - state.first_frame + 1 - state.frames)
        if message.get("publish_ts") and message.get("capture_ts"):
            state.latency_ms = round((message["publish_ts"] - message["capture_ts"]) * 1000.0, 1)
        if jpeg is None and now - state.last_picture < PICTURE_HOLD_S:
            return  # keep the newest picture with its own keypoints; the stats above still count
        if jpeg is not None:
            state.last_picture = now
        state.message, state.jpeg = message, jpeg
        state.version += 1
        for viewer in self.viewers:
            if stream in viewer.watch:
                viewer.wake.set()

    def set_watch(self, viewer: Viewer, streams: set[str]) -> None:
        viewer.watch = streams
        viewer.wake.set()
        self._update_watched()

    def add(self, viewer: Viewer) -> None:
        self.viewers.add(viewer)
        self.viewers_gauge.set(len(self.viewers))

    def remove(self, viewer: Viewer) -> None:
        self.viewers.discard(viewer)
        self.viewers_gauge.set(len(self.viewers))
        self._update_watched()

    def _update_watched(self) -> None:
        watched = set().union(*(v.watch for v in self.viewers)) if self.viewers else set()
        if watched != self._watched:
            self._watched = watched
            if self._on_watch is not None:
                self._on_watch(watched)

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        return {"type": "status", "streams": {n: s.stats(now) for n, s in sorted(self.streams.items())}}

    async def send_loop(self, viewer: Viewer) -> None:
        """Send each watched stream's newest item, at most `max_fps` per stream; wait otherwise."""
        loop = asyncio.get_running_loop()
        while not viewer.ws.closed:
            await viewer.wake.wait()
            viewer.wake.clear()
            for name in sorted(viewer.watch):
                state = self.streams.get(name)
                if state is None or state.version == viewer.sent.get(name, 0):
                    continue
                wait = viewer.due.get(name, 0.0) - loop.time()
                if wait > 0:
                    loop.call_later(wait, viewer.wake.set)
                    continue
                skipped = state.version - viewer.sent.get(name, state.version - 1) - 1
                if skipped > 0:
                    self.skipped_total.inc(skipped)
                viewer.due[name] = loop.time() + self.interval
                viewer.sent[name] = state.version
                await viewer.ws.send_bytes(state.payload())
                self.sent_total.inc()


def _token_ok(request: web.Request, token: str) -> bool:
    if not token:
        return True
    given = request.query.get("token", "")
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        given = auth.removeprefix("Bearer ").strip()
    return hmac.compare_digest(given.encode(), token.encode())


def _refusal(request: web.Request, settings: WebSettings) -> str | None:
    """Why this request is refused, or None."""
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc != request.host:
        return f"origin {origin} is not this server"
    if is_loopback_host(settings.host) and not is_loopback_host(urlsplit(f"//{request.host}").hostname or ""):
        return f"host {request.host} is not a loopback name"
    if not _token_ok(request, settings.token):
        return "missing or wrong token"
    return None


def build_app(hub: Hub, settings: WebSettings, registry: CollectorRegistry,
              health: Health | None = None) -> web.Application:
    """The aiohttp application: `/`, `/ws`, `/metrics`, `/healthz`."""
    page = resources.files("posestream.plugins.sinks.web").joinpath("static/index.html").read_bytes()
    formats = {name: [list(pair) for pair in get_format(name).skeleton]
               for name in ("coco17", "halpe26")}

    @web.middleware
    async def guard(request: web.Request, handler: Callable[[web.Request], Awaitable[Any]]) -> Any:
        reason = _refusal(request, settings)
        if reason is not None:
            log.warning("web viewer: refused %s %s from %s: %s", request.method, request.path,
                        request.remote, reason)
            return web.Response(status=403, text=f"forbidden: {reason}\n")
        return await handler(request)

    async def index(request: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/html", headers={
            "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
                                       "style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
                                       "connect-src 'self'",
            "Cache-Control": "no-store"})

    async def socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=10.0, max_msg_size=1 << 16)
        await ws.prepare(request)
        viewer = Viewer(ws)
        hub.add(viewer)
        sender = asyncio.create_task(hub.send_loop(viewer))
        status = asyncio.create_task(_status_loop(ws, hub))
        try:
            await ws.send_json({"type": "hello", "formats": formats, "max_fps": settings.max_fps})
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    watch = json.loads(msg.data).get("watch", [])
                except (ValueError, AttributeError):
                    continue
                if isinstance(watch, list):
                    hub.set_watch(viewer, {str(name) for name in watch[:64]})
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            for task in (sender, status):
                task.cancel()
            await asyncio.gather(sender, status, return_exceptions=True)
            hub.remove(viewer)
        return ws

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        ok, reason = health() if health is not None else (True, "ok")
        return web.Response(status=200 if ok else 503, text=reason + "\n")

    app = web.Application(middlewares=[guard])
    app.add_routes([web.get("/", index), web.get("/ws", socket), web.get("/metrics", metrics),
                    web.get("/healthz", healthz)])
    return app


async def _status_loop(ws: web.WebSocketResponse, hub: Hub) -> None:
    """Stream list and counters once a second, so the page shows streams nobody watches yet."""
    with contextlib.suppress(ConnectionError):
        while not ws.closed:
            await ws.send_json(hub.status())
            await asyncio.sleep(STATUS_INTERVAL_S)


async def serve(source: AsyncIterator[Item], settings: WebSettings, *,
                registry: CollectorRegistry | None = None, health: Health | None = None,
                on_watch: Callable[[set[str]], None] | None = None,
                started: Callable[[str], None] | None = None) -> None:
    """Serve the viewer for `source` until cancelled (or the source ends). `on_watch` hears which
    streams someone watches (so pictures are made only for those); `started` gets the URL once
    listening. A port already in use raises OSError before `started` is called."""
    registry = registry or CollectorRegistry()
    hub = Hub(settings.max_fps, registry, on_watch)
    runner = web.AppRunner(build_app(hub, settings, registry, health), access_log=None,
                           handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        if started is not None:
            started(url_of(settings, runner.addresses[0][1]))
        async for stream, jpeg, message in source:
            hub.publish(stream, jpeg, message)
        await asyncio.Event().wait()  # the source ended (a finished run): keep serving until cancelled
    finally:
        for viewer in list(hub.viewers):
            await viewer.ws.close()
        await runner.cleanup()
