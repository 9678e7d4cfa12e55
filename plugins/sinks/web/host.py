"""The supervisor-process half of the web viewer: the server thread, the feed, metrics and health.

`posestream run --sink web` starts a `WebHost` in the supervisor before the stages (the pipeline
asks the sink class for `in_supervisor`). The host binds a private feed socket (ipc:// in a fresh
0700 directory) that the web sink in the sinks process connects to, and runs the aiohttp server in
a thread with its own event loop. The supervisor's loop calls `update()` every tick with what it
already reads (stage counters, rings, source counters, queue depths); the host turns that into a
snapshot for `/metrics` and `/healthz`. No stage ever waits for this thread: the stages only write
shared counters and the sink sends without blocking.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, AsyncIterator

import zmq
import zmq.asyncio
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from posestream.plugins.sinks.web.feed import TOPIC_FRAME, TOPIC_KEYPOINTS, topic, unpack
from posestream.plugins.sinks.web.server import Item, serve
from posestream.plugins.sinks.web.settings import warn_if_exposed, web_settings
from posestream.stream.core.settings import Settings
from posestream.stream.core.errors import ConfigError

log = logging.getLogger(__name__)

UPDATE_INTERVAL_S = 0.5    # snapshots taken at most this often (the supervisor ticks every 0.1 s)
RATE_WINDOW_S = 5.0        # FPS and busy % are averaged over this many seconds
STALE_STATUS_S = 5.0       # /healthz fails when the supervisor stopped sending snapshots this long ago
START_TIMEOUT_S = 30.0
LATENCY_BUCKETS = (.005, .01, .025, .05, .075, .1, .15, .2, .3, .5, .75, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class Snapshot:
    """What the supervisor knew at `time` (plain values, safe to read from the server thread)."""

    time: float
    stages: dict[str, dict[str, Any]]
    streams: dict[str, dict[str, Any]]


class WebHost:
    """A context manager; `sink_target` is what the web sink in the sinks process connects to."""

    def __init__(self, settings: Settings, target: str = "") -> None:
        self.settings = web_settings(settings, target)
        warn_if_exposed(self.settings)
        self.heartbeat_timeout_s = settings.pipeline.heartbeat_timeout_s
        self._dir = tempfile.mkdtemp(prefix="posestream-web-")  # mode 0700: only this user connects
        self.sink_target = f"ipc://{self._dir}/feed"
        self.registry = CollectorRegistry()
        self.registry.register(_PipelineCollector(self))
        self._e2e = Histogram("posestream_end_to_end_latency_seconds",
                              "Capture to sink write, per stream", ["stream"], registry=self.registry,
                              buckets=LATENCY_BUCKETS)
        self._stage_latency = Histogram("posestream_stage_latency_seconds",
                                        "Time a frame spent in a stage (its batch's work)", ["stage"],
                                        registry=self.registry, buckets=LATENCY_BUCKETS)
        self._frames_out = Counter("posestream_stream_frames_out",
                                   "Frames that reached the sinks, per stream", ["stream"],
                                   registry=self.registry)
        self.snapshot: Snapshot | None = None
        self._history: deque[Snapshot] = deque()
        self._last_new_frame: dict[str, tuple[int, float]] = {}
        self._last_update = 0.0
        self._watched: set[str] = set()  # streams whose pictures the feed is subscribed to
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="web-viewer", daemon=True)
        self._thread.start()
        if not self._started.wait(START_TIMEOUT_S) or self._error is not None:
            self.close()
            where = f"{self.settings.host}:{self.settings.port}"
            raise ConfigError(f"web viewer cannot listen on {where}: {self._error or 'timed out'}")
        log.info("web viewer on %s", self.url)

    # -- server thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to the constructor or logged
            if not self._started.is_set():
                self._error = exc
                self._started.set()
            else:
                log.error("web viewer stopped: %s", exc)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        context = zmq.asyncio.Context()
        feed = context.socket(zmq.SUB)
        feed.rcvhwm = 64
        feed.linger = 0
        try:
            feed.bind(self.sink_target)
            feed.subscribe(TOPIC_KEYPOINTS)

            def on_watch(streams: set[str]) -> None:
                """Subscribe to pictures of watched streams only: the sink encodes nothing else."""
                for name in self._watched - streams:
                    feed.unsubscribe(topic(TOPIC_FRAME, name))
                for name in streams - self._watched:
                    feed.subscribe(topic(TOPIC_FRAME, name))
                self._watched = set(streams)

            server = asyncio.create_task(serve(self._items(feed), self.settings, registry=self.registry,
                                               health=self.health, on_watch=on_watch,
                                               started=self._on_started))
            stop = asyncio.create_task(self._stop.wait())
            await asyncio.wait({server, stop}, return_when=asyncio.FIRST_COMPLETED)
            for task in (server, stop):
                task.cancel()
            result = (await asyncio.gather(server, stop, return_exceptions=True))[0]
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result
        finally:
            feed.close(linger=0)
            context.term()

    def _on_started(self, url: str) -> None:
        self.url = url
        self._started.set()

    async def _items(self, feed: zmq.asyncio.Socket) -> AsyncIterator[Item]:
        """The sink's messages as (stream, jpeg | None, message); records the latency histograms."""
        while True:
            parts = await feed.recv_multipart()
            stream = parts[0][1:-1].decode("utf-8", "replace")
            message, timings = unpack(parts[1])
            for stage, (enter, exit_) in timings.items():
                self._stage_latency.labels(stage).observe(max(exit_ - enter, 0.0))
            self._e2e.labels(stream).observe(max(message["publish_ts"] - message["capture_ts"], 0.0))
            self._frames_out.labels(stream).inc()
            yield stream, (parts[2] if len(parts) > 2 else None), message

    # -- supervisor thread --------------------------------------------------------------------------
    def update(self, sup: Any, streams: list[dict[str, Any]], source_stages: list[str],
               source_stats: dict[str, dict[str, int]], depths: Any) -> None:
        """Called by the supervisor's loop every tick with what it knows (`source_stages[i]` is the
        stage that reads `streams[i]`); takes a snapshot every UPDATE_INTERVAL_S."""
        now = time.time()
        if now - self._last_update < UPDATE_INTERVAL_S:
            return
        self._last_update = now
        stages = {}
        for name, stage in sup.stages.items():
            counters = stage.counters.snapshot()
            code = stage.process.exitcode if stage.process is not None else None
            stages[name] = {
                "processed": counters["processed"], "busy_s": counters["busy_s"],
                "received": counters["received"], "sent": counters["sent"],
                "restarts": stage.restarts, "finished": stage.finished, "exitcode": code,
                "heartbeat_age_s": now - counters["heartbeat"], "ready": counters["ready"] > 0,
                "queue": depths.last(name)}
        out = {}
        for st, source in zip(streams, source_stages):
            ring = st["ring"].counters()
            published = ring["published"]
            previous = self._last_new_frame.get(st["name"])
            if previous is None or published != previous[0]:
                self._last_new_frame[st["name"]] = (published, now)
            finished = sup.stages[source].finished
            out[st["name"]] = {
                "live": st["live"], "published": published, "dropped": ring["dropped"],
                "lost": ring["lost"], "source": dict(source_stats.get(source, {})),
                "finished": finished, "frame_age_s": now - self._last_new_frame[st["name"]][1]}
        snapshot = Snapshot(now, stages, out)
        self._history.append(snapshot)
        while self._history and now - self._history[0].time > RATE_WINDOW_S:
            self._history.popleft()
        self.snapshot = snapshot

    def rates(self) -> tuple[Snapshot | None, dict[str, tuple[float, float]], dict[str, float]]:
        """The newest snapshot, per-stage (FPS, busy %) and per-stream input FPS over the window
        behind it."""
        history = list(self._history)
        if not history:
            return None, {}, {}
        first, last = history[0], history[-1]
        span = last.time - first.time
        rates = {}
        for name, stage in last.stages.items():
            before = first.stages.get(name)
            if span <= 0 or before is None:
                rates[name] = (0.0, 0.0)
                continue
            fps = max(stage["processed"] - before["processed"], 0.0) / span
            busy = min(100.0, 100.0 * max(stage["busy_s"] - before["busy_s"], 0.0) / span)
            rates[name] = (fps, busy)
        stream_fps = {}
        for name, stream in last.streams.items():
            before = first.streams.get(name)
            published = stream["published"] - before["published"] if before else 0
            stream_fps[name] = max(published, 0) / span if span > 0 else 0.0
        return last, rates, stream_fps

    def health(self) -> tuple[bool, str]:
        """(healthy, reason): every stage alive and every live source delivering frames."""
        snapshot = self.snapshot
        if snapshot is None:
            return False, "starting: the stages are not running yet"
        age = time.time() - snapshot.time
        if age > STALE_STATUS_S:
            return False, f"no pipeline status for {age:.0f} s (the run ended or the supervisor hangs)"
        for name, stage in snapshot.stages.items():
            if stage["exitcode"] not in (None, 0):
                return False, f"stage {name} exited with code {stage['exitcode']}"
            if not stage["finished"] and stage["heartbeat_age_s"] > self.heartbeat_timeout_s:
                return False, f"stage {name}: no heartbeat for {stage['heartbeat_age_s']:.0f} s"
        for name, stream in snapshot.streams.items():
            if stream["live"] and not stream["finished"] and stream["frame_age_s"] > self.settings.health_stale_s:
                return False, f"stream {name}: no frame for {stream['frame_age_s']:.1f} s"
        return True, f"ok: {len(snapshot.stages)} stages alive, {len(snapshot.streams)} streams"

    # -- stopping -----------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the server and remove the feed socket; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10.0)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "WebHost":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _PipelineCollector:
    """Prometheus series from the newest snapshot, built at scrape time."""

    def __init__(self, host: WebHost) -> None:
        self._host = host

    def collect(self) -> Any:
        snapshot, rates, stream_fps = self._host.rates()
        if snapshot is None:
            return
        stage_metrics = {
            "frames": CounterMetricFamily("posestream_stage_frames", "Frames a stage processed",
                                          labels=["stage"]),
            "in": CounterMetricFamily("posestream_stage_messages_in", "Messages a stage received",
                                      labels=["stage"]),
            "out": CounterMetricFamily("posestream_stage_messages_out", "Messages a stage sent on",
                                       labels=["stage"]),
            "restarts": CounterMetricFamily("posestream_stage_restarts", "Restarts after a crash",
                                            labels=["stage"]),
            "fps": GaugeMetricFamily("posestream_stage_fps", f"Frames per second over {RATE_WINDOW_S:.0f} s",
                                     labels=["stage"]),
            "busy": GaugeMetricFamily("posestream_stage_busy_percent",
                                      f"Share of the last {RATE_WINDOW_S:.0f} s spent working",
                                      labels=["stage"]),
            "queue": GaugeMetricFamily("posestream_stage_queue_depth", "Messages waiting at the input",
                                       labels=["stage"]),
            "up": GaugeMetricFamily("posestream_stage_up", "1 while the stage process runs or ended cleanly",
                                    labels=["stage"]),
        }
        for name, stage in snapshot.stages.items():
            fps, busy = rates.get(name, (0.0, 0.0))
            stage_metrics["frames"].add_metric([name], stage["processed"])
            stage_metrics["in"].add_metric([name], stage["received"])
            stage_metrics["out"].add_metric([name], stage["sent"])
            stage_metrics["restarts"].add_metric([name], stage["restarts"])
            stage_metrics["fps"].add_metric([name], fps)
            stage_metrics["busy"].add_metric([name], busy)
            stage_metrics["queue"].add_metric([name], stage["queue"])
            stage_metrics["up"].add_metric([name], 1.0 if stage["exitcode"] in (None, 0) else 0.0)
        stream_metrics = {
            "in": CounterMetricFamily("posestream_stream_frames_in", "Frames the source put in the ring",
                                      labels=["stream"]),
            "dropped": CounterMetricFamily("posestream_stream_frames_dropped",
                                           "Frames dropped because the pipeline was behind (live)",
                                           labels=["stream"]),
            "lost": CounterMetricFamily("posestream_stream_frames_lost", "Frames lost with a crashed stage",
                                        labels=["stream"]),
            "reconnects": CounterMetricFamily("posestream_source_reconnects",
                                              "Times a lost camera connection was restored",
                                              labels=["stream"]),
            "disconnects": CounterMetricFamily("posestream_source_disconnects",
                                               "Times a camera connection was lost", labels=["stream"]),
            "fps": GaugeMetricFamily("posestream_stream_fps",
                                     f"Frames per second the source delivered over {RATE_WINDOW_S:.0f} s",
                                     labels=["stream"]),
            "age": GaugeMetricFamily("posestream_stream_frame_age_seconds",
                                     "Time since the source delivered its newest frame",
                                     labels=["stream"]),
        }
        for name, stream in snapshot.streams.items():
            stream_metrics["in"].add_metric([name], stream["published"])
            stream_metrics["dropped"].add_metric([name], stream["dropped"])
            stream_metrics["lost"].add_metric([name], stream["lost"])
            stream_metrics["reconnects"].add_metric([name], stream["source"].get("restored", 0))
            stream_metrics["disconnects"].add_metric([name], stream["source"].get("lost", 0))
            stream_metrics["fps"].add_metric([name], stream_fps.get(name, 0.0))
            stream_metrics["age"].add_metric([name], stream["frame_age_s"])
        yield from stage_metrics.values()
        yield from stream_metrics.values()
