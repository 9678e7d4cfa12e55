"""Top-down pose stage throughput: crops per second at several batch sizes and thread counts, and
the pipeline's frame rate for each split of the two cores between the detector and the pose stage.

Crops are the real persons the detector finds in the benchmark video, timed around
`TopDownEstimator.estimate` (affine crops, inference, decoding and mapping back), so the figure is
what the pose stage can sustain, not the bare model.

    python -m posestream.benchmarks.pose_stage [--video PATH] [--frames N] [--out x.json]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from posestream.benchmarks.report import emit
from posestream.benchmarks.bench import run_pipeline_offline
from posestream.benchmarks.clips import default_videos, looped_clip
from posestream.stream.chain import build_detector, build_estimator
from posestream.stream.core.config import load_config
from posestream.stream.core.settings import Settings
from posestream.stream.sources import open_source

BATCHES = (1, 4, 8)
THREADS = (1, 2)
SPLITS = ((1, 1), (2, 1), (1, 2), (2, 2))  # (detector threads, pose threads)


def _frames_and_detections(config: Settings, video: Path, count: int) -> tuple[list[np.ndarray], list[Any]]:
    frames = []
    with open_source(str(video), config) as source:
        for frame in source.frames():
            frames.append(frame.image)
            if len(frames) == count:
                break
    detector = build_detector(config)
    try:
        return frames, detector.detect(frames)
    finally:
        detector.close()


def crops_per_second(config: Settings, frames: list[np.ndarray], detections: list[Any],
                     batch: int, threads: int, repeat: int = 3) -> dict[str, Any]:
    """Best of `repeat` passes over all frames, all their persons batched across frames."""
    trial = config.with_overrides({"pose": {"mode": "topdown", "batch": batch, "threads": threads}})
    estimator = build_estimator(trial)
    try:
        estimator.estimate(frames[:2], detections[:2])  # warm-up
        crops = sum(len(d) for d in detections)
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            for i in range(0, len(frames), batch):
                estimator.estimate(frames[i:i + batch], detections[i:i + batch])
            best = min(best, time.perf_counter() - start)
    finally:
        estimator.close()
    return {"batch": batch, "threads": threads, "crops": crops,
            "crops_per_s": round(crops / best, 1), "ms_per_crop": round(1e3 * best / crops, 2)}


def thread_splits(config: Settings, video: Path) -> list[dict[str, Any]]:
    """Offline pipeline FPS in top-down mode for each detector/pose thread split."""
    rows = []
    for detector_threads, pose_threads in SPLITS:
        trial = config.with_overrides({"pose": {"mode": "topdown", "threads": pose_threads},
                                       "detector.threads": detector_threads})
        result = run_pipeline_offline(trial, video, [])
        rows.append({"detector_threads": detector_threads, "pose_threads": pose_threads,
                     "fps": result["fps"], "frames": result["frames"]})
    return rows


def run(config: Settings, video: Path, frames: int, scratch: Path) -> dict[str, Any]:
    images, detections = _frames_and_detections(config, video, frames)
    crops = [crops_per_second(config, images, detections, b, t) for t in THREADS for b in BATCHES]
    clip, _ = looped_clip(video, 4 * frames, scratch / "pose_stage_clip.mp4")
    splits = thread_splits(config, clip)
    best = max(splits, key=lambda r: r["fps"] or 0)
    return {"video": str(video), "frames": frames, "persons_per_frame":
            round(sum(len(d) for d in detections) / len(detections), 2),
            "plugin": config.pose.plugin, "model": config.pose.model,
            "crops": crops, "splits": splits,
            "best_split": {"detector_threads": best["detector_threads"], "pose_threads": best["pose_threads"]}}


def format_result(result: dict[str, Any]) -> list[str]:
    lines = [f"pose stage ({result['plugin']}, {result['model']}) on {Path(result['video']).name}: "
             f"{result['frames']} frames, {result['persons_per_frame']} persons/frame",
             f"{'threads':>8}{'batch':>7}{'crops/s':>10}{'ms/crop':>9}"]
    lines += [f"{r['threads']:>8}{r['batch']:>7}{r['crops_per_s']:>10.1f}{r['ms_per_crop']:>9.2f}"
              for r in result["crops"]]
    lines.append(f"top-down pipeline, offline: {'det thr':>8}{'pose thr':>9}{'FPS':>7}")
    lines += [f"{'':28}{r['detector_threads']:>8}{r['pose_threads']:>9}{r['fps'] or 0:>7.1f}"
              for r in result["splits"]]
    best = result["best_split"]
    lines.append(f"best split: detector {best['detector_threads']} thread(s), "
                 f"pose {best['pose_threads']} thread(s)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, help="default: the first shared video")
    parser.add_argument("--frames", type=int, default=24, help="frames whose persons are cropped")
    parser.add_argument("--out", type=Path, help="write the result as JSON")
    args = parser.parse_args(argv)
    config = load_config()
    with tempfile.TemporaryDirectory(prefix="posestream-pose-") as scratch:
        video = args.video or default_videos(config, Path(scratch))[0]
        result = run(config, video, args.frames, Path(scratch))
    emit(format_result(result), result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
