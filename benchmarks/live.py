"""Live latency: a video replayed as a live camera at a fixed frame rate through the whole pipeline.

The source is an FFmpeg lavfi `movie` graph paced in real time (see `benchmarks.clips`), run under
the live policy, so when the machine falls behind the pipeline drops the oldest waiting frame
instead of queueing. Frames leave through the ZMQ sink on a private ipc socket; a subscriber thread
in this process records every message's `capture_ts` and `publish_ts`, which gives the end-to-end
latency of each frame over time, not just the run's percentiles. A bounded latency shows as a flat
line: the trend is the least-squares slope over the run, start-up excluded.

    python -m posestream.benchmarks.live [--video PATH] [--fps 30] [--seconds 60] [--out x.json]
                                         [--against KEY=VALUE,... [--rounds 2]]

`--against` also runs the configuration with those overrides, alternated with the default round
by round (the CPU is shared), and prints the ratio of their steady p99 latencies (median of rounds).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from posestream.benchmarks.report import emit
from posestream.stream.core.config import load_config, parse_value
from posestream.stream.core.settings import Settings
from posestream.stream.metrics import percentiles_ms

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _quiet(logger_name: str, level: int = logging.ERROR) -> Iterator[None]:
    """Silence one logger for a while: the client warns about every gap, and gaps are expected
    here (live drops); they are counted instead."""
    logger = logging.getLogger(logger_name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


def _collect(endpoint: str, samples: list[tuple[int, float, float]], stop: threading.Event,
             ready: threading.Event) -> None:
    """Receive until `stop`, then drain what is still queued; one (frame, capture, publish) each."""
    from posestream.stream.client import Subscriber

    with Subscriber(endpoint, rcvhwm=100_000) as sub:
        ready.set()
        while True:
            message = sub.receive(timeout=0.2)
            if message is not None:
                samples.append((message["frame"], message["capture_ts"], message["publish_ts"]))
            elif stop.is_set():
                return


def latency_trend(samples: list[tuple[int, float, float]], window_s: float, warmup_s: float,
                  drain_s: float) -> dict[str, Any]:
    """Latency percentiles per time window, and the steady part's percentiles and linear trend:
    frames captured after `warmup_s` and more than `drain_s` before the last capture. The last
    frames are the ring's backlog when the replay stops; a camera that kept going would have
    replaced them with newer ones, so their growing wait is an artefact of the replay ending."""
    if not samples:
        return {"windows": [], "slope_ms_per_s": None, "rise_ms": None, "series": [],
                "steady_ms": percentiles_ms([]), "steady_mean_ms": None, "steady_frames": 0}
    data = np.array(sorted(samples, key=lambda s: s[1]), dtype=np.float64)
    t = data[:, 1] - data[0, 1]
    latency = data[:, 2] - data[:, 1]
    windows = []
    for start in np.arange(0.0, float(t[-1]) + 1e-9, window_s):
        mask = (t >= start) & (t < start + window_s)
        if mask.any():
            p = percentiles_ms(latency[mask])
            windows.append({"start_s": round(float(start), 2), "frames": int(mask.sum()), **p})
    steady = (t >= warmup_s) & (t <= t[-1] - drain_s)
    slope = rise = None
    if steady.sum() >= 3 and np.ptp(t[steady]) > 0:
        slope = float(np.polyfit(t[steady], latency[steady] * 1e3, 1)[0])
        rise = slope * float(np.ptp(t[steady]))
    return {"windows": windows, "steady_frames": int(steady.sum()),
            "steady_ms": percentiles_ms(latency[steady]),
            "steady_mean_ms": round(1e3 * float(latency[steady].mean()), 2) if steady.any() else None,
            "slope_ms_per_s": None if slope is None else round(slope, 3),
            "rise_ms": None if rise is None else round(rise, 2),
            "series": [[round(float(a), 4), round(float(b) * 1e3, 2)] for a, b in zip(t, latency)]}


def run_live(config: Settings, video: Path, fps: float, seconds: float, scratch: Path,
             window_s: float = 5.0) -> dict[str, Any]:
    """Replay `video` at `fps` for `seconds` through the pipeline (live policy, ZMQ sink); returns
    the pipeline's report, the end-to-end latency percentiles and their trend over the run."""
    from posestream.benchmarks.clips import live_replay_spec
    from posestream.stream.pipeline import Pipeline

    offered = max(1, round(fps * seconds))
    spec = live_replay_spec(video, fps, offered, scratch)
    cfg = config.with_overrides({"source.lavfi_realtime": True})
    endpoint = f"ipc://{scratch / 'live-bench.sock'}"
    samples: list[tuple[int, float, float]] = []
    stop, ready = threading.Event(), threading.Event()
    with _quiet("posestream.stream.client"):
        collector = threading.Thread(target=_collect, args=(endpoint, samples, stop, ready),
                                     name="live-bench-subscriber", daemon=True)
        collector.start()
        ready.wait(10)
        try:
            with Pipeline(cfg, [spec], [f"zmq:{endpoint}"], policy="live") as pipeline:
                report = pipeline.run()
        finally:
            stop.set()
            collector.join(10)
    stream = next(iter(report.streams.values()), {})
    # Mean processing time of one frame in this very run: every stage's busy time per frame it
    # handled (so the latency target compares like with like, whatever else loads the machine).
    busy_ms = {name: 10.0 * s["busy_pct"] * report.elapsed_s / s["frames"]
               for name, s in report.stages.items() if s["frames"]}
    latencies = [(p - c) for _, c, p in samples]
    warmup = min(2.0, seconds / 5)
    drain = cfg.pipeline.ring_slots / fps
    return {
        "fps_in": fps, "seconds": seconds, "frames_offered": offered,
        "frames_in": stream.get("frames_in", 0), "frames_out": len(samples),
        "dropped": stream.get("dropped", 0),
        "drop_pct": round(100.0 * (offered - len(samples)) / offered, 1),
        "fps_out": round(len(samples) / report.elapsed_s, 2) if report.elapsed_s else None,
        "latency_all_ms": percentiles_ms(latencies),
        "processing_ms": round(sum(busy_ms.values()), 2),
        "processing_ms_by_stage": {k: round(v, 2) for k, v in busy_ms.items()},
        "trend": latency_trend(samples, window_s, warmup, drain), "warmup_s": warmup,
        "drain_s": round(drain, 3),
        "report": report.to_dict(),
    }


