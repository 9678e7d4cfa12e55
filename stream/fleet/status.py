"""The fleet's per-camera status: the figures, the stream message that carries them, the table.

`status_message` builds the shared wire format's `status` message (`core.wire`, docs/zmq.md) that
the aggregated stream carries every `fleet.status_interval_s`; `format_table` is what `posestream
fleet status` prints. The wire knows four states; the fleet's finer ones map onto them and travel
as `detail` (with `node_id` and `note`, extra keys the schema allows).
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from posestream.stream.core import wire

STATES = ("starting", "running", "restarting", "unreachable", "refused", "lost", "fenced",
          "waiting for resources", "stopped")
# The wire's states: a camera that is starting or waiting for a node is "waiting" for frames; one
# whose key is refused, or whose actor no longer answers, cannot be reached.
WIRE_STATE = {"starting": "waiting", "running": "running", "restarting": "restarting",
              "unreachable": "unreachable", "refused": "unreachable", "lost": "unreachable",
              "fenced": "restarting", "waiting for resources": "waiting", "stopped": "waiting"}


@dataclass
class CameraStatus:
    """One camera's row. `latency_p99_ms` is capture -> publish inside the camera's pipeline."""

    name: str
    node: str
    state: str
    fps: float
    latency_p99_ms: float | None
    last_frame_age_s: float | None
    restarts: int
    note: str = ""
    node_id: str = ""  # Ray's node id: tells nodes apart that share an address (one machine)

    def to_wire(self) -> dict[str, Any]:
        """This camera as an entry of the wire's status message."""
        return {"name": self.name, "node": self.node, "state": WIRE_STATE[self.state],
                "fps": round(self.fps, 2),
                "p99_ms": None if self.latency_p99_ms is None else round(self.latency_p99_ms, 1),
                "last_frame_age_s": (None if self.last_frame_age_s is None
                                     else round(self.last_frame_age_s, 2)),
                "restarts": self.restarts, "detail": self.state, "node_id": self.node_id,
                "note": self.note}


def status_message(rows: list[CameraStatus], now: float | None = None) -> dict[str, Any]:
    """The fleet's status message (schema v2, topic `wire.STATUS_TOPIC`), validated by the wire."""
    return wire.status_message([row.to_wire() for row in rows],
                               publish_ts=time.time() if now is None else now)


class FrameStats:
    """Arrival times and latencies of one camera's recent frames, over a sliding window."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._arrivals: deque[tuple[float, float]] = deque()
        self.last_arrival: float | None = None

    def add(self, arrival: float, latency_s: float) -> None:
        self._arrivals.append((arrival, latency_s))
        self.last_arrival = arrival
        self._trim(arrival)

    def _trim(self, now: float) -> None:
        while self._arrivals and self._arrivals[0][0] < now - self.window_s:
            self._arrivals.popleft()

    def figures(self, now: float) -> tuple[float, float | None, float | None]:
        """(fps, p99 latency ms, last-frame age s) as of `now`."""
        self._trim(now)
        # an arrival recorded after the caller read its clock is fresh, not from the future
        age = None if self.last_arrival is None else max(0.0, now - self.last_arrival)
        if len(self._arrivals) < 2:
            return 0.0, (self._arrivals[0][1] * 1000.0 if self._arrivals else None), age
        span = self._arrivals[-1][0] - self._arrivals[0][0]
        fps = (len(self._arrivals) - 1) / span if span > 0 else 0.0
        p99 = float(np.percentile([lat for _, lat in self._arrivals], 99)) * 1000.0
        return fps, p99, age


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_table(rows: list[CameraStatus]) -> str:
    """One line per camera: node, state, FPS, p99 latency, last-frame age, restarts (and a note)."""
    header = ("camera", "node", "state", "fps", "p99 ms", "age s", "restarts", "note")
    lines = [header]
    for row in rows:
        node = f"{row.node} ({row.node_id[:6]})" if row.node_id else (row.node or "-")
        lines.append((row.name, node, row.state, f"{row.fps:.1f}",
                      _cell(row.latency_p99_ms, ".0f"), _cell(row.last_frame_age_s, ".1f"),
                      str(row.restarts), " ".join(row.note.split())))  # one line per camera
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "".join(("  ".join(cell.ljust(w) for cell, w in zip(line, widths)) + "  " + line[-1])
                   .rstrip() + "\n" for line in lines)
