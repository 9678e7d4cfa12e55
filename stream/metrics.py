"""Pipeline metrics: per-stage counters in shared memory, latency percentiles, the run report.

Each stage process owns one row of a `RawArray` and is its only writer (so no lock is needed); the
supervisor reads all rows for the live status line and the final report. Latencies are measured
from the per-stage (enter, exit) timestamps every message carries, collected where frames end: the
sinks stage, which also measures end-to-end latency (capture -> sink write).
"""
from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

# One row per stage; every value a double.
FIELDS = ("processed", "busy_s", "heartbeat", "sent", "received", "first_ts", "last_ts",
          "last_latency_s", "ready", "cpu_s")
_F = {name: i for i, name in enumerate(FIELDS)}
PERCENTILES = (50, 95, 99)


class StageCounters:
    """A view of one stage's row; the stage process is its only writer."""

    def __init__(self, array: Any, row: int) -> None:
        self._array = array
        self._base = row * len(FIELDS)

    def get(self, name: str) -> float:
        return self._array[self._base + _F[name]]

    def set(self, name: str, value: float) -> None:
        self._array[self._base + _F[name]] = value

    def add(self, name: str, value: float = 1.0) -> None:
        self._array[self._base + _F[name]] += value

    def beat(self) -> None:
        """Alive now; also records the CPU time the process has used (every thread: inference
        runtimes and decoders work on threads of their own)."""
        self._array[self._base + _F["heartbeat"]] = time.time()
        self._array[self._base + _F["cpu_s"]] = time.process_time()

    def work(self, enter: float, exit_: float, frames: int) -> None:
        """Account one unit of work (a batch of `frames` frames) done between enter and exit."""
        if self.get("first_ts") == 0.0:
            self.set("first_ts", enter)
        self.set("last_ts", exit_)
        self.add("busy_s", exit_ - enter)
        self.add("processed", frames)
        self.set("last_latency_s", exit_ - enter)

    def snapshot(self) -> dict[str, float]:
        return {name: self._array[self._base + i] for i, name in enumerate(FIELDS)}


def counters_size(stages: int) -> int:
    """Length of the shared array for `stages` rows."""
    return stages * len(FIELDS)


def percentiles_ms(samples: Iterable[float]) -> dict[str, float | None]:
    """p50/p95/p99 of durations in seconds, as milliseconds (None when there are no samples)."""
    values = np.fromiter(samples, dtype=np.float64)
    if not len(values):
        return {f"p{p}": None for p in PERCENTILES}
    return {f"p{p}": round(float(v) * 1000.0, 3)
            for p, v in zip(PERCENTILES, np.percentile(values, PERCENTILES))}


class LatencyRecorder:
    """Recent per-stage and end-to-end latencies (a bounded window, so long live runs stay small)."""

    def __init__(self, window: int) -> None:
        self._window = window
        self.stages: dict[str, deque[float]] = {}
        self.end_to_end: dict[str, deque[float]] = {}

    def add(self, stream: str, timings: dict[str, tuple[float, float]], capture_ts: float,
            done_ts: float) -> float:
        """Record one finished frame; returns its end-to-end latency in seconds."""
        for stage, (enter, exit_) in timings.items():
            self.stages.setdefault(stage, deque(maxlen=self._window)).append(exit_ - enter)
        latency = done_ts - capture_ts
        self.end_to_end.setdefault(stream, deque(maxlen=self._window)).append(latency)
        return latency

    def summary(self) -> dict[str, Any]:
        return {"stages": {name: percentiles_ms(v) for name, v in self.stages.items()},
                "end_to_end": {name: percentiles_ms(v) for name, v in self.end_to_end.items()}}


@dataclass
class QueueDepths:
    """Input-queue depth per stage, sampled by the supervisor (messages sent upstream minus received).

    Kept as running totals (count, sum, max, last), not a list: a live run samples every tick for weeks."""

    totals: dict[str, list[int]] = field(default_factory=dict)  # stage -> [count, sum, max, last]

    def add(self, stage: str, depth: int) -> None:
        depth = max(depth, 0)
        entry = self.totals.setdefault(stage, [0, 0, 0, 0])
        entry[0] += 1
        entry[1] += depth
        entry[2] = max(entry[2], depth)
        entry[3] = depth

    def last(self, stage: str) -> int:
        return self.totals.get(stage, [0, 0, 0, 0])[3]

    def summary(self, stage: str) -> dict[str, float]:
        count, total, peak, _ = self.totals.get(stage, [0, 0, 0, 0])
        return {"mean": round(total / count, 2) if count else 0.0, "max": int(peak)}


