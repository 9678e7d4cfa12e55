"""The bodies of the pipeline's stage processes and the messages they exchange.

Every stage runs `stage_main` in its own spawned process: it reads small messages (`Work`,
`EndOfStream`) from its input pipe(s), does its job and writes to its output pipe. Pixels stay in
the frame rings; a `Work` carries a `FrameRef`, the poses so far and per-stage (enter, exit) times.
A stage reports to the supervisor over its control pipe: "info" (sources), "ready",
"source_stats" (a source's `SourceStats` counters whenever they change, e.g. a camera lost or
restored), "report" (sinks' final metrics) and "failure" (a picklable `StageFailure` tagged with the
stage name).
A stage beats its heartbeat between units of work and whenever it waits, so a stage that stops
beating is hung; waits are bounded, so an abort request is honoured within one heartbeat interval.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import pickle
import select
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Iterator

import numpy as np

from posestream.stream.core.config import Config
from posestream.stream.core.errors import PosestreamError, StageError
from posestream.stream.metrics import LatencyRecorder, StageCounters
from posestream.stream.core.results import FrameResult, Poses
from posestream.stream.orphans import exit_with_parent
from posestream.stream.ring import FrameRef, FrameRing
from posestream.stream.sink_guard import guard_sink

log = logging.getLogger(__name__)

# Holder bits of the consumers that read pixels from the ring.
DETECT_BIT = 1
POSE_BIT = 2
SINKS_BIT = 4


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
    config: Config
    heartbeat_s: float
    log_level: int = logging.INFO


class StageRuntime:
    """Waiting, sending and reporting with heartbeats and abort checks, for one stage process."""

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.name = ctx.name
        self.config = ctx.config
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

    def receive(self, inputs: list[Connection], limit: int) -> list[Any]:
        """Up to `limit` messages: waits for the first, takes more only if already there. A batch
        ends at a stream's `EndOfStream`, so that marker always follows its stream's frames."""
        while True:
            if self.aborted:
                raise Aborted
            self.beat()
            ready = wait(inputs, timeout=self.ctx.heartbeat_s)
            if ready:
                break
        items: list[Any] = []
        for conn in ready:
            while len(items) < limit and conn.poll(0):
                message = conn.recv()
                self.counters.add("received")
                items.append(message)
                if isinstance(message, EndOfStream):
                    break
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


# -- stage bodies ---------------------------------------------------------------------------------

def run_source(rt: StageRuntime, spec: str, stream_id: int, policy: str | None, conds: list[Any],
               output: Connection) -> None:
    """Open the source, announce it, then copy frames into the ring assigned by the supervisor."""
    from posestream.stream.sources import open_source

    with contextlib.ExitStack() as stack:
        source = stack.enter_context(open_source(spec, rt.config))
        live = source.info.live if policy is None else policy == "live"
        rt.report("info", {"info": source.info, "live": live})
        ring_name, holders, stream = rt.control_message("ring")
        done = threading.Event()
        # frames() may block for a long time (a camera reconnecting has its own timeouts), so this
        # stage beats from a helper thread, which also closes the source when the pipeline stops.
        watcher = threading.Thread(target=_source_watch, args=(rt, source, done), daemon=True)
        watcher.start()
        stack.callback(_report_source_stats, rt, source, watcher, done)
        published = 0
        with FrameRing.attach(ring_name, conds[stream_id]) as ring:
            rt.ready()
            try:
                for frame in source.frames():
                    if rt.stopping:
                        break
                    slot = ring.acquire(live, lambda: rt.stopping)
                    if slot is None:
                        if rt.stopping:
                            break
                        continue  # live: every slot is busy downstream, this frame is dropped
                    enter = time.time()  # busy time excludes waiting for a slot (offline back-pressure)
                    try:
                        shape = ring.write(slot, frame.image)
                    except BaseException:
                        ring.abandon(slot)
                        raise
                    ring.publish(slot, frame.index, shape, holders)
                    ref = FrameRef(stream_id, stream, frame.index, slot, shape, frame.pts,
                                   frame.capture_ts, ring_name, frame.image_id)
                    exit_ = time.time()
                    rt.send(output, Work(ref, None, {rt.name: (enter, exit_)}))
                    rt.counters.work(enter, exit_, 1)
                    published += 1
                if rt.aborted:
                    raise Aborted
                rt.send(output, EndOfStream(stream_id, stream, published))
            finally:
                done.set()


def _source_watch(rt: StageRuntime, source: Any, done: threading.Event) -> None:
    """Beat, report changed source counters (a lost camera shows in the metrics while it is
    lost), and close the source when the pipeline stops."""
    reported: dict[str, int] = {}
    while not done.wait(rt.ctx.heartbeat_s):
        rt.beat()
        stats = source.stats.as_dict()
        if stats != reported:
            rt.report("source_stats", stats)
            reported = stats
        if rt.stopping:
            source.close()
            return


def _report_source_stats(rt: StageRuntime, source: Any, watcher: threading.Thread,
                         done: threading.Event) -> None:
    """The final counters, after the last frame (the source is closed right after this)."""
    done.set()
    watcher.join(rt.ctx.heartbeat_s + 1.0)
    with contextlib.suppress(OSError):
        rt.report("source_stats", source.stats.as_dict())


def _serve(rt: StageRuntime, inputs: list[Connection], output: Connection, streams: int, batch: int,
           process: Callable[[list[Work]], list[Work]]) -> None:
    """The loop of every middle stage: take a batch, process its frames, forward frames and
    end-of-stream markers in arrival order; return when every stream has ended."""
    rt.ready()
    open_streams = streams
    while open_streams:
        items = rt.receive(inputs, batch)
        works = [item for item in items if isinstance(item, Work)]
        if works:
            enter = time.time()
            done = process(works)
            exit_ = time.time()
            for work in done:
                work.timings[rt.name] = (enter, exit_)
                rt.send(output, work)
            rt.counters.work(enter, exit_, len(done))
        for item in items:
            if isinstance(item, EndOfStream):
                rt.send(output, item)
                open_streams -= 1


def _on_pixels(rings: RingCache, works: list[Work], bit: int,
               infer: Callable[[list[Any]], list[Any]]) -> list[Work]:
    """Run `infer` on the works' frames, read in place from their rings; release this stage's lease
    on every frame whatever happens, and store the poses `infer` returns on the works."""
    try:
        found = infer([rings.get(w.ref).view(w.ref) for w in works])
    finally:
        for w in works:
            rings.get(w.ref).release(w.ref, bit)
    for w, poses in zip(works, found):
        w.poses = poses
    return works


def run_detect(rt: StageRuntime, inputs: list[Connection], output: Connection, conds: list[Any]) -> None:
    """Find persons in every frame (batched across streams); skip references a live source reclaimed."""
    from posestream.stream.chain import build_detector

    detector = build_detector(rt.config)
    rings = RingCache(conds)

    def process(works: list[Work]) -> list[Work]:
        taken = [w for w in works if rings.get(w.ref).take(w.ref)]
        return _on_pixels(rings, taken, DETECT_BIT, lambda frames: detector.detect(frames)) if taken else []

    with _closing(detector), contextlib.closing(rings):
        _serve(rt, inputs, output, len(inputs), int(rt.config["detector"]["batch"]), process)


def run_pose(rt: StageRuntime, inputs: list[Connection], output: Connection, conds: list[Any],
             streams: int) -> None:
    """Keypoints inside the detected boxes; in one-stage mode the detector's keypoints pass through."""
    from posestream.stream.chain import build_estimator

    estimator = build_estimator(rt.config)
    batch = int(rt.config["pose"]["batch"])
    if estimator is None:
        _serve(rt, inputs, output, streams, batch, lambda works: works)
        return
    rings = RingCache(conds)

    def process(works: list[Work]) -> list[Work]:
        return _on_pixels(rings, works, POSE_BIT,
                          lambda frames: estimator.estimate(frames, [w.poses for w in works]))

    with _closing(estimator), contextlib.closing(rings):
        _serve(rt, inputs, output, streams, batch, process)


