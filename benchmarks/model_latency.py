"""Isolated model latency: each model the configuration runs, per backend, at batch 1 and at the
configured batch, timed around `engine.run` alone (no decoding, letterboxing or NMS).

The detector is fed the letterboxed frame of the benchmark video (so a 16:9 clip runs at 640x384
when `detector.rectangular`); a top-down pose model is fed crops of its input size. GPU backends are
measured when they can run here; otherwise `gpu_status()` says why not.

    python -m posestream.benchmarks.model_latency [--video PATH] [--quick] [--out x.json]
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from posestream.benchmarks.report import emit
from posestream.stream.core.config import load_config
from posestream.stream.core.settings import Settings

log = logging.getLogger(__name__)


def gpu_backends() -> tuple[list[tuple[str, str]], str | None]:
    """(backend, device) pairs that run on a GPU here, and why there are none (None when some)."""
    from posestream.engines.backends.base import tensorrt_available

    found: list[tuple[str, str]] = []
    reasons: list[str] = []
    trt = tensorrt_available()
    if trt is None:
        found.append(("tensorrt", "cuda"))
    else:
        reasons.append(f"TensorRT: {trt}")
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        found.append(("onnxruntime", "cuda"))
    else:
        reasons.append("ONNX Runtime: no CUDA execution provider")
    return found, None if found else "; ".join(reasons)


def time_call(call: Callable[[], Any], warmup: int, min_runs: int, budget_s: float) -> np.ndarray:
    """Durations (s) of `call` after `warmup` untimed calls: at least `min_runs`, more while the
    time budget lasts (the CPU is shared, so more samples give steadier percentiles)."""
    for _ in range(warmup):
        call()
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < min_runs or time.perf_counter() < deadline:
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
        if len(times) >= 10 * max(min_runs, 1):
            break
    return np.asarray(times)


def _row(role: str, model: str, backend: str, device: str, threads: int, batch: int,
         shape: tuple[int, ...], times: np.ndarray, precision: str = "fp32") -> dict[str, Any]:
    p50 = float(np.percentile(times, 50)) * 1e3
    return {"role": role, "model": model, "backend": backend, "precision": precision, "device": device,
            "threads": threads,
            "batch": batch, "input": "x".join(str(s) for s in shape), "runs": int(len(times)),
            "p50_ms": round(p50, 2), "p95_ms": round(float(np.percentile(times, 95)) * 1e3, 2),
            "min_ms": round(float(times.min()) * 1e3, 2), "per_item_ms": round(p50 / batch, 2)}


def _batches(configured: int) -> list[int]:
    return sorted({1, int(configured)})


def detector_rows(config: Settings, frame: np.ndarray, backend: str, device: str,
                  threads: list[int], timing: dict[str, Any], precision: str = "fp32") -> list[dict[str, Any]]:
    """The detector engine on the letterboxed `frame`, at batch 1 and `detector.batch`. An engine
    with async requests (OpenVINO) runs `detector.batch` single frames in flight, as the detect
    stage does, instead of one batched call."""
    from posestream.engines.preprocess import letterbox
    from posestream.stream.chain import build_detector

    rows = []
    for count in threads:
        cfg = config.with_overrides({"engine": {"backend": backend, "device": device, "precision": precision},
                                     "detector.threads": count,
                                     # the model alone: its engine, not the windows around it
                                     "small_people.enabled": False})
        detector = build_detector(cfg)
        try:
            engine = detector.engine
            ran = "int8" if engine.model_path.suffix == ".xml" else "fp32"  # INT8 = OpenVINO IR
            canvas, _ = letterbox(frame, detector.canvas_for(*frame.shape[:2]), detector.pad)
            batches = [1] if detector.static_batch else _batches(cfg.detector.batch)
            for batch in batches:
                if batch > 1 and hasattr(engine, "submit"):
                    x = detector.model_input([canvas])
                    call = lambda: _in_flight(engine, x, batch)  # noqa: E731
                else:
                    x = detector.model_input([canvas] * batch)
                    call = lambda: engine.run1(x)  # noqa: E731
                times = time_call(call, **timing)
                rows.append(_row("detector", cfg.model.name, engine.backend, device,
                                 count, batch, (batch, *x.shape[1:]), times, ran))
        finally:
            detector.close()
    return rows


def _in_flight(engine: Any, x: np.ndarray, count: int) -> None:
    name = engine.inputs[0].name
    for tag in range(count):
        engine.submit(tag, {name: x})
    for tag in range(count):
        engine.collect(tag)


def cpu_backends() -> list[tuple[str, str]]:
    """(backend, precision) pairs measured on the CPU: ONNX Runtime FP32 and, when installed,
    OpenVINO FP32 and INT8 (INT8 only once `models prepare` built it)."""
    from posestream.engines.backends.openvino_engine import openvino_available

    pairs = [("onnxruntime", "fp32")]
    if openvino_available() is None:
        pairs += [("openvino", "fp32"), ("openvino", "int8")]
    return pairs


def pose_rows(config: Settings, backend: str, device: str, threads: list[int],
              timing: dict[str, Any]) -> list[dict[str, Any]]:
    """The top-down pose model on crops of its input size, at batch 1 and `pose.batch`
    (nothing in one-stage mode: the detector's keypoints are used)."""
    from posestream.stream.chain import build_estimator

    rows = []
    for count in threads:
        cfg = config.with_overrides({"engine": {"backend": backend, "device": device}, "pose.threads": count})
        estimator = build_estimator(cfg)
        if estimator is None:
            return []
        try:
            h, w = estimator.input_hw
            for batch in _batches(estimator.batch):
                crops = np.full((batch, h, w, 3), 114, np.uint8)
                times = time_call(lambda: estimator.infer(crops), **timing)
                rows.append(_row("pose", cfg.pose.model, estimator.engine.backend, device, count,
                                 batch, (batch, 3, h, w), times))
        finally:
            estimator.close()
    return rows


def measure(config: Settings, frame: np.ndarray, quick: bool = False,
            thread_counts: list[int] | None = None) -> dict[str, Any]:
    """Every latency row (CPU, then GPU backends when present) and the GPU status line."""
    timing = ({"warmup": 2, "min_runs": 5, "budget_s": 0.5} if quick
              else {"warmup": 5, "min_runs": 30, "budget_s": 4.0})
    det_threads = thread_counts or [config.detector.threads]
    pose_threads = thread_counts or [config.pose.threads]
    rows = []
    for backend, precision in cpu_backends():
        found = detector_rows(config, frame, backend, "cpu", det_threads, timing, precision)
        rows += [r for r in found if r["precision"] == precision]  # no INT8 model: no INT8 row
    rows += pose_rows(config, "onnxruntime", "cpu", pose_threads, timing)
    gpus, reason = gpu_backends()
    for backend, device in gpus:
        rows += detector_rows(config, frame, backend, device, [0], timing)
        rows += pose_rows(config, backend, device, [0], timing)
    return {"rows": rows, "gpu": reason or "measured: " + ", ".join(f"{b} on {d}" for b, d in gpus),
            "gpu_available": not reason}


def inference_ms_per_frame(rows: list[dict[str, Any]], config: Settings, persons_per_frame: float,
                           backend: str = "onnxruntime", device: str = "cpu",
                           precision: str = "fp32") -> dict[str, float]:
    """Model time one frame costs with the configured batches and threads: the detector's per-frame
    share of a `detector.batch` call plus, top-down, `persons_per_frame` crops at `pose.batch`."""
    def pick(role: str, batch: int, threads: int) -> dict[str, Any] | None:
        matches = [r for r in rows if r["role"] == role and r["backend"] == backend
                   and r.get("precision", "fp32") == (precision if role == "detector" else "fp32")
                   and r["device"] == device and (device != "cpu" or r["threads"] == threads)]
        exact = [r for r in matches if r["batch"] == batch]
        return (exact or sorted(matches, key=lambda r: r["batch"]))[-1] if matches else None

    det = pick("detector", config.detector.batch, config.detector.threads)
    detect_ms = det["per_item_ms"] if det else float("nan")
    pose_ms = 0.0
    if config.pose.mode == "topdown":
        pose = pick("pose", config.pose.batch, config.pose.threads)
        pose_ms = persons_per_frame * pose["per_item_ms"] if pose else float("nan")
    return {"detect_ms": round(detect_ms, 2), "pose_ms": round(pose_ms, 2),
            "total_ms": round(detect_ms + pose_ms, 2)}


def format_rows(rows: list[dict[str, Any]]) -> list[str]:
    head = (f"{'role':<9}{'model':<15}{'backend':<13}{'prec':<6}{'device':<7}{'thr':>4}{'batch':>6}"
            f"{'input':>16}{'p50 ms':>9}{'p95 ms':>9}{'min ms':>9}{'ms/item':>9}")
    lines = [head]
    for r in rows:
        lines.append(f"{r['role']:<9}{r['model']:<15}{r['backend']:<13}{r.get('precision', 'fp32'):<6}"
                     f"{r['device']:<7}{r['threads']:>4}"
                     f"{r['batch']:>6}{r['input']:>16}{r['p50_ms']:>9.2f}{r['p95_ms']:>9.2f}"
                     f"{r['min_ms']:>9.2f}{r['per_item_ms']:>9.2f}")
    return lines


def first_frame(video: Path, config: Settings) -> np.ndarray:
    from posestream.stream.sources import open_source

    with open_source(str(video), config) as source:
        for frame in source.frames():
            return frame.image
    raise RuntimeError(f"{video} delivered no frame")  # open_source raises InputError first


def main(argv: list[str] | None = None) -> int:
    from posestream.benchmarks.clips import default_videos

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, help="video whose frame size the detector sees")
    parser.add_argument("--threads", default="", help="comma-separated thread counts to compare, e.g. 1,2")
    parser.add_argument("--quick", action="store_true", help="few runs (a smoke test, not a measurement)")
    parser.add_argument("--out", type=Path, help="write the rows as JSON")
    args = parser.parse_args(argv)
    config = load_config()
    video = args.video or default_videos(config, Path("."))[0]
    threads = [int(t) for t in args.threads.split(",") if t.strip()] or None
    result = measure(config, first_frame(video, config), args.quick, threads)
    emit(format_rows(result["rows"]) + [f"GPU: {result['gpu']}"], result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
