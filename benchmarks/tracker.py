"""Tracker update cost per frame for scenes of 1, 10 and 50 persons.

Synthetic walkers (a COCO-17 stick figure per person, random size, speed and pose jitter, 2 % missed
detections, scores spread over both ByteTrack passes) in a 1920x1080 frame, so the number measures
the tracker alone: prediction, OKS/IoU matrices, assignment and correction. Target: under 1 ms per
frame for 10 persons.

    python -m posestream.benchmarks.tracker [--persons 1,10,50] [--frames 500] [--repeat 3] [--tracker oks-byte]
                                 [--out x.json]
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

from posestream.stream.core import registry
from posestream.stream.core.contracts import IdAllocator
from posestream.benchmarks.report import emit
from posestream.stream.core.config import load_config
from posestream.stream.core.results import Poses

WIDTH, HEIGHT = 1920, 1080
# COCO-17 keypoints as fractions of the person box (u across, v down).
_FIGURE = np.array([
    (0.50, 0.08), (0.54, 0.06), (0.46, 0.06), (0.58, 0.07), (0.42, 0.07),
    (0.72, 0.20), (0.28, 0.20), (0.80, 0.36), (0.20, 0.36), (0.84, 0.50), (0.16, 0.50),
    (0.64, 0.52), (0.36, 0.52), (0.64, 0.73), (0.36, 0.73), (0.64, 0.95), (0.36, 0.95),
])


def synthetic_frames(persons: int, frames: int, seed: int = 0) -> list[Poses]:
    """`frames` frames of `persons` walkers bouncing inside the image."""
    rng = np.random.default_rng(seed)
    height = rng.uniform(100, 260, persons)
    size = np.stack([0.4 * height, height], axis=1)
    position = rng.uniform([0, 0], [WIDTH, HEIGHT], (persons, 2)) - size / 2
    velocity = rng.uniform(-4, 4, (persons, 2))
    base_score = rng.uniform(0.65, 0.95, persons)
    result = []
    for _ in range(frames):
        position += velocity
        outside = (position < 0) | (position + size > [WIDTH, HEIGHT])
        velocity[outside] *= -1
        seen = rng.random(persons) >= 0.02
        boxes = np.concatenate([position, size], axis=1)[seen]
        points = position[seen, None, :] + _FIGURE[None] * size[seen, None, :]
        points += rng.normal(0, 2.0, points.shape)
        keypoints = np.concatenate([points, rng.uniform(0.3, 1.0, points.shape[:2] + (1,))], 2)
        scores = np.clip(base_score[seen] + rng.normal(0, 0.1, seen.sum()), 0.0, 1.0)
        result.append(Poses(boxes, scores, keypoints, scores))
    return result


def measure(tracker_name: str, persons: int, frames: int, warmup: int, seed: int) -> dict:
    """Time `update` per frame (warm-up frames excluded) and count the distinct confirmed ids
    (ideally `persons`; more means tracks broke or were swapped)."""
    tracker = registry.load("posestream.trackers", tracker_name)(load_config(), IdAllocator())
    scene = synthetic_frames(persons, warmup + frames, seed)
    times, ids = [], set()
    for index, poses in enumerate(scene):
        start = time.perf_counter()
        out = tracker.update(poses)
        elapsed = time.perf_counter() - start
        if index >= warmup:
            times.append(elapsed * 1e3)
        ids.update(out.ids[out.ids >= 0].tolist())
    ms = np.asarray(times)
    return {"tracker": tracker_name, "persons": persons, "frames": frames,
            "mean_ms": float(ms.mean()), "p50_ms": float(np.percentile(ms, 50)),
            "p95_ms": float(np.percentile(ms, 95)), "max_ms": float(ms.max()),
            "distinct_ids": len(ids)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", default="1,10,50", help="comma-separated person counts")
    parser.add_argument("--frames", type=int, default=500, help="timed frames per scene")
    parser.add_argument("--warmup", type=int, default=20, help="untimed frames first")
    parser.add_argument("--tracker", default="oks-byte", help="tracker plugin name")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per scene; the one with the lowest median is reported (the CPU "
                             "is shared, so the quietest run is the fairest)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.persons.split(",")]
    rows = [min((measure(args.tracker, n, args.frames, args.warmup, args.seed)
                 for _ in range(max(args.repeat, 1))), key=lambda row: row["p50_ms"])
            for n in counts]

    header = f"{'tracker':<10} {'persons':>7} {'mean ms':>8} {'p50 ms':>8} {'p95 ms':>8} " \
             f"{'max ms':>8} {'ids':>5}"
    lines = [header, "-" * len(header)]
    lines += [f"{r['tracker']:<10} {r['persons']:>7} {r['mean_ms']:>8.3f} {r['p50_ms']:>8.3f} "
              f"{r['p95_ms']:>8.3f} {r['max_ms']:>8.3f} {r['distinct_ids']:>5}" for r in rows]
    report = {"benchmark": "tracker", "python": platform.python_version(),
              "machine": platform.machine(), "processor": platform.processor(),
              "numpy": np.__version__, "repeat": args.repeat, "results": rows}
    emit(lines, report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
