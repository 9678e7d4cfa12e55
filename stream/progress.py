"""What `posestream run` shows while it works: a progress bar for files and folders, a status line
once per interval for live sources. Both write to a text stream (stderr by default), redraw in
place on a terminal, and stay quiet on a non-terminal except for the live status lines."""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Protocol, TextIO


@dataclass(frozen=True)
class Snapshot:
    """The pipeline's state at one tick."""

    elapsed_s: float
    frames_done: int              # frames written by the sinks, all streams
    stage_fps: dict[str, float]   # frames per second since the previous tick, per stage
    dropped: int                  # live-policy drops, all streams
    latency_ms: float             # end-to-end latency of the latest finished frame


class Display(Protocol):
    live: bool

    def update(self, snapshot: Snapshot) -> None: ...

    def close(self) -> None: ...


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:02d}:{secs:02d}"


class _TerminalLine:
    """A line on `out` (stderr by default) that is redrawn in place on a terminal and ended by `close()`."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stderr
        self._tty = bool(getattr(self.out, "isatty", lambda: False)())
        self._drawn = False
        self._closed = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._drawn:
            self.out.write("\n")
            self.out.flush()


class ProgressBar(_TerminalLine):
    """`[###############---------------] 36/72  50%  12.3 fps  00:03  ETA 00:03` when the total is
    known, else `36 frames  12.3 fps  00:03`. The rate (and so the ETA) counts from the first
    finished frame, so model loading does not make the estimate pessimistic."""

    live = False

    def __init__(self, total: int | None = None, out: TextIO | None = None, width: int = 30) -> None:
        super().__init__(out)
        self.total = total
        self.width = width
        self._first: tuple[float, int] | None = None  # (elapsed_s, frames_done) at the first frame

    def _rate(self, snapshot: Snapshot) -> float:
        if self._first is None:
            if snapshot.frames_done:
                self._first = (snapshot.elapsed_s, snapshot.frames_done)
            return 0.0
        since, done = self._first
        span = snapshot.elapsed_s - since
        return (snapshot.frames_done - done) / span if span > 0 else 0.0

    def update(self, snapshot: Snapshot) -> None:
        if not self._tty:
            return
        done = snapshot.frames_done
        rate = self._rate(snapshot)
        eta = ""
        if self.total:
            shown = min(done, self.total)  # a total estimated from duration x rate may be passed
            filled = self.width * shown // self.total
            bar = "#" * filled + "-" * (self.width - filled)
            text = f"[{bar}] {done}/{self.total} {100 * shown // self.total:3d}%"
            # rounded up: "00:00" only once done
            eta = f"  ETA {_clock(math.ceil((self.total - shown) / rate))}" if rate > 0 else "  ETA --:--"
        else:
            text = f"{done} frames"
        self.out.write(f"\r{text}  {rate:5.1f} fps  {_clock(snapshot.elapsed_s)}{eta}\x1b[K")
        self.out.flush()
        self._drawn = True

class StatusLine(_TerminalLine):
    """`detect 14.8 fps | pose 14.8 | ... | dropped 3 | e2e 92 ms` once per status interval."""

    live = True

    def update(self, snapshot: Snapshot) -> None:
        parts = [f"{name} {fps:.1f} fps" for name, fps in snapshot.stage_fps.items()]
        parts.append(f"dropped {snapshot.dropped}")
        parts.append(f"e2e {snapshot.latency_ms:.0f} ms")
        line = f"{_clock(snapshot.elapsed_s)} " + " | ".join(parts)
        if self._tty:
            self.out.write(f"\r{line}\x1b[K")
            self._drawn = True
        else:
            self.out.write(line + "\n")
        self.out.flush()


def make_display(live: bool, total: int | None, out: TextIO | None = None) -> Display:
    """The status line for live runs, the progress bar otherwise."""
    return StatusLine(out) if live else ProgressBar(total, out)
