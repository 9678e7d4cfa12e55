"""What happens when one sink cannot write (its disk is full, its file too large): `sinks.on_error`.

`stop` (default): the sink's error (one line naming the file) goes up and the run stops cleanly,
the other sinks closed as usual. `continue`: that sink alone is closed and retired with one error
in the log, and the other sinks keep receiving every frame. Either way the failing sink has left
what it wrote before as a valid file (each sink restores or keeps its file; see its `write`).
"""
from __future__ import annotations

import contextlib
import logging
from typing import Callable

import numpy as np

from posestream.stream.core.contracts import Sink
from posestream.stream.core.errors import PosestreamError
from posestream.stream.core.results import FrameResult

log = logging.getLogger(__name__)


class GuardedSink(Sink):
    """Wraps one sink plugin; `failed` holds its error once it has been retired."""

    needs_pixels = True  # replaced per instance by the wrapped sink's

    def __init__(self, sink: Sink, name: str, on_error: str) -> None:
        self._sink = sink
        self.name = name
        self.needs_pixels = sink.needs_pixels
        self._on_error = on_error
        self.failed: str | None = None

    def _guarded(self, call: Callable[[], None]) -> None:
        if self.failed is not None:
            return
        try:
            call()
        except (PosestreamError, OSError) as exc:
            if self._on_error == "stop":
                raise
            self.failed = str(exc)
            log.error("sink %s failed and is closed; the other sinks go on (sinks.on_error = "
                      "\"continue\"): %s", self.name, exc)
            with contextlib.suppress(PosestreamError, OSError):
                self._sink.close()

    def write(self, result: FrameResult, frame: np.ndarray | None) -> None:
        self._guarded(lambda: self._sink.write(result, frame))

    def end_stream(self, stream: str, last_frame: int | None) -> None:
        self._guarded(lambda: self._sink.end_stream(stream, last_frame))

    def close(self) -> None:
        if self.failed is None:
            self._sink.close()