def format_result(result: dict[str, Any]) -> list[str]:
    trend = result["trend"]
    lat, every = trend["steady_ms"], result["latency_all_ms"]
    lines = [f"live: {result['fps_in']:g} fps in for {result['seconds']:g} s: {result['frames_out']} of "
             f"{result['frames_offered']} frames out ({result['drop_pct']}% dropped), "
             f"{result['fps_out']} FPS out",
             f"end-to-end latency ms, steady ({trend['steady_frames']} frames: after {result['warmup_s']:g} s "
             f"warm-up, before the last {result['drain_s']:g} s drain): p50 {lat['p50']}  p95 {lat['p95']}  "
             f"p99 {lat['p99']}; all frames: p50 {every['p50']}  p99 {every['p99']}",
             f"trend {trend['slope_ms_per_s']} ms/s = {trend['rise_ms']} ms over the steady part; mean "
             f"processing time per frame in this run {result['processing_ms']} ms (sum of stage busy "
             "time per frame)",
             f"{'window s':>9}{'frames':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"]
    for w in trend["windows"]:
        lines.append(f"{w['start_s']:>9.1f}{w['frames']:>8}{w['p50'] or 0:>9.1f}{w['p95'] or 0:>9.1f}"
                     f"{w['p99'] or 0:>9.1f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    from posestream.benchmarks.clips import default_videos

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--out", type=Path, help="write the result as JSON")
    parser.add_argument("--against", metavar="KEY=VALUE,...",
                        help="also run with these config overrides, rounds alternated; p99 ratio")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each with --against")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    config = load_config()
    with tempfile.TemporaryDirectory(prefix="posestream-live-") as scratch:
        video = args.video or default_videos(config, Path(scratch))[0]
        if not args.against:
            result = run_live(config, video, args.fps, args.seconds, Path(scratch))
            emit(format_result(result), result, args.out)
            return 0
        pairs = (item.split("=", 1) for item in args.against.split(",") if item)
        other = load_config(overrides={key: parse_value(value) for key, value in pairs})
        runs: dict[str, list[dict[str, Any]]] = {"default": [], args.against: []}
        for _ in range(max(args.rounds, 1)):
            for name, cfg in (("default", config), (args.against, other)):
                runs[name].append(run_live(cfg, video, args.fps, args.seconds, Path(scratch)))
    p99 = {name: float(np.median([r["trend"]["steady_ms"]["p99"] for r in rs])) for name, rs in runs.items()}
    lines = [f"{name}: steady p99 per round {[r['trend']['steady_ms']['p99'] for r in rs]} ms, "
             f"p50 {[r['trend']['steady_ms']['p50'] for r in rs]} ms, dropped "
             f"{[r['drop_pct'] for r in rs]} %" for name, rs in runs.items()]
    ratio = p99[args.against] / p99["default"] if p99["default"] else float("nan")
    lines.append(f"p99 ratio ({args.against}) / default = {ratio:.3f} (median of {args.rounds} rounds each)")
    emit(lines, {"runs": runs, "p99_ms": p99, "p99_ratio": ratio}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
