"""Start, watch and stop the stage processes.

The supervisor lives in the parent process. It starts every stage from one explicit `spawn`
context, watches exit codes (process sentinels, so a death is seen at once) and heartbeats (so a
hung stage is seen within the timeout), restarts a dead stage when the pipeline allows it, and
stops everything by escalation: stop event and a timed join while the stages drain, then the abort
event and a short join, then SIGTERM, then SIGKILL. A stage's own exception arrives as a tagged
`StageFailure` on its control pipe and is raised here as one clear error.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Callable

from posestream.stream.core.errors import StageError
from posestream.stream.core.settings import Settings
from posestream.stream.metrics import StageCounters, counters_size
from posestream.stream.stage_runtime import StageContext, StageFailure, stage_main

log = logging.getLogger(__name__)


@dataclass
class StageProcess:
    """One stage: how to (re)start it and what the supervisor knows about it."""

    name: str
    body: Callable[..., None]        # a module-level function (it travels to the child by reference)
    params: dict[str, Any]
    context: StageContext
    control: Connection              # parent end of the control pipe
    counters: StageCounters
    restartable: bool = False        # stateless, may be restarted after a crash
    process: Any = None
    restarts: int = 0
    finished: bool = False           # exited with code 0
    exitcode: int | None = None      # of the last process, once it has been joined
    started_at: float = 0.0
    messages: list[tuple[str, Any]] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return self.counters.get("ready") > 0


@dataclass(frozen=True)
class SupervisorSettings:
    heartbeat_s: float
    heartbeat_timeout_s: float
    startup_timeout_s: float
    max_restarts: int
    abort_timeout_s: float
    kill_timeout_s: float
    log_level: int = logging.INFO


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "is still running"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class Supervisor:
    """A context manager: leaving it always stops every stage (escalating as needed)."""

    def __init__(self, settings: SupervisorSettings, stages: int, ctx: Any) -> None:
        self.settings = settings
        self.ctx = ctx
        self.stop_event = ctx.Event()
        self.abort_event = ctx.Event()
        self.counters = ctx.RawArray("d", counters_size(stages))
        self.stages: dict[str, StageProcess] = {}
        self._closed = False

    # -- building -----------------------------------------------------------------------------------
    def add(self, name: str, body: Callable[..., None], params: dict[str, Any], settings: Settings,
            restartable: bool = False, nice: int = 0, flush_on_parent_death: bool = False) -> StageProcess:
        """Register a stage; `body(rt, **params)` runs in its process, `nice` lowers its priority."""
        row = len(self.stages)
        parent_end, child_end = self.ctx.Pipe(duplex=True)
        context = StageContext(name, row, self.counters, child_end, self.stop_event, self.abort_event,
                               settings, self.settings.heartbeat_s, self.settings.log_level, nice,
                               flush_on_parent_death)
        stage = StageProcess(name, body, params, context, parent_end, StageCounters(self.counters, row),
                             restartable)
        self.stages[name] = stage
        return stage

    def start(self, stage: StageProcess) -> None:
        """Start (or restart) one stage. SIGINT is ignored while it starts so that the child
        inherits "ignore": a terminal Ctrl-C goes to the supervisor only, which stops stages in order."""
        for name in ("ready", "first_ts"):
            stage.counters.set(name, 0.0)
        stage.counters.beat()
        stage.process = self.ctx.Process(target=stage_main, name=stage.name,
                                         args=(stage.context, stage.body, stage.params), daemon=True)
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main else None
        try:
            stage.process.start()
        finally:
            if in_main:
                signal.signal(signal.SIGINT, previous)
        stage.started_at = time.monotonic()
        stage.finished = False
        log.debug("started stage %s (pid %s)", stage.name, stage.process.pid)

    def start_all(self) -> None:
        for stage in self.stages.values():
            self.start(stage)

    # -- watching -----------------------------------------------------------------------------------
    def running(self) -> list[StageProcess]:
        return [s for s in self.stages.values() if s.process is not None and not s.finished]

    def poll(self, timeout: float) -> list[tuple[StageProcess, str, Any]]:
        """Wait up to `timeout` for control messages or exits. Returns the messages; raises the
        error of a failed stage, or a `StageError` for a death or hang that cannot be restarted."""
        running = self.running()
        handles: list[Any] = [s.control for s in self.stages.values()]
        handles += [s.process.sentinel for s in running]
        if handles:
            wait(handles, timeout)
        messages: list[tuple[StageProcess, str, Any]] = []
        for stage in self.stages.values():
            while stage.control.poll(0):
                try:
                    kind, payload = stage.control.recv()
                except (EOFError, OSError):
                    break
                if kind == "failure":
                    raise _failure_error(payload)
                messages.append((stage, kind, payload))
        for stage in running:
            code = stage.process.exitcode
            if code == 0:
                stage.finished = True
                log.debug("stage %s finished", stage.name)
            elif code is not None:
                self._handle_death(stage, f"{_describe_exit(code)}")
            else:
                self._check_heartbeat(stage)
        return messages

    def _check_heartbeat(self, stage: StageProcess) -> None:
        silent = time.time() - stage.counters.get("heartbeat")
        limit = self.settings.heartbeat_timeout_s if stage.ready else self.settings.startup_timeout_s
        if silent > limit:
            stage.process.kill()
            stage.process.join(self.settings.kill_timeout_s)
            what = "stopped responding" if stage.ready else "did not become ready"
            self._handle_death(stage, f"{what} (no heartbeat for {silent:.0f} s)")

    def _handle_death(self, stage: StageProcess, how: str) -> None:
        if (stage.restartable and stage.restarts < self.settings.max_restarts
                and not self.stop_event.is_set()):
            stage.restarts += 1
            log.warning("stage '%s' %s; restarting it (%d of at most %d)", stage.name, how,
                        stage.restarts, self.settings.max_restarts)
            self.start(stage)
            return
        raise StageError(f"stage '{stage.name}' {how}; stopping the pipeline")

    def all_finished(self) -> bool:
        return all(s.finished for s in self.stages.values())

    def request_stop(self) -> None:
        """Ask sources to stop reading; the rest drains and exits on its own."""
        self.stop_event.set()

    # -- stopping -----------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop whatever still runs: abort event + timed join, then SIGTERM, then SIGKILL. Safe twice."""
        if self._closed:
            return
        self._closed = True
        self.stop_event.set()
        self.abort_event.set()
        alive = [s.process for s in self.stages.values() if s.process is not None and s.process.is_alive()]
        self._join(alive, self.settings.abort_timeout_s)
        for step in ("terminate", "kill"):
            alive = [p for p in alive if p.is_alive()]
            if not alive:
                break
            log.warning("stopping %s with %s", ", ".join(p.name for p in alive),
                        "SIGTERM" if step == "terminate" else "SIGKILL")
            for process in alive:
                getattr(process, step)()
            self._join(alive, self.settings.kill_timeout_s)
        self._drain()
        for stage in self.stages.values():
            if stage.process is not None and not stage.process.is_alive():
                stage.exitcode = stage.process.exitcode
                stage.process.close()
            stage.control.close()
            stage.context.control.close()

    def _join(self, processes: list[Any], timeout: float) -> None:
        """Join while draining control pipes, so a stage blocked on reporting can still finish."""
        deadline = time.monotonic() + timeout
        while any(p.is_alive() for p in processes) and time.monotonic() < deadline:
            wait([p.sentinel for p in processes if p.is_alive()], 0.05)
            self._drain()

    def _drain(self) -> None:
        """Keep control messages that arrive while stopping (e.g. the sinks' final report)."""
        for stage in self.stages.values():
            try:
                while stage.control.poll(0):
                    stage.messages.append(stage.control.recv())
            except (EOFError, OSError):
                continue

    def __enter__(self) -> "Supervisor":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _failure_error(failure: Any) -> Exception:
    if isinstance(failure, StageFailure):
        return failure.to_exception()
    return StageError(f"a stage failed: {failure!r}")


class SignalTrap:
    """Records SIGINT/SIGTERM instead of raising, so the pipeline can stop in order. The first
    signal asks for a drain; a second one asks to abort. Only active in the main thread."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        del frame
        name = signal.Signals(signum).name
        self.received.append(name)
        log.info("received %s; %s", name, "stopping" if len(self.received) == 1 else "aborting")

    @property
    def first(self) -> str | None:
        return self.received[0] if self.received else None

    def __enter__(self) -> "SignalTrap":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
