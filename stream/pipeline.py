"""The streaming pipeline: sources -> detect -> pose -> nms -> track -> sinks, one process per stage.

`Pipeline(config, sources, sinks, policy)` is a context manager; `run()` starts the stages, hands
each source a frame ring sized from what the source announced, supervises until every stream has
ended (or a signal asks to stop), and returns a `RunReport`. Leaving the context always stops every
process and unlinks every shared-memory segment, whatever happened.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import multiprocessing
import os
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Callable

from posestream.stream.core.config import Config, check_choice, check_range
from posestream.stream.core.errors import ConfigError, StageError
from posestream.stream.metrics import QueueDepths, RunReport, percentiles_ms, stage_summary
from posestream.stream.progress import Display, Snapshot
from posestream.stream.ring import FrameRing
from posestream.stream.stages import DETECT_BIT, POSE_BIT, SINKS_BIT
from posestream.stream.supervisor import SignalTrap, Supervisor, SupervisorSettings

log = logging.getLogger(__name__)

POLICIES = ("auto", "live", "offline")
RESTART_POLICIES = ("never", "live", "always")
STATELESS = ("detect", "pose", "nms")
TICK_S = 0.1


@dataclass(frozen=True)
class PipelineSettings:
    """The `[pipeline]` table, range-checked where it enters."""

    policy: str
    ring_slots: int
    pipe_bytes: int
    heartbeat_interval_s: float
    heartbeat_timeout_s: float
    startup_timeout_s: float
    restart: str
    max_restarts: int
    drain_timeout_s: float
    abort_timeout_s: float
    kill_timeout_s: float
    status_interval_s: float
    latency_window: int
    light_stage_nice: int
    live_newest_only: bool
    strict: bool  # read by `posestream run`: damaged input fails the run (exit 3)

    @classmethod
    def from_config(cls, config: Config) -> "PipelineSettings":
        try:
            settings = cls(**config["pipeline"])
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"config table [pipeline] does not match this version: {exc}") from None
        check_choice("pipeline.policy", settings.policy, POLICIES)
        check_choice("pipeline.restart", settings.restart, RESTART_POLICIES)
        check_range("pipeline.ring_slots", settings.ring_slots, 2, 256)
        check_range("pipeline.pipe_bytes", settings.pipe_bytes, 0, 1 << 20)
        check_range("pipeline.heartbeat_interval_s", settings.heartbeat_interval_s, 0.01, 10)
        check_range("pipeline.heartbeat_timeout_s", settings.heartbeat_timeout_s,
                    2 * settings.heartbeat_interval_s, 3600)
        check_range("pipeline.startup_timeout_s", settings.startup_timeout_s, 1, 3600)
        check_range("pipeline.max_restarts", settings.max_restarts, 0, 100)
        check_range("pipeline.drain_timeout_s", settings.drain_timeout_s, 0, 3600)
        check_range("pipeline.abort_timeout_s", settings.abort_timeout_s, 0, 600)
        check_range("pipeline.kill_timeout_s", settings.kill_timeout_s, 0.1, 600)
        check_range("pipeline.status_interval_s", settings.status_interval_s, 0.1, 3600)
        check_range("pipeline.latency_window", settings.latency_window, 10, 10_000_000)
        check_range("pipeline.light_stage_nice", settings.light_stage_nice, 0, 19)
        return settings


def parse_sink(spec: str) -> tuple[str, str]:
    """`KIND:TARGET` (or just `KIND`, e.g. `window`) -> (kind, target); the kind must be registered."""
    kind, _, target = spec.partition(":")
    if not kind:
        raise ConfigError(f"--sink expects KIND:TARGET, got '{spec}'")
    sink_class(kind)  # raises PluginNotFoundError listing the valid kinds
    return kind, target


def sink_class(kind: str) -> Any:
    from posestream.stream.core.registry import load

    return load("posestream.sinks", kind)


def _grow_pipe(conn: Connection, size: int) -> None:
    """Ask Linux for a bigger pipe buffer, so a burst of small messages never blocks a writer."""
    setpipe = getattr(fcntl, "F_SETPIPE_SZ", None)
    if size and setpipe is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(conn.fileno(), setpipe, size)


class Pipeline:
    """One run over one or more sources. `policy` None means `pipeline.policy` ("auto" = by source
    kind: cameras and network streams are live, files and folders offline)."""

    def __init__(self, config: Config, sources: list[str], sinks: list[str], policy: str | None = None,
                 progress: Callable[[bool, int | None], Display] | None = None) -> None:
        if not sources:
            raise ConfigError("at least one --source is required")
        self.config = config
        self.settings = PipelineSettings.from_config(config)
        policy = policy or self.settings.policy
        check_choice("pipeline.policy", policy, POLICIES)
        self.policy = None if policy == "auto" else policy
        self.sources = list(sources)
        self.sinks = [parse_sink(s) for s in sinks]
        self.progress = progress
        self._stack = contextlib.ExitStack()
        self._ran = False
        self._warn_threads()

    def _warn_threads(self) -> None:
        threads = int(self.config["detector"]["threads"])
        if self.config["pose"]["mode"] != "onestage":
            threads += int(self.config["pose"]["threads"])
        cores = os.cpu_count() or 1
        if threads > cores:
            log.warning("detector.threads + pose.threads = %d exceeds the %d CPU cores; stages will "
                        "compete for them", threads, cores)

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every process, then unlink every ring. Safe to call twice."""
        self._stack.close()

    # -- run ----------------------------------------------------------------------------------------
    def run(self) -> RunReport:
        if self._ran:
            raise StageError("a Pipeline runs once; create a new one for another run")
        self._ran = True
        ctx = multiprocessing.get_context("spawn")
        s = self.settings
        n = len(self.sources)
        sup = Supervisor(SupervisorSettings(
            s.heartbeat_interval_s, s.heartbeat_timeout_s, s.startup_timeout_s, s.max_restarts,
            s.abort_timeout_s, s.kill_timeout_s, logging.getLogger().getEffectiveLevel()), n + 5, ctx)
        # Rings are closed after the processes are stopped (ExitStack unwinds in reverse).
        self._rings: list[FrameRing] = []
        self._stack.callback(self._close_rings)
        self._stack.enter_context(sup)
        trap = self._stack.enter_context(SignalTrap())
        conds = [ctx.Condition() for _ in range(n)]

        def pipe() -> tuple[Connection, Connection]:
            reader, writer = ctx.Pipe(duplex=False)
            _grow_pipe(writer, s.pipe_bytes)
            return reader, writer

        links = [pipe() for _ in range(n)]
        for i, spec in enumerate(self.sources):
            sup.add(f"source{i}", "source", {"spec": spec, "stream_id": i, "policy": self.policy,
                                            "conds": conds, "output": links[i][1]}, self.config)
        to_pose, to_nms, to_track, to_sinks = pipe(), pipe(), pipe(), pipe()
        sup.add("detect", "detect", {"inputs": [r for r, _ in links], "output": to_pose[1],
                                     "conds": conds}, self.config)
        sup.add("pose", "pose", {"inputs": [to_pose[0]], "output": to_nms[1], "conds": conds,
                                 "streams": n}, self.config)
        sup.add("nms", "nms", {"inputs": [to_nms[0]], "output": to_track[1], "streams": n}, self.config)
        sup.add("track", "track", {"inputs": [to_track[0]], "output": to_sinks[1], "streams": n},
                self.config)
        sup.add("sinks", "sinks", {"inputs": [to_sinks[0]], "conds": conds, "sink_specs": self.sinks,
                                   "streams": n, "latency_window": s.latency_window}, self.config)
        sup.start_all()

        streams = self._handshake(sup, trap)
        if streams is None:  # a signal arrived while starting
            sup.close()
            return RunReport("interrupted", 0.0, {}, {}, trap.first)
        return self._supervise(sup, trap, streams)

    def _handshake(self, sup: Supervisor, trap: SignalTrap) -> list[dict[str, Any]] | None:
        """Wait for every source's announcement, create the rings, tell sources and sinks the stream names."""
        infos: dict[int, dict[str, Any]] = {}
        while len(infos) < len(self.sources):
            if trap.received:
                return None
            for stage, kind, payload in sup.poll(TICK_S):
                if kind == "info":
                    infos[int(stage.name.removeprefix("source"))] = payload
        sink_pixels = any(getattr(sink_class(kind), "needs_pixels", True) for kind, _ in self.sinks)
        holders = DETECT_BIT | (SINKS_BIT if sink_pixels else 0)
        if self.config["pose"]["mode"] != "onestage":
            holders |= POSE_BIT
        streams: list[dict[str, Any]] = []
        used: set[str] = set()
        for i in range(len(self.sources)):
            info, live = infos[i]["info"], infos[i]["live"]
            name = info.name
            suffix = 2
            while name in used:
                name, suffix = f"{info.name}-{suffix}", suffix + 1
            used.add(name)
            ring = FrameRing.create(self.settings.ring_slots, info.max_height, info.max_width,
                                    sup.stages[f"source{i}"].params["conds"][i],
                                    newest_only=live and self.settings.live_newest_only)
            self._rings.append(ring)
            sup.stages[f"source{i}"].control.send(("ring", (ring.name, holders, name)))
            streams.append({"name": name, "info": info, "live": live, "ring": ring})
            log.info("stream %s: %s %dx%d, %s", name, info.kind, info.max_width, info.max_height,
                     "live (drops oldest when behind)" if live else "offline (every frame, in order)")
        sup.stages["sinks"].control.send(("streams", ([st["name"] for st in streams], sink_pixels)))
        all_live = all(st["live"] for st in streams)
        restart = self.settings.restart == "always" or (self.settings.restart == "live" and all_live)
        for name in STATELESS:
            sup.stages[name].restartable = restart
        return streams

    def _supervise(self, sup: Supervisor, trap: SignalTrap, streams: list[dict[str, Any]]) -> RunReport:
        start = time.time()
        depths = QueueDepths()
        upstream = {"detect": [f"source{i}" for i in range(len(streams))], "pose": ["detect"],
                    "nms": ["pose"], "track": ["nms"], "sinks": ["track"]}
        display = None
        if self.progress is not None:
            live = any(st["live"] for st in streams)
            counts = [st["info"].frame_count for st in streams]
            total = None if live or None in counts else sum(counts)
            display = self._stack.enter_context(contextlib.closing(self.progress(live, total)))
        sink_report: dict[str, Any] = {}
        source_stats: dict[str, dict[str, int]] = {}
        last_processed = {name: 0.0 for name in sup.stages}
        last_tick = start
        stop_deadline: float | None = None
        while not sup.all_finished():
            for stage, kind, payload in sup.poll(TICK_S):
                if kind == "report":
                    sink_report = payload
                elif kind == "source_stats":
                    source_stats[stage.name] = payload
            now = time.time()
            for stage, feeders in upstream.items():
                sent = sum(sup.stages[f].counters.get("sent") for f in feeders)
                depths.add(stage, int(sent - sup.stages[stage].counters.get("received")))
            if display is not None and now - last_tick >= (
                    self.settings.status_interval_s if display.live else TICK_S):
                fps = {}
                for name, stage in sup.stages.items():
                    processed = stage.counters.get("processed")
                    fps[name] = (processed - last_processed[name]) / (now - last_tick)
                    last_processed[name] = processed
                last_tick = now
                display.update(Snapshot(
                    now - start, int(sup.stages["sinks"].counters.get("processed")), fps,
                    sum(st["ring"].counters()["dropped"] for st in streams),
                    sup.stages["sinks"].counters.get("last_latency_s") * 1000.0))
            if trap.received:
                if stop_deadline is None:
                    sup.request_stop()
                    stop_deadline = now + self.settings.drain_timeout_s
                if len(trap.received) > 1 or now > stop_deadline:
                    log.warning("stages did not drain in time; aborting")
                    break
        elapsed = time.time() - start
        sup.close()
        for stage in sup.stages.values():
            for kind, payload in stage.messages:
                if kind == "report":
                    sink_report = payload
                elif kind == "source_stats":
                    source_stats[stage.name] = payload
        return self._report(sup, streams, depths, sink_report, source_stats, elapsed, trap.first)

    def _report(self, sup: Supervisor, streams: list[dict[str, Any]], depths: QueueDepths,
                sink_report: dict[str, Any], source_stats: dict[str, dict[str, int]], elapsed: float,
                signal_name: str | None) -> RunReport:
        """`lost` of a stream counts frames lost in flight (a crashed stage); `source` holds the
        source's own counters: `lost`/`restored` connections of a camera, decode errors, drops."""
        latency = sink_report.get("latency", {"stages": {}, "end_to_end": {}})
        frames_out = sink_report.get("frames_out", {})
        stages = {}
        for name, stage in sup.stages.items():
            summary = stage_summary(stage.counters.snapshot(), elapsed)
            summary["latency_ms"] = latency["stages"].get(name, percentiles_ms([]))
            summary["queue"] = depths.summary(name)
            summary["restarts"] = stage.restarts
            stages[name] = summary
        report_streams = {}
        for i, st in enumerate(streams):
            counters = st["ring"].counters()
            report_streams[st["name"]] = {
                "kind": st["info"].kind, "policy": "live" if st["live"] else "offline",
                "frames_in": counters["published"], "frames_out": frames_out.get(st["name"], 0),
                "dropped": counters["dropped"], "lost": counters["lost"],
                "source": source_stats.get(f"source{i}", {}),
                "latency_ms": latency["end_to_end"].get(st["name"], percentiles_ms([]))}
        status = "interrupted" if signal_name else "completed"
        return RunReport(status, elapsed, report_streams, stages, signal_name)

    def _close_rings(self) -> None:
        for ring in self._rings:
            ring.close()
        self._rings.clear()