def run_nms(rt: StageRuntime, inputs: list[Connection], output: Connection, streams: int) -> None:
    """Pose NMS per frame."""
    from posestream.stream.chain import build_nms

    nms = build_nms(rt.config)

    def process(works: list[Work]) -> list[Work]:
        for w in works:
            w.poses = nms(w.poses)
        return works

    _serve(rt, inputs, output, streams, 16, process)


def run_track(rt: StageRuntime, inputs: list[Connection], output: Connection, streams: int) -> None:
    """One tracker per stream; ids from one allocator, so they are unique across streams."""
    from posestream.stream.core.contracts import IdAllocator
    from posestream.stream.core.registry import load

    tracker_cls = load("posestream.trackers", rt.config["tracker"]["plugin"])
    ids = IdAllocator()
    trackers: dict[int, Any] = {}

    def process(works: list[Work]) -> list[Work]:
        for w in works:
            tracker = trackers.get(w.ref.stream_id)
            if tracker is None:
                tracker = trackers[w.ref.stream_id] = tracker_cls(rt.config, ids)
            w.poses = tracker.update(w.poses)
        return works

    _serve(rt, inputs, output, streams, 16, process)


def run_sinks(rt: StageRuntime, inputs: list[Connection], conds: list[Any], sink_specs: list[tuple[str, str]],
              streams: int, latency_window: int) -> None:
    """Write every finished frame to every sink, in order per stream; measure end-to-end latency."""
    from posestream.stream.core.registry import load

    recorder = LatencyRecorder(latency_window)
    frames_out: dict[str, int] = {}
    rings = RingCache(conds)
    with contextlib.ExitStack() as stack:
        stack.callback(_final_report, rt, recorder, frames_out)
        stack.enter_context(contextlib.closing(rings))
        # Stream names (sinks serving several streams name their files by stream) and whether the
        # supervisor gave the sinks a lease on the pixels (decided from the sink classes).
        names, pixels = rt.control_message("streams")
        sinks = []
        for kind, target in sink_specs:
            cls = load("posestream.sinks", kind)
            takes_streams = "streams" in inspect.signature(cls).parameters
            sink = cls(rt.config, target, streams=names) if takes_streams else cls(rt.config, target)
            sink = guard_sink(sink, f"{kind}:{target}", rt.config)  # sinks.on_error: stop | continue
            stack.enter_context(_closing(sink))
            sinks.append(sink)
        rt.ready()
        open_streams = streams
        while open_streams:
            for item in rt.receive(inputs, 16):
                if isinstance(item, EndOfStream):
                    open_streams -= 1
                    continue
                enter = time.time()
                ref = item.ref
                frame = None
                if pixels:
                    ring = rings.get(ref)
                    frame = np.array(ring.view(ref))  # sinks may draw on it; the slot is freed now
                    ring.release(ref, SINKS_BIT)
                result = FrameResult(ref.stream, ref.frame_id, ref.shape[1], ref.shape[0], item.poses,
                                     ref.pts, ref.capture_ts, ref.image_id, item.timings)
                for sink in sinks:
                    sink.write(result, frame if getattr(sink, "needs_pixels", True) else None)
                exit_ = time.time()
                item.timings[rt.name] = (enter, exit_)
                latency = recorder.add(ref.stream, item.timings, ref.capture_ts, exit_)
                frames_out[ref.stream] = frames_out.get(ref.stream, 0) + 1
                rt.counters.work(enter, exit_, 1)
                rt.counters.set("last_latency_s", latency)


