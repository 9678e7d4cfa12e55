"""How many frames passed between two tracker updates, from frame numbers and the stream's clock.

A live source drops frames when the pipeline falls behind (the frame number jumps), and a camera that
reconnects after minutes goes on numbering without a jump while its clock moved on. Both must age
the tracks: a track kept for `lost_buffer` frames must not wait through minutes of darkness and then
be handed to whoever walks in. The gap is the larger of the frame-number jump and the clock's jump
in frame intervals (the interval is the median of the recent ones, so the gap itself does not
skew it). A clock or frame number that goes backwards is a new stream: `RESTART`.
"""
from __future__ import annotations

import collections

import numpy as np

from posestream.stream.core.contracts import TrackFrame

RESTART = 1 << 30  # frames "passed" when the stream restarted: longer than any lost buffer
_INTERVALS = 15    # recent frame intervals the median is taken over
_JUMP = 3.0        # a step longer than this many intervals is a gap, not a new interval


class FrameClock:
    """`steps(frame)`: frames since the previous call (1 for the next frame, more after a gap)."""

    def __init__(self) -> None:
        self._index: int | None = None
        self._time: float | None = None
        self._intervals: collections.deque[float] = collections.deque(maxlen=_INTERVALS)

    def steps(self, frame: TrackFrame | None) -> int:
        if frame is None:
            return 1
        index, time_s = frame.index, frame.time
        last_index, last_time = self._index, self._time
        self._index, self._time = index, time_s
        if last_index is None:
            return 1
        jump = index - last_index
        if jump <= 0:
            return RESTART
        if time_s is None or last_time is None:
            return jump
        elapsed = time_s - last_time
        if elapsed < 0:
            return RESTART
        per_frame = elapsed / jump
        if not self._intervals:
            self._intervals.append(per_frame)
            return jump
        interval = float(np.median(self._intervals))
        if per_frame <= _JUMP * interval or interval <= 0:
            self._intervals.append(per_frame)
            return jump
        return max(jump, int(round(elapsed / interval)))
