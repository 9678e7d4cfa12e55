"""What every stage process runs on: the messages stages exchange, the waiting/sending/reporting
runtime, the ring cache and `stage_main`, the entry point of a stage process.

Every stage runs `stage_main` in its own spawned process with one body from `stage_bodies` (which
body, wired to which pipes, is decided by the table in `stage_graph`): it reads small messages
(`Work`, `EndOfStream`) from its input pipe(s), does its job and writes to its output pipe. Pixels
stay in the frame rings; a `Work` carries a `FrameRef`, the poses so far and per-stage (enter, exit)
times. A stage reports to the supervisor over its control pipe: "info" (sources), "ready",
"source_stats" (a source's `SourceStats` counters whenever they change, e.g. a camera lost or
restored), "report" (sinks' final metrics) and "failure" (a picklable `StageFailure` tagged with the
stage name).
A stage beats its heartbeat between units of work and whenever it waits, so a stage that stops
beating is hung; waits are bounded, so an abort request is honoured within one heartbeat interval.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import pickle
import select
import signal
import sys
import threading
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Callable

from posestream.stream.core.errors import PosestreamError, StageError
from posestream.stream.core.results import Poses
from posestream.stream.core.settings import Settings
from posestream.stream.metrics import StageCounters
from posestream.stream.orphans import exit_with_parent, name_process
from posestream.stream.ring import FrameRef, FrameRing

log = logging.getLogger(__name__)

@dataclass
class Work:
    """One frame on its way through the stages."""

    ref: FrameRef
    poses: Poses | None = None
    timings: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class EndOfStream:
    """The last message of one stream; every stage forwards it after the stream's frames."""

    stream_id: int
    stream: str
    frames: int


@dataclass
class StageFailure:
    """A stage's exception in a form that always pickles, tagged with the stage's name."""

    stage: str
    type_name: str
    message: str
    traceback: str
    error: BaseException | None = None  # the original, when it is a picklable posestream error

    @classmethod
    def from_exception(cls, stage: str, exc: BaseException) -> "StageFailure":
        keep = exc if isinstance(exc, PosestreamError) and _pickles(exc) else None
        return cls(stage, type(exc).__name__, str(exc), traceback.format_exc(), keep)

    def to_exception(self) -> PosestreamError:
        """The error to raise in the supervisor: the original posestream error (its class kept, so the
        CLI says e.g. "input not found") or a `StageError` naming the stage and the cause."""
        if self.error is not None:
            try:
                return type(self.error)(f"{self.stage}: {self.message}")
            except TypeError:  # an error class with a richer constructor: keep the text only
                pass
        return StageError(f"stage '{self.stage}' failed: {self.type_name}: {self.message}")


def _pickles(exc: BaseException) -> bool:
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - any failure means "send the text only"
        return False
    return True


class Aborted(Exception):
    """Raised inside a stage when the supervisor asked every stage to stop at once."""


@dataclass
class StageContext:
    """Everything a stage process needs besides its own parameters; pickled once at spawn."""

    name: str
    row: int
    counters: Any          # multiprocessing RawArray of metrics rows
    control: Connection    # child end of the duplex control pipe
    stop: Any              # Event: finish the input and drain (sources stop reading)
    abort: Any             # Event: leave now
    settings: Settings
    heartbeat_s: float
    log_level: int = logging.INFO
    nice: int = 0          # added to the process's niceness (light stages yield to model stages)
    flush_on_parent_death: bool = False  # a dead supervisor: finish writing (sinks) rather than stop at once


@dataclass
class StageIO:
    """How one stage is wired, as the stage graph decided: the same shape for every body."""

    inputs: list[Connection]   # read ends of the pipes feeding this stage (none for a source)
    output: Connection | None  # write end towards the next stage (none for the last stage)
    conds: list[Any]           # one ring condition per stream, indexed by stream id
    streams: int               # how many streams end before this stage may finish
    batch: int                 # most messages taken at once
    bit: int                   # this stage's holder bit on the frame rings; 0: reads no pixels
    claims: bool = False       # the first reader after the sources: claims each frame (`FrameRing.take`)


