"""ZMQ stream: publish→receive latency and message rate for 1 and 10 subscribers.

A `ZmqSink` in this process publishes frames holding real persons (COCO annotations from the shared
data); every subscriber is its own process running `stream.client.Subscriber`, so decoding and
validation are part of the cost, as for a real consumer. Two runs per subscriber count:
- latency: `--rate` frames/s for `--messages` frames; latency = receive time - `publish_ts` (one
  clock, one machine), p50/p99 over every subscriber's messages;
- throughput: `--messages` frames as fast as the sink can publish; messages/s delivered to each
  subscriber (the slowest is reported) and frames lost to the high-water mark.

With `--pipeline VIDEO` it instead runs the real pipeline on VIDEO (offline, every frame) with a
zmq sink, alternately without subscribers and with one subscriber that sleeps `--slow-ms` per
message, and compares the pipeline's FPS (the slow subscriber must cost it nothing).

    python -m posestream.benchmarks.zmq_latency [--subscribers 1,10] [--messages 2000] [--rate 100]
                                     [--persons 5] [--endpoint tcp://127.0.0.1:*] [--out x.json]
    python -m posestream.benchmarks.zmq_latency --pipeline VIDEO [--repeat 2] [--slow-ms 100] [--out x.json]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from posestream.benchmarks.report import emit
from posestream.benchmarks.clips import looped_clip
import zmq

from posestream.plugins.sinks.zmq_sink import ZmqSink
from posestream.stream.client import Subscriber
from posestream.stream.core.config import load_config, shared_dir
from posestream.stream.core.results import FrameResult, Poses

QUIET_S = 2.0  # a subscriber stops when nothing arrived for this long


def coco_persons(count: int) -> Poses:
    """`count` annotated persons from the shared COCO set (repeated if there are fewer)."""
    data = json.loads((shared_dir() / "data/coco/person_keypoints.json").read_text())
    anns = [a for a in data["annotations"] if a["num_keypoints"]]
    anns = [anns[i % len(anns)] for i in range(count)]
    return Poses(np.array([a["bbox"] for a in anns]).reshape(-1, 4), np.full(count, 0.9),
                 np.array([a["keypoints"] for a in anns]).reshape(count, 17, 3),
                 np.full(count, 0.8), ids=np.arange(count))


def subscriber_main(url: str, expected: int, ready: Any, results: Any) -> None:
    """Receive until the last frame of stream 'bench' or `QUIET_S` of silence; report timings."""
    latencies, first, last, received = [], None, None, 0
    with Subscriber(url, rcvhwm=100_000) as sub:
        while True:
            message = sub.receive(QUIET_S if first is not None else 60.0)
            now = time.time()
            if message is None:
                break
            if message["stream"] == "warmup":
                ready.set()
                continue
            first = now if first is None else first
            last = now
            received += 1
            latencies.append(now - message["publish_ts"])
            if message["frame"] == expected - 1:
                break
    results.put({"received": received, "missing": sub.stats.missing,
                 "span_s": (last - first) if first is not None else 0.0,
                 "latencies_ms": [1e3 * x for x in latencies]})


def run_once(subscribers: int, messages: int, rate: float, persons: Poses, endpoint: str,
             hwm: int) -> dict[str, Any]:
    """One publisher, `subscribers` processes; `rate` 0 = as fast as possible."""
    context = mp.get_context("spawn")
    config = load_config(overrides={"zmq.hwm": hwm, "zmq.wait_for_subscriber_s": 0.0})
    results = context.Queue()
    with ZmqSink(config, endpoint) as sink:
        workers = []
        for _ in range(subscribers):
            ready = context.Event()
            process = context.Process(target=subscriber_main,
                                      args=(sink.bound_endpoint, messages, ready, results))
            process.start()
            workers.append((process, ready))
        deadline, number = time.monotonic() + 120, 0
        while not all(ready.is_set() for _, ready in workers):  # every subscriber is connected
            if time.monotonic() > deadline:
                raise RuntimeError("subscribers did not connect within 120 s")
            sink.write(FrameResult("warmup", number, 640, 480, persons), None)
            number += 1
            time.sleep(0.02)
        time.sleep(0.2)
        start = time.perf_counter()
        for number in range(messages):
            if rate:
                delay = start + number / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            sink.write(FrameResult("bench", number, 640, 480, persons, capture_ts=time.time()), None)
        publish_s = time.perf_counter() - start
        reports = [results.get(timeout=120 + QUIET_S) for _ in workers]
        for process, _ in workers:
            process.join(timeout=30)
    latencies = np.concatenate([r["latencies_ms"] for r in reports])
    delivered = [r["received"] / r["span_s"] for r in reports if r["span_s"] > 0]
    received = sum(r["received"] for r in reports)
    return {"subscribers": subscribers, "mode": f"{rate:g}/s" if rate else "flood",
            "messages": messages, "payload_persons": len(persons),
            "publish_msg_s": messages / publish_s,
            "slowest_subscriber_msg_s": min(delivered) if delivered else 0.0,
            "lost_pct": 100.0 * (1 - received / (messages * subscribers)),
            "p50_ms": float(np.percentile(latencies, 50)) if len(latencies) else float("nan"),
            "p99_ms": float(np.percentile(latencies, 99)) if len(latencies) else float("nan")}


def run_pipeline(video: Path, slow_ms: float | None, input_size: int, hwm: int) -> dict[str, Any]:
    """One offline pipeline run publishing on ipc; `slow_ms` None = nobody subscribed."""
    from posestream.stream.pipeline import Pipeline

    # No slow-joiner wait: without a subscriber it would add up to a second to one kind of run only.
    # Small kernel buffers, so the slow subscriber's losses happen mid-stream, where it sees them.
    config = load_config(overrides={"detector.input_size": input_size, "zmq.hwm": hwm,
                                    "zmq.wait_for_subscriber_s": 0.0, "zmq.sndbuf": 4096})
    with tempfile.TemporaryDirectory() as tmp:
        endpoint = f"ipc://{tmp}/pose.sock"
        sub = Subscriber(endpoint, rcvhwm=1, rcvbuf=4096) if slow_ms is not None else None
        done, received = threading.Event(), [0]

        def consume() -> None:  # after the run, read what is still queued (reveals last gaps)
            while True:
                if sub.receive(0.2 if not done.is_set() else 1.0) is not None:
                    received[0] += 1
                    time.sleep(slow_ms / 1000)
                elif done.is_set():
                    return

        reader = threading.Thread(target=consume) if sub is not None else None
        if reader is not None:
            reader.start()
        try:
            with Pipeline(config, [str(video)], [f"zmq:{endpoint}"], policy="offline") as pipeline:
                report = pipeline.run()
        finally:
            done.set()
            if reader is not None:
                reader.join()
                sub.close()
    return {"subscriber": "none" if slow_ms is None else f"sleeps {slow_ms:g} ms/msg",
            "frames": report.stages["sinks"]["frames"],
            "fps": round(report.stages["sinks"]["frames"] / report.elapsed_s, 2),  # wall clock, start-up included
            "received": received[0] if sub is not None else None,
            "missing": sub.stats.missing if sub is not None else None}


def pipeline_main(args: argparse.Namespace) -> int:
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        # A longer clip (the video repeated, not re-encoded) so start-up is a small part of each run.
        video, _ = looped_clip(args.pipeline, args.min_frames, Path(scratch) / "clip.mp4")
        for _ in range(max(args.repeat, 1)):  # alternate, so CPU noise from others hits both alike
            rows.append(run_pipeline(video, None, args.input_size, args.hwm))
            rows.append(run_pipeline(video, args.slow_ms, args.input_size, args.hwm))
    header = f"{'subscriber':<20} {'frames':>6} {'fps':>6} {'received':>8} {'missing':>7}"
    lines = [header, "-" * len(header)]
    lines += [f"{r['subscriber']:<20} {r['frames']:>6} {r['fps']:>6.2f} "
              f"{'-' if r['received'] is None else r['received']:>8} "
              f"{'-' if r['missing'] is None else r['missing']:>7}" for r in rows]
    base = np.mean([r["fps"] for r in rows if r["received"] is None])
    slow = np.mean([r["fps"] for r in rows if r["received"] is not None])
    lines.append(f"mean fps without subscriber {base:.2f}, with slow subscriber {slow:.2f} "
                 f"({100 * (slow / base - 1):+.1f} %)")
    report = {"benchmark": "zmq_pipeline_slow_subscriber", "video": str(args.pipeline),
              "input_size": args.input_size, "hwm": args.hwm, "slow_ms": args.slow_ms, "runs": rows,
              "fps_without": base, "fps_with_slow_subscriber": slow}
    emit(lines, report, args.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", default="1,10", help="comma-separated subscriber counts")
    parser.add_argument("--messages", type=int, default=2000, help="frames per run")
    parser.add_argument("--rate", type=float, default=100.0, help="frames/s in the latency run")
    parser.add_argument("--persons", type=int, default=5, help="persons per frame")
    parser.add_argument("--endpoint", default="tcp://127.0.0.1:*", help="where the sink binds")
    parser.add_argument("--hwm", type=int, default=load_config().zmq.hwm,
                        help="sink high-water mark (default: zmq.hwm)")
    parser.add_argument("--pipeline", type=Path, metavar="VIDEO",
                        help="compare pipeline FPS without / with a slow subscriber instead")
    parser.add_argument("--slow-ms", type=float, default=100.0, help="slow subscriber's sleep")
    parser.add_argument("--repeat", type=int, default=2, help="pipeline runs of each kind")
    parser.add_argument("--min-frames", type=int, default=288, help="pipeline clip length (video looped)")
    parser.add_argument("--input-size", type=int, default=320, help="detector input (pipeline)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.pipeline:
        return pipeline_main(args)
    persons = coco_persons(args.persons)
    rows = []
    for count in (int(n) for n in args.subscribers.split(",")):
        for rate in (args.rate, 0.0):
            rows.append(run_once(count, args.messages, rate, persons, args.endpoint, args.hwm))

    header = (f"{'subs':>4} {'mode':>7} {'msgs':>6} {'pub msg/s':>10} {'sub msg/s':>10} "
              f"{'lost %':>7} {'p50 ms':>8} {'p99 ms':>8}")
    lines = [header, "-" * len(header)]
    lines += [f"{r['subscribers']:>4} {r['mode']:>7} {r['messages']:>6} {r['publish_msg_s']:>10.0f} "
              f"{r['slowest_subscriber_msg_s']:>10.0f} {r['lost_pct']:>7.1f} {r['p50_ms']:>8.2f} "
              f"{r['p99_ms']:>8.2f}" for r in rows]
    report = {"benchmark": "zmq_latency", "python": platform.python_version(),
              "machine": platform.machine(), "zmq": zmq.zmq_version(),
              "pyzmq": zmq.__version__, "endpoint": args.endpoint, "hwm": args.hwm,
              "results": rows}
    emit(lines, report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
