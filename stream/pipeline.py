"""The streaming pipeline: sources -> detect -> [pose] -> nms -> track -> sinks, one process per
stage, laid out by the table in `stage_graph` (the pose stage runs in top-down mode only).

`Pipeline(settings, sources, sinks, policy)` is a context manager; `run()` starts the stages, hands
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
from multiprocessing.connection import Connection
from typing import Any, Callable

from posestream.stream.core.errors import ConfigError, StageError
from posestream.stream.core.settings import Settings
from posestream.stream.metrics import QueueDepths, RunReport, percentiles_ms, stage_summary
from posestream.stream.progress import Display, Snapshot
from posestream.stream.ring import FrameRing
from posestream.stream.stage_graph import PlannedStage, decode_long_side, holders, inference_threads, plan
from posestream.stream.stage_runtime import StageIO
from posestream.stream.supervisor import SignalTrap, StageProcess, Supervisor, SupervisorSettings

log = logging.getLogger(__name__)

TICK_S = 0.1


def parse_sink(spec: str) -> tuple[str, str]:
    """`KIND:TARGET` (or just `KIND`, e.g. `window`) -> (kind, target); the kind must be registered."""
    kind, _, target = spec.partition(":")
    if not kind:
        raise ConfigError(f"--sink expects KIND:TARGET, got '{spec}'")
    sink_class(kind)  # raises PluginNotFoundError listing the valid kinds
    return kind, target


def sink_class(kind: str) -> Any:
    from posestream.stream.core.registry import load_plugin

    return load_plugin("posestream.sinks", kind)


def _grow_pipe(conn: Connection, size: int) -> None:
    """Ask Linux for a bigger pipe buffer, so a burst of small messages never blocks a writer."""
    setpipe = getattr(fcntl, "F_SETPIPE_SZ", None)
    if size and setpipe is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(conn.fileno(), setpipe, size)


class Pipeline:
    """One run over one or more sources. `policy` None means `pipeline.policy` ("auto" = by source
    kind: cameras and network streams are live, files and folders offline)."""

    def __init__(self, settings: Settings, sources: list[str], sinks: list[str], policy: str | None = None,
                 progress: Callable[[bool, int | None], Display] | None = None) -> None:
        if not sources:
            raise ConfigError("at least one --source is required")
        self.run_settings = settings
        self.settings = settings.pipeline
        policy = self.settings.policy if policy is None else settings.pipeline.checked("policy", policy)
        self.policy = None if policy == "auto" else policy
        self.sources = list(sources)
        self.sinks = [parse_sink(s) for s in sinks]
        self.progress = progress
        sink_pixels = any(sink_class(kind).needs_pixels for kind, _ in self.sinks)
        self._plan = plan(settings, len(self.sources), sink_pixels)
        self._scale_to = decode_long_side(settings, self._plan)
        self._source_stages = [stage.name for stage in self._plan if stage.spec.per_source]
        self._last_stage = self._plan[-1].name
        self._stack = contextlib.ExitStack()
        self._ran = False
        self._warn_threads()

    def _warn_threads(self) -> None:
        threads = inference_threads(self.run_settings, self._plan)
        cores = os.cpu_count() or 1
        if threads > cores:
            keys = " + ".join(stage.spec.threads for stage in self._plan if stage.spec.threads)
            log.warning("%s = %d exceeds the %d CPU cores; stages will compete for them", keys, threads, cores)

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
            s.abort_timeout_s, s.kill_timeout_s, logging.getLogger().getEffectiveLevel()),
            len(self._plan), ctx)
        # Rings are closed after the processes are stopped (ExitStack unwinds in reverse).
        self._rings: list[FrameRing] = []
        self._models: dict[str, dict[str, Any]] = {}  # stage -> what its model ran as ("model" reports)
        self._stack.callback(self._close_rings)
        self._stack.enter_context(sup)
        trap = self._stack.enter_context(SignalTrap())
        self._conds = [ctx.Condition() for _ in range(n)]
        # One pipe per stage that feeds another; its consumer reads the other end.
        pipes: dict[str, tuple[Connection, Connection]] = {}
        for feeder in (f for stage in self._plan for f in stage.inputs):
            pipes[feeder] = ctx.Pipe(duplex=False)
            _grow_pipe(pipes[feeder][1], s.pipe_bytes)
        self._hosts: list[Any] = []  # supervisor-side halves of sinks (the web viewer's server)
        self._sink_specs = [self._host_side(kind, target) for kind, target in self.sinks]
        for stage in self._plan:
            io = StageIO([pipes[f][0] for f in stage.inputs],
                         pipes[stage.name][1] if stage.name in pipes else None,
                         self._conds, n, stage.batch, stage.bit, stage.claims)
            sup.add(stage.name, stage.spec.body, {"io": io, **self._params(stage)}, self.run_settings,
                    nice=0 if stage.spec.threads else s.light_stage_nice,
                    flush_on_parent_death=stage.spec.flush_on_parent_death)
        sup.start_all()

        streams = self._handshake(sup, trap)
        if streams is None:  # a signal arrived while starting
            sup.close()
            return RunReport("interrupted", 0.0, {}, {}, trap.first)
        return self._supervise(sup, trap, streams)

    def _host_side(self, kind: str, target: str) -> tuple[str, str]:
        """Start the supervisor-side half of a sink that has one (`in_supervisor(settings, target)`,
        e.g. the web viewer's server); its sinks-process half gets `sink_target` instead."""
        start = getattr(sink_class(kind), "in_supervisor", None)
        if start is None:
            return kind, target
        host = self._stack.enter_context(start(self.run_settings, target))
        self._hosts.append(host)
        return kind, host.sink_target

    def _params(self, stage: PlannedStage) -> dict[str, Any]:
        """What the stage's body takes besides `io`, as its row says (`takes`), from what this run has."""
        offered: dict[str, Any] = {"policy": self.policy, "scale_to": self._scale_to,
                                   "sink_specs": self._sink_specs, "latency_window": self.settings.latency_window,
                                   "link": stage.spec.link}
        if stage.stream_id is not None:
            offered.update(spec=self.sources[stage.stream_id], stream_id=stage.stream_id)
        return {name: offered[name] for name in stage.spec.takes}

    def _handshake(self, sup: Supervisor, trap: SignalTrap) -> list[dict[str, Any]] | None:
        """Wait for every source's announcement, create the rings, tell sources and sinks the stream names."""
        infos: dict[int, dict[str, Any]] = {}
        while len(infos) < len(self.sources):
            if trap.received:
                return None
            for stage, kind, payload in sup.poll(TICK_S):
                if kind == "info":
                    infos[self._source_stages.index(stage.name)] = payload
                elif kind == "model":
                    self._models[stage.name] = payload
        mask = holders(self._plan)
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
                                    self._conds[i],
                                    newest_only=live and self.settings.live_newest_only)
            self._rings.append(ring)
            sup.stages[self._source_stages[i]].control.send(("ring", (ring.name, mask, name)))
            streams.append({"name": name, "info": info, "live": live, "ring": ring})
            log.info("stream %s: %s %dx%d%s, %s", name, info.kind, info.width, info.height,
                     f" (decoded at {info.max_width}x{info.max_height})" if self._scale_to else "",
                     "live (drops oldest when behind)" if live else "offline (every frame, in order)")
        sup.stages[self._last_stage].control.send(("streams", [st["name"] for st in streams]))
        all_live = all(st["live"] for st in streams)
        restart = self.settings.restart == "always" or (self.settings.restart == "live" and all_live)
        for stage in self._plan:
            sup.stages[stage.name].restartable = restart and stage.spec.restartable
        return streams

    def _supervise(self, sup: Supervisor, trap: SignalTrap, streams: list[dict[str, Any]]) -> RunReport:
        start = time.time()
        depths = QueueDepths()
        upstream = {stage.name: stage.inputs for stage in self._plan if stage.inputs}
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

        def take(stage: StageProcess, kind: str, payload: Any) -> None:
            """A stage's message: the sinks' report, a source's counts or the model a stage runs."""
            nonlocal sink_report
            if kind == "report":
                sink_report = payload
            elif kind == "source_stats":
                source_stats[stage.name] = payload
            elif kind == "model":
                self._models[stage.name] = payload

        while not sup.all_finished():
            for stage, kind, payload in sup.poll(TICK_S):
                take(stage, kind, payload)
            now = time.time()
            for stage, feeders in upstream.items():
                sent = sum(sup.stages[f].counters.get("sent") for f in feeders)
                depths.add(stage, int(sent - sup.stages[stage].counters.get("received")))
            for host in self._hosts:
                host.update(sup, streams, self._source_stages, source_stats, depths)
            if display is not None and now - last_tick >= (
                    self.settings.status_interval_s if display.live else TICK_S):
                fps = {}
                for name, stage in sup.stages.items():
                    processed = stage.counters.get("processed")
                    fps[name] = (processed - last_processed[name]) / (now - last_tick)
                    last_processed[name] = processed
                last_tick = now
                display.update(Snapshot(
                    now - start, int(sup.stages[self._last_stage].counters.get("processed")), fps,
                    sum(st["ring"].counters()["dropped"] for st in streams),
                    sup.stages[self._last_stage].counters.get("last_latency_s") * 1000.0))
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
                take(stage, kind, payload)
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
            if name in self._models:  # the model file, backend and precision the stage ran
                summary["model"] = self._models[name]
            stages[name] = summary
        report_streams = {}
        for i, st in enumerate(streams):
            counters = st["ring"].counters()
            report_streams[st["name"]] = {
                "kind": st["info"].kind, "policy": "live" if st["live"] else "offline",
                "frames_in": counters["published"], "frames_out": frames_out.get(st["name"], 0),
                "dropped": counters["dropped"], "lost": counters["lost"],
                "source": source_stats.get(self._source_stages[i], {}),
                "latency_ms": latency["end_to_end"].get(st["name"], percentiles_ms([]))}
        status = "interrupted" if signal_name else "completed"
        return RunReport(status, elapsed, report_streams, stages, signal_name)

    def _close_rings(self) -> None:
        for ring in self._rings:
            ring.close()
        self._rings.clear()
