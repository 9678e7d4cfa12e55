"""Web viewer sink: a browser page with live frames and poses, Prometheus `/metrics`, `/healthz`.

`sink` runs in the sinks process, `host` (server thread, feed, metrics, health) in the supervisor,
`server` is the reusable aiohttp part (also for a ZMQ subscription), `static/index.html` the page.
"""
from posestream.plugins.sinks.web.sink import WebSink

__all__ = ["WebSink"]
