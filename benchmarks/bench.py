"""`posestream bench`: throughput, latency and accuracy of the configured pipeline, side by side with
the sequential baseline and the targets, in one command.

Sections (each a key of the JSON written with `--out`):
  models      isolated model latency per model and backend, batch 1 and the configured batch
  videos      per video: compute bound (model time only), sequential baseline, pipeline (offline)
  live        the first video replayed as a live camera: end-to-end latency over time, drops
  frame_bus   shared-memory frame ring vs multiprocessing.Queue
  accuracy    COCO keypoint AP of the configuration on the shared COCO ground truth
  peer        whole `posestream run` vs the peer's OpenVINO INT8 export + ByteTrack, A B A B
              (`benchmarks.peer`; skipped with one line when the peer is not installed)
  targets     every target with the measured value, the ratio and by how much it was missed

    python -m posestream.benchmarks.bench [--video PATH ...] [--frames N] [--live-seconds S] [--live-fps F]
                               [--out PATH] [--plot PATH] [--quick]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from posestream.benchmarks.report import emit
from posestream.stream.core.config import add_config_args, config_from_args, shared_dir
from posestream.stream.core.settings import BENCH_SINKS, BenchSettings, Settings
from posestream.stream.core.errors import InputNotFoundError

log = logging.getLogger(__name__)

REFERENCE_VIDEO = "two_person_interaction_72f.mp4"
# What users run today on the reference video on this machine (issue 8): a peer tool running the
# same YOLO11n-pose checkpoint, out of the box and tuned (letterboxing 16:9 to 640x384).
PEER_FPS = {"out_of_the_box": 11.0, "tuned": 18.0}
QUICK = {"frames": 24, "live_seconds": 3.0, "bus_frames": 60, "bus_repeat": 1, "trend_window_s": 1.0}


def _sink_specs(kind: str, scratch: Path, tag: str) -> list[str]:
    return {"json": [f"json:{scratch / (tag + '.json')}"],
            "zmq": [f"zmq:ipc://{scratch / (tag + '.sock')}"],
            "video": [f"video:{scratch / (tag + '.mp4')}"],
            "none": []}[kind]


def _same_outputs(a: Path, b: Path, tolerance: float = 0.5) -> bool | None:
    """Whether two AlphaPose JSON files hold the same persons, ids and keypoints (within `tolerance`
    pixels: thread scheduling may change float rounding); None when either is missing."""
    if not a.is_file() or not b.is_file():
        return None
    left, right = (json.loads(p.read_text(encoding="utf-8")) for p in (a, b))
    if len(left) != len(right):
        return False
    for x, y in zip(left, right):
        if x["image_id"] != y["image_id"] or x.get("idx") != y.get("idx"):
            return False
        if max((abs(p - q) for p, q in zip(x["keypoints"], y["keypoints"])), default=0.0) > tolerance:
            return False
    return True


def run_pipeline_offline(config: Settings, video: Path, sinks: list[str]) -> dict[str, Any]:
    """Every frame of `video` through the multi-process pipeline (offline policy). FPS is the sinks'
    steady rate (first to last frame out), comparable with the sequential loop, whose clock also
    starts after the models are loaded; `wall_fps` includes start-up and drain."""
    from posestream.stream.pipeline import Pipeline

    with Pipeline(config, [str(video)], sinks, policy="offline") as pipeline:
        report = pipeline.run()
    stream = next(iter(report.streams.values()), {})
    out = stream.get("frames_out", 0)
    # The work bound: the frame rate if every core did nothing but the stages' work (their
    # processes' CPU time, start-up included, as `wall_fps` includes it), with no idle core.
    cpu_s = sum(stage.get("cpu_s", 0.0) for stage in report.stages.values())
    work_bound = out * (os.cpu_count() or 1) / cpu_s if cpu_s > 0 else None
    return {"frames": out, "fps": report.stages["sinks"]["fps"],
            "wall_fps": round(out / report.elapsed_s, 2) if report.elapsed_s else None,
            "cpu_s": round(cpu_s, 2), "work_bound_fps": None if work_bound is None else round(work_bound, 2),
            "report": report.to_dict()}


def compute_bound(models: dict[str, Any], config: Settings, persons: float) -> dict[str, Any]:
    """The frame rate if the pipeline cost nothing but model inference (the configured backend
    and precision, as resolved on this machine)."""
    from posestream.benchmarks.model_latency import inference_ms_per_frame
    from posestream.engines.backends.factory import resolve_backend

    backend, device = resolve_backend(config.engine.backend, config.engine.device)
    precision = config.engine.precision if backend == "openvino" else "fp32"
    ms = inference_ms_per_frame(models["rows"], config, persons, backend, device, precision)
    fps = 1e3 / ms["total_ms"] if ms["total_ms"] and not math.isnan(ms["total_ms"]) else None
    return {**ms, "persons_per_frame": persons, "fps": None if fps is None else round(fps, 2)}


def run_accuracy(config: Settings) -> dict[str, Any]:
    """COCO keypoint AP/AR of the configured chain (what `posestream eval` reports) on the shared
    COCO ground truth."""
    from posestream.stream.evaluation import coco_keypoint_summary, load_ground_truth
    from posestream.stream.image_inference import infer_images

    folder = shared_dir(config) / "data" / "coco"
    gt_path = folder / "person_keypoints.json"
    if not gt_path.is_file():
        return {"skipped": f"no COCO ground truth at {gt_path}"}
    gt = load_ground_truth(gt_path)
    ids = {image["file_name"]: int(image["id"]) for image in gt["images"]
           if (folder / "images" / image["file_name"]).is_file()}
    results: list[dict[str, Any]] = []
    for path, _, frame in infer_images([folder / "images" / name for name in sorted(ids)], config):
        results.extend(frame.to_alphapose(ids[path.name]))
    metrics, summary = coco_keypoint_summary(gt_path, results, ids.values())
    return {"gt": str(gt_path), "images": len(ids), "persons": len(results),
            "pose_mode": config.pose.mode,
            "metrics": {k: round(v, 4) for k, v in metrics.items()}, "summary": summary}


def run_frame_bus(frames: int, repeat: int) -> dict[str, Any]:
    """The frame-bus benchmark (1280x720 frames, 8 in flight): ring vs Queue frames per second."""
    from posestream.benchmarks.frame_bus import run_queue, run_ring

    ctx = multiprocessing.get_context("spawn")
    fps = {}
    for name, fn in (("ring", run_ring), ("queue", run_queue)):
        best = min(fn(ctx, frames, 720, 1280, 8)[0] for _ in range(max(repeat, 1)))
        fps[name] = round(frames / best, 1)
    return {"frames": frames, "size": "1280x720", "slots": 8, "fps": fps,
            "ratio": round(fps["ring"] / fps["queue"], 2)}


def _target(name: str, measured: float | None, target: float, unit: str, higher_is_better: bool = True,
            note: str = "") -> dict[str, Any]:
    if measured is None:
        return {"target": name, "measured": None, "goal": target, "unit": unit, "met": None,
                "miss_pct": None, "note": note or "not measured"}
    met = measured >= target if higher_is_better else measured <= target
    miss = 0.0 if met else 100.0 * abs(target - measured) / target
    return {"target": name, "measured": round(measured, 3), "goal": target, "unit": unit, "met": met,
            "miss_pct": round(miss, 1), "note": note}


def evaluate_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets against what was measured (reference video when it was benchmarked)."""
    videos = result["videos"]
    ref = next((v for v in videos if Path(v["video"]).name == REFERENCE_VIDEO), videos[0] if videos else None)
    rows = []
    if ref is not None:
        pipe, seq, bound = ref["pipeline"]["fps"], ref["sequential"]["fps"], ref["compute_bound"]["fps"]
        where = Path(ref["video"]).name
        wall, work = ref["pipeline"]["wall_fps"], ref["pipeline"].get("work_bound_fps")
        rows.append(_target("pipeline / work bound (all stages' CPU time / cores)",
                            wall / work if wall and work else None, 0.9, "x", note=where))
        rows.append(_target("pipeline / compute bound (inference only)", pipe / bound if pipe and bound else None,
                            0.9, "x", note=where))
        rows.append(_target("pipeline / sequential", pipe / seq if pipe and seq else None, 1.2, "x",
                            note=where))
        if where == REFERENCE_VIDEO:
            rows.append(_target("pipeline / tuned peer (18 FPS)", pipe / PEER_FPS["tuned"] if pipe else None,
                                1.25, "x", note=f"{pipe} FPS vs {PEER_FPS['tuned']}"))
    live = result.get("live")
    if live and "skipped" not in live:
        frame_ms, seq_ms = live.get("processing_ms"), live.get("frame_ms")
        p99 = live["trend"]["steady_ms"]["p99"]
        rows.append(_target("live p99 / mean frame time", p99 / frame_ms if p99 and frame_ms else None,
                            3.0, "x", higher_is_better=False,
                            note=f"p99 {p99} ms, frame {frame_ms} ms in the live run ({seq_ms} ms "
                                 f"sequential), {live['fps_in']:g} fps in"))
        rise, mean = live["trend"]["rise_ms"], live["trend"]["steady_mean_ms"]
        rows.append(_target("live latency rise over run / mean", rise / mean if rise is not None and mean
                            else None, 0.1, "x", higher_is_better=False,
                            note=f"slope {live['trend']['slope_ms_per_s']} ms/s over {live['seconds']:g} s"))
    bus = result.get("frame_bus")
    if bus and "skipped" not in bus:
        rows.append(_target("frame ring / mp.Queue", bus["ratio"], 15.0, "x"))
    peer = result.get("peer", {})
    if "target" in peer:
        rows.append(_target("posestream run / peer OpenVINO INT8", peer["target"]["measured"], 1.2, "x",
                            note=f"median of {peer['rounds']} alternated rounds, whole commands"))
    return rows