def stage_summary(snapshot: dict[str, float], elapsed_s: float) -> dict[str, Any]:
    """FPS over the stage's active span, busy % over the whole run, and the CPU seconds its
    process used (the work bound of a run is the sum over its stages divided by the cores)."""
    span = snapshot["last_ts"] - snapshot["first_ts"]
    processed = int(snapshot["processed"])
    fps = processed / span if span > 0 and processed > 1 else None
    busy = 100.0 * snapshot["busy_s"] / elapsed_s if elapsed_s > 0 else 0.0
    return {"frames": processed, "fps": None if fps is None else round(fps, 2),
            "busy_pct": round(min(busy, 100.0), 1), "cpu_s": round(snapshot["cpu_s"], 2)}


def describe_model(info: dict[str, Any]) -> str:
    """'yolo11n-pose INT8 (nncf-ptq-v4) on openvino (yolo11n-pose-dynamic-int8.xml)' from a stage's
    `model` report."""
    recipe = f" ({info['recipe']})" if info.get("recipe") else ""
    return (f"{info.get('model', '?')} {str(info.get('precision', '?')).upper()}{recipe} on "
            f"{info.get('backend', '?')} ({info.get('file', '?')})")


@dataclass
class RunReport:
    """What a run did. `status` is "completed" (input ended) or "interrupted" (SIGINT/SIGTERM)."""

    status: str
    elapsed_s: float
    streams: dict[str, dict[str, Any]]
    stages: dict[str, dict[str, Any]]
    signal: str | None = None

    @property
    def exit_code(self) -> int:
        return {"SIGINT": 130, "SIGTERM": 143}.get(self.signal or "", 0)

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "signal": self.signal, "elapsed_s": round(self.elapsed_s, 3),
                "streams": self.streams, "stages": self.stages}

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    def format_table(self) -> str:
        """The end-of-run table: one row per stage, one per stream."""
        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f}"

        lines = [f"run {self.status} in {self.elapsed_s:.2f} s",
                 f"{'stage':<12}{'frames':>8}{'fps':>9}{'busy%':>7}{'p50 ms':>9}{'p95 ms':>9}"
                 f"{'p99 ms':>9}{'queue':>7}{'restarts':>9}"]
        for name, s in self.stages.items():
            lat = s.get("latency_ms", {})
            fps = "-" if s.get("fps") is None else f"{s['fps']:.1f}"
            lines.append(f"{name:<12}{s['frames']:>8}{fps:>9}{s['busy_pct']:>7.1f}"
                         f"{ms(lat.get('p50')):>9}{ms(lat.get('p95')):>9}{ms(lat.get('p99')):>9}"
                         f"{s.get('queue', {}).get('max', 0):>7}{s.get('restarts', 0):>9}")
        for name, s in self.stages.items():
            if s.get("model"):
                lines.append(f"{name} ran {describe_model(s['model'])}")
        width = max([16] + [len(name) + 2 for name in self.streams])
        lines.append(f"{'stream':<{width}}{'kind':>8}{'policy':>9}{'in':>7}{'out':>7}{'dropped':>9}"
                     f"{'lost':>6}{'e2e p50':>9}{'e2e p95':>9}{'e2e p99':>9}{'conn lost':>11}{'restored':>10}")
        for name, s in self.streams.items():
            lat = s.get("latency_ms", {})
            source = s.get("source", {})
            lines.append(f"{name:<{width}}{s['kind']:>8}{s['policy']:>9}{s['frames_in']:>7}"
                         f"{s['frames_out']:>7}{s['dropped']:>9}{s['lost']:>6}"
                         f"{ms(lat.get('p50')):>9}{ms(lat.get('p95')):>9}{ms(lat.get('p99')):>9}"
                         f"{source.get('lost', 0):>11}{source.get('restored', 0):>10}")
        return "\n".join(lines)