class StageRuntime:
    """Waiting, sending and reporting with heartbeats and abort checks, for one stage process."""

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.name = ctx.name
        self.settings = ctx.settings
        self.counters = StageCounters(ctx.counters, ctx.row)
        # A source's watcher thread reports too; a Connection is not safe for concurrent senders.
        self._send_lock = threading.Lock()

    @property
    def aborted(self) -> bool:
        return self.ctx.abort.is_set()

    @property
    def stopping(self) -> bool:
        return self.ctx.stop.is_set() or self.ctx.abort.is_set()

    def beat(self) -> None:
        self.counters.beat()

    def report(self, kind: str, payload: Any = None) -> None:
        with self._send_lock:
            self.ctx.control.send((kind, payload))

    def ready(self) -> None:
        self.beat()
        self.counters.set("ready", 1.0)
        self.report("ready")

    def control_message(self, kind: str) -> Any:
        """Wait for the supervisor's message of `kind` (e.g. a source's ring assignment)."""
        while True:
            self.beat()
            if self.aborted:
                raise Aborted
            if self.ctx.control.poll(self.ctx.heartbeat_s):
                got, payload = self.ctx.control.recv()
                if got == kind:
                    return payload
                raise StageError(f"stage '{self.name}' expected '{kind}' from the supervisor, got '{got}'")

    def receive(self, inputs: list[Connection], limit: int, block: bool = True) -> list[Any]:
        """Up to `limit` messages: waits for the first (`block` False: returns [] at once when none
        is there), takes more only if already there. A batch ends at a stream's `EndOfStream`, so
        that marker always follows its stream's frames."""
        while True:
            if self.aborted:
                raise Aborted
            self.beat()
            ready = wait(inputs, timeout=self.ctx.heartbeat_s if block else 0)
            if ready:
                break
            if not block:
                return []
        items: list[Any] = []
        while ready and len(items) < limit:  # round robin: one message per stream in turn, so a
            for conn in list(ready):          # batch mixes the streams that have frames waiting
                if len(items) >= limit:
                    break
                if not conn.poll(0):
                    ready.remove(conn)
                    continue
                message = conn.recv()
                self.counters.add("received")
                items.append(message)
                if isinstance(message, EndOfStream):
                    ready.remove(conn)
        return items

    def send(self, conn: Connection, message: Any) -> None:
        """Send downstream, waiting (with heartbeats) while the pipe is full."""
        while True:
            if self.aborted:
                raise Aborted
            self.beat()
            _, writable, _ = select.select([], [conn.fileno()], [], self.ctx.heartbeat_s)
            if writable:
                break
        conn.send(message)
        self.counters.add("sent")


class RingCache:
    """Rings attached on first sight of their name (they are created after the stages start)."""

    def __init__(self, conds: list[Any]) -> None:
        self._conds = conds
        self._rings: dict[str, FrameRing] = {}

    def get(self, ref: FrameRef) -> FrameRing:
        ring = self._rings.get(ref.ring)
        if ring is None:
            ring = self._rings[ref.ring] = FrameRing.attach(ref.ring, self._conds[ref.stream_id])
        return ring

    def close(self) -> None:
        for ring in self._rings.values():
            ring.close()
        self._rings.clear()


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
KEEP_BLOCKS_BYTES = 32 << 20   # blocks up to this size come from the heap, never a fresh mmap
TRIM_ABOVE_BYTES = 128 << 20   # free heap memory is handed back to the kernel only beyond this


def keep_freed_memory() -> bool:
    """Let this process's C allocator keep frame-sized blocks it frees. Stages allocate and free
    several such blocks per frame (a 1280x720 BGR frame is 2.8 MB; FFmpeg's decoder threads have
    their own arenas), and glibc's defaults give them back to the kernel and fault them in again
    on the next frame: in the source decoding 1080p at 1280x720, ~400 page faults and ~1 ms of
    kernel CPU per frame. True where it took effect (glibc); elsewhere nothing changes."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, KEEP_BLOCKS_BYTES)
                    and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_ABOVE_BYTES))
    except (OSError, AttributeError):  # not glibc: no libc.so.6, or no mallopt in it
        return False


def stage_main(ctx: StageContext, body: Callable[..., None], params: dict[str, Any]) -> None:
    """Entry point of every stage process (a module-level function, so `spawn` can import it; `body`
    is a module-level function too and travels by reference)."""
    # The supervisor owns Ctrl-C: it starts stages with SIGINT blocked; ignore it too in case a
    # stage was started another way. SIGTERM keeps its default so terminate() works.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_with_parent(ctx.abort, graceful=ctx.flush_on_parent_death)  # a SIGKILLed supervisor leaves no stage behind
    name_process(ctx.name)  # ps/top show "ps:detect" etc.
    keep_freed_memory()
    if ctx.nice:
        os.nice(ctx.nice)
    logging.basicConfig(level=ctx.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    rt = StageRuntime(ctx)
    try:
        body(rt, **params)
    except Aborted:
        log.debug("stage %s aborted", ctx.name)
    except BaseException as exc:  # noqa: BLE001 - every failure goes to the supervisor, tagged
        failure = StageFailure.from_exception(ctx.name, exc)
        log.debug("stage %s failed:\n%s", ctx.name, failure.traceback)
        with contextlib.suppress(OSError):
            rt.report("failure", failure)
        sys.exit(1)