def run_bench(config: Settings, videos: list[Path], scratch: Path, *, frames: int, live_seconds: float,
              live_fps: float, sink: str, quick: bool = False, trend_window_s: float = 5.0,
              repeat: int = 1, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run every section; returns the JSON-ready result (see the module docstring). The offline
    runs are repeated `repeat` times and the fastest of each kind is kept (the CPU is shared)."""
    from posestream.benchmarks import model_latency
    from posestream.benchmarks.clips import looped_clip
    from posestream.benchmarks.live import run_live
    from posestream.benchmarks.sequential import run_sequential
    from posestream.stream.pipeline import parse_sink

    for key, value in (("sink", sink), ("frames", frames), ("live_seconds", live_seconds),
                       ("live_fps", live_fps), ("repeat", repeat)):
        BenchSettings.checked(key, value)  # a flag's value within its [bench] key's bound
    for video in videos:
        if not video.is_file():
            raise InputNotFoundError(f"video not found: {video}")
    started = time.time()
    result: dict[str, Any] = {
        "benchmark": "posestream bench", "quick": quick,
        "machine": {"python": platform.python_version(), "machine": platform.machine(),
                    "processor": platform.processor(), "cpus": os.cpu_count(),
                    "load_avg_before": [round(x, 2) for x in os.getloadavg()]},
        "config": {"detector": dataclasses.asdict(config.detector),
                   "pose": {k: getattr(config.pose, k) for k in ("mode", "plugin", "model", "batch", "threads")},
                   "engine": dataclasses.asdict(config.engine), "tracker": config.tracker.plugin,
                   "pose_nms": config.pose_nms.kind, "ring_slots": config.pipeline.ring_slots,
                   "sink": sink},
        "videos": [],
    }
    first = model_latency.first_frame(videos[0], config)
    log.info("bench: isolated model latency")
    result["models"] = model_latency.measure(config, first, quick)
    for index, video in enumerate(videos):
        clip, count = looped_clip(video, frames, scratch / f"loop{index}-{video.name}")
        seqs, pipes = [], []
        for attempt in range(repeat):  # alternated, so a burst of load elsewhere hits both alike
            log.info("bench: %s looped to %d frames: sequential baseline (run %d of %d)", video.name,
                     count, attempt + 1, repeat)
            seqs.append(run_sequential(config, clip, [parse_sink(s) for s in
                                                      _sink_specs(sink, scratch, f"seq{index}")]))
            log.info("bench: %s: pipeline, offline (run %d of %d)", video.name, attempt + 1, repeat)
            pipes.append(run_pipeline_offline(config, clip, _sink_specs(sink, scratch, f"pipe{index}")))
        seq = max(seqs, key=lambda r: r["fps"] or 0.0)
        pipe = max(pipes, key=lambda r: r["fps"] or 0.0)
        seq["fps_runs"] = [r["fps"] for r in seqs]
        pipe["fps_runs"] = [r["fps"] for r in pipes]
        same = (_same_outputs(scratch / f"seq{index}.json", scratch / f"pipe{index}.json")
                if sink == "json" else None)
        result["videos"].append({
            "video": str(video), "frames": count,
            "compute_bound": compute_bound(result["models"], config, seq["persons_per_frame"]),
            "sequential": seq, "pipeline": pipe, "same_output_as_sequential": same})
    if "live" in skip or live_seconds <= 0:
        result["live"] = {"skipped": "not asked for"}
    else:
        fps = live_fps or _native_fps(videos[0], config)
        log.info("bench: live replay of %s at %g fps for %g s", videos[0].name, fps, live_seconds)
        live = run_live(config, videos[0], fps, live_seconds, scratch, trend_window_s)
        live["frame_ms"] = result["videos"][0]["sequential"]["mean_frame_ms"]
        result["live"] = live
    if "frame_bus" in skip:
        result["frame_bus"] = {"skipped": "not asked for"}
    else:
        log.info("bench: frame bus")
        result["frame_bus"] = run_frame_bus(QUICK["bus_frames"] if quick else 600,
                                            QUICK["bus_repeat"] if quick else 3)
    if "peer" in skip:
        result["peer"] = {"skipped": "not asked for"}
    else:
        from posestream.benchmarks.peer import DEFAULT_NAME, head_to_head, peer_available

        reason = peer_available()
        if reason is not None:
            result["peer"] = {"skipped": reason}
        else:
            log.info("bench: head to head with the peer on %s", videos[0].name)
            result["peer"] = head_to_head(config, videos[0], max(frames, 720) if not quick else frames,
                                          max(repeat, 2), {DEFAULT_NAME: []}, scratch)
    if "accuracy" in skip:
        result["accuracy"] = {"skipped": "not asked for"}
    else:
        log.info("bench: accuracy on the COCO ground truth")
        result["accuracy"] = run_accuracy(config)
    result["targets"] = evaluate_targets(result)
    result["machine"]["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    result["elapsed_s"] = round(time.time() - started, 1)
    return result


def _native_fps(video: Path, config: Settings) -> float:
    from posestream.stream.sources import open_source

    with open_source(str(video), config) as source:
        return float(source.info.fps or 30.0)


# -- the table ------------------------------------------------------------------------------------

def _f(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_report(result: dict[str, Any]) -> str:
    from posestream.benchmarks.model_latency import format_rows

    m = result["machine"]
    out = [f"posestream bench ({'quick: a smoke test, not a measurement' if result['quick'] else 'full'}) "
           f"on {m['cpus']} CPUs, load average {m['load_avg_before'][0]} before, "
           f"{m.get('load_avg_after', ['?'])[0]} after",
           "", "1. isolated model latency (engine.run only)"]
    out += ["  " + line for line in format_rows(result["models"]["rows"])]
    out.append(f"  GPU: {result['models']['gpu']}" if result["models"]["gpu_available"]
               else f"  GPU rows: none - no GPU backend here ({result['models']['gpu']})")
    out += ["", "2-4. throughput per video (FPS; compute bound = model inference only)",
            f"  {'video':<34}{'frames':>7}{'persons':>8}{'bound':>8}{'seq':>8}{'pipeline':>9}"
            f"{'wall':>7}{'pipe/bound':>11}{'pipe/seq':>9}{'same out':>9}"]
    for v in result["videos"]:
        bound, seq, pipe = v["compute_bound"]["fps"], v["sequential"]["fps"], v["pipeline"]["fps"]
        out.append(f"  {Path(v['video']).name:<34}{v['frames']:>7}{v['compute_bound']['persons_per_frame']:>8.2f}"
                   f"{_f(bound):>8}{_f(seq):>8}{_f(pipe):>9}{_f(v['pipeline']['wall_fps']):>7}"
                   f"{_f(pipe / bound if pipe and bound else None, 2):>11}"
                   f"{_f(pipe / seq if pipe and seq else None, 2):>9}"
                   f"{str(v['same_output_as_sequential']).lower():>9}")
    for v in result["videos"]:
        seq = v["sequential"]
        out.append(f"  sequential {Path(v['video']).name}: ms/frame " + ", ".join(
            f"{name} {_f(s['mean_ms'], 2)}" for name, s in seq["stages"].items()))
    out += ["", "6. pipeline stages (offline run of the first video)"]
    if result["videos"]:
        out += ["  " + line for line in _stage_lines(result["videos"][0]["pipeline"]["report"])]
    live = result.get("live", {})
    out += ["", "5. live latency"]
    if "skipped" in live:
        out.append(f"  skipped: {live['skipped']}")
    else:
        from posestream.benchmarks.live import format_result

        out += ["  " + line for line in format_result(live)]
        out.append("  stages (live run):")
        out += ["  " + line for line in _stage_lines(live["report"])]
    bus = result.get("frame_bus", {})
    out += ["", "frame bus (1280x720, 8 in flight)"]
    out.append(f"  skipped: {bus['skipped']}" if "skipped" in bus else
               f"  ring {bus['fps']['ring']} frames/s, mp.Queue {bus['fps']['queue']} frames/s: "
               f"{bus['ratio']}x")
    peer = result.get("peer", {})
    out += ["", "8. posestream run vs the peer (whole commands, alternated)"]
    if "skipped" in peer:
        out.append(f"  skipped: {peer['skipped']}")
    else:
        from posestream.benchmarks.peer import format_result as format_peer

        out += ["  " + line for line in format_peer(peer)]
    acc = result.get("accuracy", {})
    out += ["", "7. accuracy (COCO keypoints, shared ground truth)"]
    if "skipped" in acc:
        out.append(f"  skipped: {acc['skipped']}")
    else:
        a = acc["metrics"]
        out.append(f"  {acc['images']} images, {acc['persons']} persons, pose mode {acc['pose_mode']}: "
                   f"AP {a['AP']:.3f}  AP50 {a['AP50']:.3f}  AP75 {a['AP75']:.3f}  AR {a['AR']:.3f}")
    out += ["", "targets", f"  {'target':<38}{'measured':>10}{'goal':>8}  {'result':<22}note"]
    for t in result["targets"]:
        verdict = ("-" if t["met"] is None else "met" if t["met"]
                   else f"MISSED by {t['miss_pct']:.0f}%")
        goal = f"{'>=' if 'p99' not in t['target'] and 'rise' not in t['target'] else '<='}{t['goal']:g}"
        out.append(f"  {t['target']:<38}{_f(t['measured'], 2):>10}{goal:>8}  {verdict:<22}{t['note']}")
    return "\n".join(out)


def _stage_lines(report: dict[str, Any]) -> list[str]:
    lines = [f"{'stage':<10}{'frames':>7}{'fps':>8}{'busy%':>7}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
             f"{'queue mean':>11}{'max':>5}"]
    for name, s in report["stages"].items():
        lat = s["latency_ms"]
        lines.append(f"{name:<10}{s['frames']:>7}{_f(s['fps']):>8}{s['busy_pct']:>7.1f}{_f(lat['p50']):>9}"
                     f"{_f(lat['p95']):>9}{_f(lat['p99']):>9}{s['queue']['mean']:>11.2f}{s['queue']['max']:>5}")
    return lines


# -- entry points ---------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--video", type=Path, action="append", default=[], metavar="PATH",
                        help="video to benchmark (repeatable; default: the shared videos, else a "
                             "generated clip); the first one is also replayed live")
    parser.add_argument("--frames", type=int, help="loop each video to at least this many frames "
                        "(default bench.frames)")
    parser.add_argument("--live-seconds", type=float, help="live replay length, s; 0 skips it "
                        "(default bench.live_seconds)")
    parser.add_argument("--live-fps", type=float, help="live replay rate; 0 = native (default bench.live_fps)")
    parser.add_argument("--repeat", type=int, help="offline runs per video, alternating sequential and "
                        "pipeline; the fastest of each is kept (default bench.repeat)")
    parser.add_argument("--sink", choices=BENCH_SINKS, help="sink of the throughput runs (default bench.sink)")
    parser.add_argument("--skip", action="append", default=[], choices=("live", "frame_bus", "accuracy", "peer"),
                        help="leave a section out (repeatable)")
    parser.add_argument("--out", type=Path, metavar="PATH", help="write the results as JSON")
    parser.add_argument("--plot", type=Path, metavar="PATH",
                        help="write a PNG: live latency over time, per-stage busy %% and FPS (needs matplotlib)")
    parser.add_argument("--soak", type=float, metavar="MINUTES", help="instead: loop the first video as a "
                        "live camera for MINUTES and sample every process's memory, fds, threads and "
                        "/dev/shm (benchmarks/soak.py; --out and --plot apply)")
    from posestream.benchmarks.gpu_streams import add_arguments as add_stream_arguments

    add_stream_arguments(parser)  # --streams N,N,...: the many-streams bench (benchmarks.gpu_streams)
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke test: {QUICK['frames']} frames, {QUICK['live_seconds']:g} s live, "
                             "few timing runs (numbers are not measurements)")


def run_from_args(args: argparse.Namespace, config: Settings) -> int:
    from posestream.benchmarks.plot import check_plotting, write_plot

    if args.soak is not None:
        from posestream.benchmarks.soak import run_from_args as soak

        return soak(args.soak, args.out, args.plot, args.video[0] if args.video else None, config,
                    args.config, args.overrides)
    if getattr(args, "streams", None):
        from posestream.benchmarks import gpu_streams

        return gpu_streams.run_from_args(args, config)

    if args.plot:
        check_plotting()  # fail before minutes of measuring, not after
    table = config.bench
    quick = bool(args.quick)
    frames = args.frames if args.frames is not None else (QUICK["frames"] if quick else table.frames)
    live_seconds = (args.live_seconds if args.live_seconds is not None
                    else QUICK["live_seconds"] if quick else table.live_seconds)
    live_fps = args.live_fps if args.live_fps is not None else table.live_fps
    with tempfile.TemporaryDirectory(prefix="posestream-bench-") as tmp:
        scratch = Path(tmp)
        from posestream.benchmarks.clips import default_videos

        videos = list(args.video) or default_videos(config, scratch)
        result = run_bench(config, videos, scratch, frames=frames, live_seconds=live_seconds,
                           live_fps=live_fps, sink=args.sink or table.sink, quick=quick,
                           trend_window_s=QUICK["trend_window_s"] if quick else table.trend_window_s,
                           repeat=args.repeat if args.repeat is not None else table.repeat,
                           skip=tuple(args.skip))
    emit(format_report(result), result, args.out)
    if args.plot:
        write_plot(result, args.plot)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    add_config_args(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    return run_from_args(args, config_from_args(args))


if __name__ == "__main__":
    sys.exit(main())
