"""The bodies of the pipeline's stages: what each stage process does with the messages it receives.

Every body has the signature `body(rt, io, **extra)`: `rt` is the process's `StageRuntime`, `io`
the `StageIO` the stage graph wired for it (pipes, ring conditions, stream count, batch limit,
holder bit) and `extra` the few parameters only one body takes (a source's spec, the sink list).
Which bodies run, in what order, is declared once in `stage_graph.GRAPH`.
"""
from __future__ import annotations

import collections
import contextlib
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from posestream.stream.core.results import FrameResult
from posestream.stream.core.settings import Settings
from posestream.stream.links import Link, Origin
from posestream.stream.metrics import LatencyRecorder
from posestream.stream.ring import FrameRef, FrameRing
from posestream.stream.sink_guard import GuardedSink
from posestream.stream.stage_runtime import Aborted, EndOfStream, RingCache, StageIO, StageRuntime, Work

if TYPE_CHECKING:
    from posestream.stream.core.contracts import TrackFrame


def run_source(rt: StageRuntime, io: StageIO, spec: str, stream_id: int, policy: str | None,
               scale_to: int | None = None) -> None:
    """Open the source, announce it, then copy frames into the ring assigned by the supervisor
    (scaled down to `scale_to` pixels on the long side when only the detector reads them)."""
    from posestream.stream.sources import open_source

    with contextlib.ExitStack() as stack:
        source = stack.enter_context(open_source(spec, rt.settings))
        if scale_to is not None:
            source.scale_down_to(scale_to)
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
        with FrameRing.attach(ring_name, io.conds[stream_id]) as ring:
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
                                   frame.capture_ts, ring_name, frame.image_id, frame.source_hw, live)
                    exit_ = time.time()
                    rt.send(io.output, Work(ref, None, {rt.name: (enter, exit_)}))
                    rt.counters.work(enter, exit_, 1)
                    published += 1
                if rt.aborted:
                    raise Aborted
                rt.send(io.output, EndOfStream(stream_id, stream, published))
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
            try:
                rt.report("source_stats", stats)
            except OSError:  # the supervisor is gone (killed): stop reading, quietly
                source.close()
                return
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


def _serve(rt: StageRuntime, io: StageIO, process: Callable[[list[Work]], list[Work]]) -> None:
    """The loop of every middle stage: take a batch, process its frames, forward frames and
    end-of-stream markers in arrival order; return when every stream has ended."""
    rt.ready()
    open_streams = io.streams
    while open_streams:
        items = rt.receive(io.inputs, io.batch)
        works = [item for item in items if isinstance(item, Work)]
        if works:
            enter = time.time()
            done = process(works)
            exit_ = time.time()
            for work in done:
                work.timings[rt.name] = (enter, exit_)
                rt.send(io.output, work)
            rt.counters.work(enter, exit_, len(done))
        for item in items:
            if isinstance(item, EndOfStream):
                rt.send(io.output, item)
                open_streams -= 1


def report_model(rt: StageRuntime, step: Link) -> None:
    """Tell the supervisor which model file, backend and precision this stage runs (a plugin that
    runs a model has `model_info`, see `engines.runner.ModelRunner`): the run's summary states it."""
    info = step.model_info
    if info:
        rt.report("model", dict(info))


def origin(ref: FrameRef) -> Origin:
    """What a link hears of a frame: its stream and number, and the source's size."""
    return Origin((ref.stream_id, ref.frame_id), ref.source_hw)


def run_link(rt: StageRuntime, io: StageIO, link: Callable[[Settings], Link]) -> None:
    """One link of the chain (detect, pose or NMS; which, the graph's row says), batched across
    streams. A stage with a lease reads its frames in place from the rings; the first reader after
    the sources claims each frame (`io.claims`) and skips references a live source reclaimed. A link
    that overlaps frames (`in_flight`) is fed one frame at a time."""
    step = link(rt.settings)
    report_model(rt, step)
    rings = RingCache(io.conds)

    def process(works: list[Work]) -> list[Work]:
        if io.claims:
            works = [w for w in works if rings.get(w.ref).take(w.ref)]
        if not works:
            return works
        poses = [w.poses for w in works]
        origins = [origin(w.ref) for w in works]
        if io.bit:
            try:
                found = step.process([rings.get(w.ref).view(w.ref) for w in works], poses, origins)
            finally:
                for w in works:
                    rings.get(w.ref).release(w.ref, io.bit)
        else:
            found = step.process([], poses, origins)
        for w, result in zip(works, found):
            w.poses = result
        return works

    with contextlib.closing(step), contextlib.closing(rings):
        if step.in_flight:
            _serve_overlapped(rt, io, step, rings)
        else:
            _serve(rt, io, process)


