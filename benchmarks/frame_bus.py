"""Frame bus throughput: 1280x720 BGR frames from one process to another through the shared-memory
frame ring (pixels written once into a slot, a small `FrameRef` through a pipe, read in place) versus
the same frames through `multiprocessing.Queue` (pickled, copied through a pipe, unpickled).

Both runs use the same spawn context, frame count, in-flight limit (ring slots = queue size) and
consumer work (check each frame's stamp pixel, so a frame that arrived wrong is an error, not a
number). Target: the ring moves at least 15x the queue's frames per second.

The ring's producer copies each frame into its slot once, as the pipeline's source stage does (the
decoder's output cannot be written into a slot directly: PyAV's colour conversion always allocates
its output frame). That copy bounds the ring, so the table also shows the same copies done alone in
one process: the ring's ceiling on this machine.

    python -m posestream.benchmarks.frame_bus [--frames 600] [--width 1280] [--height 720] [--slots 8]
                                   [--repeat 3] [--out x.json]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from posestream.stream.ring import FrameRef, FrameRing

POOL = 8  # distinct frames the producer cycles through; frame i carries stamp i % POOL


def _pool(height: int, width: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (height, width, 3), dtype=np.uint8) for _ in range(POOL)]
    for stamp, frame in enumerate(frames):
        frame[0, 0, 0] = stamp
    return frames


def _ring_producer(name: str, cond: Any, out: Any, frames: int, height: int, width: int, go: Any) -> None:
    pool = _pool(height, width)
    with FrameRing.attach(name, cond) as ring:
        go.wait()
        for i in range(frames):
            slot = ring.acquire(False, lambda: False)
            shape = ring.write(slot, pool[i % POOL])
            ring.publish(slot, i, shape, 1)
            out.send(FrameRef(0, "bench", i, slot, shape, None, time.time(), name))
        out.send(None)


def _ring_consumer(name: str, cond: Any, inp: Any, result: Any) -> None:
    count, bad = 0, 0
    with FrameRing.attach(name, cond) as ring:
        while (ref := inp.recv()) is not None:
            if not ring.take(ref):
                bad += 1
                continue
            frame = ring.view(ref)
            bad += int(frame[0, 0, 0]) != ref.frame_id % POOL
            del frame
            ring.release(ref, 1)
            count += 1
        result.send((count, bad, time.perf_counter()))


def _queue_producer(queue: Any, frames: int, height: int, width: int, go: Any) -> None:
    pool = _pool(height, width)
    go.wait()
    for i in range(frames):
        queue.put((i, pool[i % POOL]))
    queue.put(None)
    queue.close()
    queue.join_thread()


def _queue_consumer(queue: Any, result: Any) -> None:
    count, bad = 0, 0
    while (item := queue.get()) is not None:
        i, frame = item
        bad += int(frame[0, 0, 0]) != i % POOL
        count += 1
    result.send((count, bad, time.perf_counter()))


def _measure(ctx: Any, producer: Any, consumer: Any, go: Any, result: Any) -> tuple[float, int, int]:
    """Start both, release the producer, and time until the consumer has seen the last frame."""
    producer.start()
    consumer.start()
    time.sleep(1.0)  # both interpreters up and the pool built before the clock starts
    started = time.perf_counter()
    go.set()
    count, bad, finished = result.recv()
    producer.join(60)
    consumer.join(60)
    if producer.exitcode != 0 or consumer.exitcode != 0:
        raise RuntimeError(f"benchmark process failed (exit codes {producer.exitcode}, {consumer.exitcode})")
    return finished - started, count, bad


def run_ring(ctx: Any, frames: int, height: int, width: int, slots: int) -> tuple[float, int, int]:
    cond = ctx.Condition()
    with FrameRing.create(slots, height, width, cond) as ring:
        reader, writer = ctx.Pipe(duplex=False)
        res_r, res_w = ctx.Pipe(duplex=False)
        go = ctx.Event()
        producer = ctx.Process(target=_ring_producer, args=(ring.name, cond, writer, frames, height, width, go))
        consumer = ctx.Process(target=_ring_consumer, args=(ring.name, cond, reader, res_w))
        return _measure(ctx, producer, consumer, go, res_r)


def run_queue(ctx: Any, frames: int, height: int, width: int, slots: int) -> tuple[float, int, int]:
    queue = ctx.Queue(maxsize=slots)
    res_r, res_w = ctx.Pipe(duplex=False)
    go = ctx.Event()
    producer = ctx.Process(target=_queue_producer, args=(queue, frames, height, width, go))
    consumer = ctx.Process(target=_queue_consumer, args=(queue, res_w))
    return _measure(ctx, producer, consumer, go, res_r)


def run_copy(frames: int, height: int, width: int, slots: int) -> float:
    """Seconds for the ring producer's copies alone: `frames` copies from the pool into `slots`
    distinct frame buffers (so neither side stays in cache more than it does in the ring)."""
    pool = _pool(height, width)
    targets = [np.empty_like(pool[0]) for _ in range(slots)]
    for target in targets:
        target.fill(0)  # fault the pages in before timing, as the ring's are after the first lap
    started = time.perf_counter()
    for i in range(frames):
        targets[i % slots][...] = pool[i % POOL]
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--slots", type=int, default=8, help="ring slots = queue maxsize")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the best is reported")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    args = parser.parse_args(argv)
    ctx = multiprocessing.get_context("spawn")
    mb = args.width * args.height * 3 / 1e6
    best: dict[str, float] = {}
    for _ in range(args.repeat):  # interleaved, so a change in machine load hits every kind alike
        for name, fn in (("ring", run_ring), ("queue", run_queue)):
            seconds, count, bad = fn(ctx, args.frames, args.height, args.width, args.slots)
            if count != args.frames or bad:
                raise RuntimeError(f"{name}: {count} of {args.frames} frames arrived, {bad} wrong")
            best[name] = min(best.get(name, seconds), seconds)
        seconds = run_copy(args.frames, args.height, args.width, args.slots)
        best["copy"] = min(best.get("copy", seconds), seconds)
    results: dict[str, dict[str, Any]] = {}
    for name in ("ring", "queue"):
        fps = args.frames / best[name]
        results[name] = {"seconds": round(best[name], 4), "fps": round(fps, 1),
                         "mb_per_s": round(fps * mb, 1)}
    copy_s = best["copy"]
    copy_fps = args.frames / copy_s
    ratio = results["ring"]["fps"] / results["queue"]["fps"]
    print(f"frame bus: {args.frames} frames of {args.width}x{args.height} BGR ({mb:.2f} MB), "
          f"{args.slots} in flight, best of {args.repeat}")
    print(f"{'transport':<12}{'seconds':>10}{'frames/s':>12}{'MB/s':>10}")
    for name, r in results.items():
        print(f"{name:<12}{r['seconds']:>10.3f}{r['fps']:>12.1f}{r['mb_per_s']:>10.1f}")
    print(f"{'copy only':<12}{copy_s:>10.3f}{copy_fps:>12.1f}{copy_fps * mb:>10.1f}"
          "   (the ring's one copy per frame, in one process: its ceiling)")
    print(f"ring / queue throughput: {ratio:.1f}x (target >= 15x); ring at "
          f"{100 * results['ring']['fps'] / copy_fps:.0f}% of its copy ceiling, which is "
          f"{copy_fps / results['queue']['fps']:.1f}x the queue")
    if args.out:
        args.out.write_text(json.dumps({
            "benchmark": "frame_bus", "frames": args.frames, "width": args.width, "height": args.height,
            "slots": args.slots, "repeat": args.repeat, "results": results, "ratio": round(ratio, 2),
            "copy_only": {"seconds": round(copy_s, 4), "fps": round(copy_fps, 1),
                          "ceiling_ratio": round(copy_fps / results["queue"]["fps"], 2)},
            "target_ratio": 15, "python": platform.python_version(), "machine": platform.machine(),
        }, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
