"""The viewer for a ZMQ keypoint stream (no pictures): e.g. a fleet's aggregated stream.

`serve_subscription(endpoint, config, target)` subscribes to a posestream ZMQ publisher and serves the
same page, drawing each stream's keypoints on a dark canvas; `/metrics` then carries the viewer's
own series and `/healthz` is always 200. `zmq_items()` is the async source alone, for callers that
add their own metrics registry or health check to `server.serve()`.
"""
from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator, Iterable

import zmq
import zmq.asyncio

from posestream.plugins.sinks.web.server import Item, serve
from posestream.plugins.sinks.web.settings import warn_if_exposed, web_settings
from posestream.stream.client import check_endpoint
from posestream.stream.core.settings import Settings
from posestream.stream.core.errors import InputError
from posestream.stream.core.wire import decode, message_type

log = logging.getLogger(__name__)


async def zmq_items(endpoint: str, topics: Iterable[str] = ()) -> AsyncIterator[Item]:
    """Validated frame messages (wire schema v1/v2) of the publisher at `endpoint`, as
    (stream, None, message); end, heartbeat and status messages are skipped."""
    context = zmq.asyncio.Context()
    socket = context.socket(zmq.SUB)
    socket.linger = 0
    try:
        socket.connect(check_endpoint(endpoint, "viewer subscription"))
        for topic in list(topics) or [""]:
            socket.subscribe(topic)
        while True:
            parts = await socket.recv_multipart()
            try:
                message = decode(parts[0], parts[1])
            except (InputError, IndexError) as exc:
                log.warning("web viewer: skipped a message from %s: %s", endpoint, exc)
                continue
            if message_type(message) == "frame":  # end, heartbeat and status: nothing to draw
                yield message["stream"], None, message
    finally:
        socket.close(linger=0)
        context.term()


def serve_subscription(endpoint: str, config: Settings, target: str = "") -> None:
    """Serve the viewer for the ZMQ stream at `endpoint` until Ctrl-C (KeyboardInterrupt)."""
    settings = web_settings(config, target)
    warn_if_exposed(settings)
    asyncio.run(serve(zmq_items(endpoint), settings,
                      started=lambda url: log.info("web viewer of %s on %s", endpoint, url)))