def _serve_overlapped(rt: StageRuntime, io: StageIO, step: Any, rings: RingCache) -> None:
    """`_serve` for a link that overlaps frames (`Detector.in_flight`): each frame is started as
    it arrives and its slot released at once; results leave in arrival order as they finish, so
    the engine is never idle while this process decodes, sends or waits for the next frame."""
    rt.ready()
    open_streams = io.streams
    started: collections.deque[tuple[Work, object, float]] = collections.deque()
    finished = 0

    def finish_oldest() -> None:
        nonlocal finished
        work, handle, enter = started.popleft()
        work.poses = step.finish(handle, work.ref.shape, origin(work.ref))
        work.timings[rt.name] = (enter, time.time())
        rt.send(io.output, work)
        finished += 1

    while open_streams:
        items = rt.receive(io.inputs, io.batch, block=not started)
        enter, finished = time.time(), 0
        if not items:  # nothing new: wait for the oldest frame instead
            finish_oldest()
        for item in items:
            if isinstance(item, EndOfStream):  # its stream's frames leave first
                while started:
                    finish_oldest()
                rt.send(io.output, item)
                open_streams -= 1
                continue
            ring = rings.get(item.ref)
            if io.claims and not ring.take(item.ref):
                continue  # a live source reclaimed the slot
            started_at = time.time()
            try:
                handle = step.start(ring.view(item.ref), origin(item.ref))
            finally:
                ring.release(item.ref, io.bit)
            started.append((item, handle, started_at))
            while len(started) > step.in_flight:
                finish_oldest()
        while started and step.finished(started[0][1]):
            finish_oldest()
        rt.counters.work(enter, time.time(), finished)  # busy: everything but waiting for input


def run_track(rt: StageRuntime, io: StageIO) -> None:
    """One tracker per stream (stream ids are the sources' indices), made before the first frame
    arrives, so what a tracker loads (the matcher's scipy) loads while the detector starts; ids from
    one allocator, so they are unique across streams. Each tracker hears the frame's number and clock
    (`TrackFrame`), and its pixels when the graph gave this stage a lease (`io.bit`: the tracker
    `reads_pixels`), released as soon as it returns."""
    from posestream.stream.core.contracts import IdAllocator
    from posestream.stream.core.registry import load_plugin

    settings = rt.settings
    tracker_cls = load_plugin("posestream.trackers", settings.tracker.plugin)
    ids = IdAllocator()
    trackers = [tracker_cls(settings, ids) for _ in range(io.streams)]
    rings = RingCache(io.conds)

    def process(works: list[Work]) -> list[Work]:
        for w in works:
            tracker = trackers[w.ref.stream_id]
            if not io.bit:
                w.poses = tracker.update(w.poses, track_frame(w.ref, None))
                continue
            ring = rings.get(w.ref)
            try:
                w.poses = tracker.update(w.poses, track_frame(w.ref, ring.view(w.ref)))
            finally:
                ring.release(w.ref, io.bit)
        return works

    with contextlib.closing(rings):
        _serve(rt, io, process)


def track_frame(ref: FrameRef, image: np.ndarray | None) -> "TrackFrame":
    """What the tracker hears about the frame of `ref`: its number, its stream's clock (capture time
    for live sources, presentation time for files) and, when given, its pixels and their scale."""
    from posestream.stream.core.contracts import TrackFrame

    time_s = ref.capture_ts if ref.live else ref.pts
    scale = 1.0 if image is None else image.shape[1] / ref.frame_size[0]
    return TrackFrame(ref.frame_id, time_s, image, scale)


def run_sinks(rt: StageRuntime, io: StageIO, sink_specs: list[tuple[str, str]],
              latency_window: int) -> None:
    """Write every finished frame to every sink, in order per stream, and tell every sink when a
    stream has ended (with the last frame written); measure end-to-end latency."""
    from posestream.stream.core.registry import load_plugin

    settings = rt.settings
    recorder = LatencyRecorder(latency_window)
    frames_out: dict[str, int] = {}
    last_frame: dict[str, int] = {}
    rings = RingCache(io.conds)
    with contextlib.ExitStack() as stack:
        stack.callback(_final_report, rt, recorder, frames_out)
        stack.enter_context(contextlib.closing(rings))
        # Stream names (sinks serving several streams name their files by stream). The supervisor
        # gives this stage a lease on the pixels (io.bit) only when some sink needs them.
        names = rt.control_message("streams")
        sinks = []
        for kind, target in sink_specs:
            sink = load_plugin("posestream.sinks", kind)(settings, target, names)
            sink = GuardedSink(sink, f"{kind}:{target}", settings.sinks.on_error)  # stop | continue
            stack.enter_context(contextlib.closing(sink))
            sinks.append(sink)
        rt.ready()
        open_streams = io.streams
        while open_streams:
            for item in rt.receive(io.inputs, io.batch):
                if isinstance(item, EndOfStream):
                    for sink in sinks:
                        sink.end_stream(item.stream, last_frame.get(item.stream))
                    open_streams -= 1
                    continue
                enter = time.time()
                ref = item.ref
                frame = None
                if io.bit:
                    ring = rings.get(ref)
                    frame = np.array(ring.view(ref))  # sinks may draw on it; the slot is freed now
                    ring.release(ref, io.bit)
                result = FrameResult(ref.stream, ref.frame_id, *ref.frame_size, item.poses,
                                     ref.pts, ref.capture_ts, ref.image_id, item.timings)
                for sink in sinks:
                    sink.write(result, frame if sink.needs_pixels else None)
                exit_ = time.time()
                item.timings[rt.name] = (enter, exit_)
                latency = recorder.add(ref.stream, item.timings, ref.capture_ts, exit_)
                frames_out[ref.stream] = frames_out.get(ref.stream, 0) + 1
                last_frame[ref.stream] = ref.frame_id
                rt.counters.work(enter, exit_, 1)
                rt.counters.set("last_latency_s", latency)


def _final_report(rt: StageRuntime, recorder: LatencyRecorder, frames_out: dict[str, int]) -> None:
    with contextlib.suppress(OSError):
        rt.report("report", {"latency": recorder.summary(), "frames_out": frames_out})