def _final_report(rt: StageRuntime, recorder: LatencyRecorder, frames_out: dict[str, int]) -> None:
    with contextlib.suppress(OSError):
        rt.report("report", {"latency": recorder.summary(), "frames_out": frames_out})


@contextlib.contextmanager
def _closing(obj: Any) -> Iterator[Any]:
    """Close plugins that have a `close()` (detectors and estimators may not need one)."""
    try:
        yield obj
    finally:
        close = getattr(obj, "close", None)
        if close is not None:
            close()


MODEL_BODIES = ("detect", "pose")
BODIES: dict[str, Callable[..., None]] = {
    "source": run_source, "detect": run_detect, "pose": run_pose, "nms": run_nms,
    "track": run_track, "sinks": run_sinks,
}


def stage_main(ctx: StageContext, body: str, params: dict[str, Any]) -> None:
    """Entry point of every stage process (a module-level function, so `spawn` can import it)."""
    # The supervisor owns Ctrl-C: it starts stages with SIGINT blocked; ignore it too in case a
    # stage was started another way. SIGTERM keeps its default so terminate() works.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_with_parent(ctx.abort, graceful=body == "sinks")  # a SIGKILLed supervisor leaves no stage behind
    if body not in MODEL_BODIES:
        # The model stages are the bottleneck and run multi-threaded inference; a preempted
        # inference thread stalls its siblings at every operator. The light stages yield to them.
        os.nice(int(ctx.config["pipeline"]["light_stage_nice"]))
    logging.basicConfig(level=ctx.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    rt = StageRuntime(ctx)
    try:
        BODIES[body](rt, **params)
    except Aborted:
        log.debug("stage %s aborted", ctx.name)
    except BaseException as exc:  # noqa: BLE001 - every failure goes to the supervisor, tagged
        failure = StageFailure.from_exception(ctx.name, exc)
        log.debug("stage %s failed:\n%s", ctx.name, failure.traceback)
        with contextlib.suppress(OSError):
            rt.report("failure", failure)
        sys.exit(1)
