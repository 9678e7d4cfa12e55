"""The sequential baseline: one process, one loop, decode -> detect -> pose -> NMS -> track -> sinks.

Same source reader, chain links (from `stage_graph.GRAPH`, as the pipeline's stages build them),
plugins, engines, threads and sinks as the pipeline, so the only difference
measured is the pipeline's overlap of stages (and its overhead). It is also what a user writes
first, and what the pipeline must beat. Model loading happens before the clock starts, as in the
pipeline, whose stages load their models before the first frame.

    python -m posestream.benchmarks.sequential --video PATH [--sink KIND:TARGET ...] [--out x.json]
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from posestream.benchmarks.report import emit
from posestream.stream.core.config import load_config
from posestream.stream.core.settings import Settings
from posestream.stream.metrics import percentiles_ms

def run_sequential(settings: Settings, video: Path, sink_specs: list[tuple[str, str]],
                   max_frames: int | None = None) -> dict[str, Any]:
    """Process `video` frame by frame; returns FPS, per-stage time per frame and persons per frame
    (detections entering the pose stage, the count top-down pose cost grows with)."""
    from posestream.stream.chain import PoseChain
    from posestream.stream.core.contracts import IdAllocator, TrackFrame
    from posestream.stream.core.registry import load_plugin
    from posestream.stream.core.results import FrameResult, Poses
    from posestream.stream.links import Origin
    from posestream.stream.sources import open_source
    from posestream.stream.stage_graph import decode_long_side, plan

    detections = 0
    with contextlib.ExitStack() as stack:
        chain = stack.enter_context(PoseChain(settings))
        spent: dict[str, list[float]] = {name: [] for name in ("decode", *(n for n, _ in chain.steps),
                                                               "track", "sinks")}
        tracker_cls = load_plugin("posestream.trackers", settings.tracker.plugin)
        tracker = tracker_cls(settings, IdAllocator())
        tracker_pixels = tracker_cls.reads_pixels(settings)
        source = stack.enter_context(open_source(str(video), settings))
        # decode at the size the pipeline would (the detector's, when only it reads pixels)
        sink_pixels = any(load_plugin("posestream.sinks", kind).needs_pixels for kind, _ in sink_specs)
        long_side = decode_long_side(settings, plan(settings, 1, sink_pixels))
        if long_side is not None:
            source.scale_down_to(long_side)
        sinks = []
        for kind, target in sink_specs:
            sink = load_plugin("posestream.sinks", kind)(settings, target, [source.info.name])
            stack.callback(sink.close)
            sinks.append(sink)
        frames = source.frames()
        count = 0
        start = time.perf_counter()
        while max_frames is None or count < max_frames:
            t0 = time.perf_counter()
            frame = next(frames, None)
            if frame is None:
                break
            spent["decode"].append(time.perf_counter() - t0)
            poses = [Poses.empty()]
            origins = [Origin((0, frame.index), frame.source_hw)]  # as the detect stage hears it
            for index, (name, step) in enumerate(chain.steps):
                t1 = time.perf_counter()
                poses = step.process([frame.image], poses, origins)
                spent[name].append(time.perf_counter() - t1)
                if index == 0:
                    detections += len(poses[0])  # what enters the pose stage
            t2 = time.perf_counter()
            height, width = frame.source_hw or frame.image.shape[:2]
            tracked = tracker.update(poses[0], TrackFrame(frame.index, frame.pts,
                                                          frame.image if tracker_pixels else None,
                                                          frame.image.shape[1] / width))
            t3 = time.perf_counter()
            spent["track"].append(t3 - t2)
            result = FrameResult(source.info.name, frame.index, width, height, tracked, frame.pts,
                                 frame.capture_ts, frame.image_id)
            for sink in sinks:
                sink.write(result, frame.image if sink.needs_pixels else None)
            spent["sinks"].append(time.perf_counter() - t3)
            count += 1
        elapsed = time.perf_counter() - start
    return {
        "frames": count, "elapsed_s": round(elapsed, 3),
        "fps": round(count / elapsed, 2) if elapsed > 0 and count else None,
        "mean_frame_ms": round(1e3 * elapsed / count, 2) if count else None,
        "persons_per_frame": round(detections / count, 2) if count else 0.0,
        "stages": {name: {"mean_ms": round(1e3 * float(np.mean(v)), 2) if v else None,
                          "share_pct": round(100.0 * sum(v) / elapsed, 1) if elapsed > 0 else None,
                          "latency_ms": percentiles_ms(v)} for name, v in spent.items()},
    }


def format_result(result: dict[str, Any]) -> list[str]:
    lines = [f"sequential: {result['frames']} frames in {result['elapsed_s']:.2f} s = "
             f"{result['fps']} FPS ({result['mean_frame_ms']} ms/frame, "
             f"{result['persons_per_frame']} persons/frame)",
             f"{'stage':<8}{'mean ms':>9}{'share %':>9}{'p50 ms':>9}{'p99 ms':>9}"]
    for name, s in result["stages"].items():
        lat = s["latency_ms"]
        lines.append(f"{name:<8}{s['mean_ms'] or 0:>9.2f}{s['share_pct'] or 0:>9.1f}"
                     f"{lat['p50'] or 0:>9.2f}{lat['p99'] or 0:>9.2f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    from posestream.stream.pipeline import parse_sink

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, required=True)
    parser.add_argument("--sink", action="append", default=[], metavar="KIND:TARGET")
    parser.add_argument("--frames", type=int, help="stop after this many frames")
    parser.add_argument("--out", type=Path, help="write the result as JSON")
    args = parser.parse_args(argv)
    result = run_sequential(load_config(), args.video, [parse_sink(s) for s in args.sink], args.frames)
    emit(format_result(result), result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
