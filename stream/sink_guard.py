"""What happens when one sink cannot write (its disk is full, its file too large): `sinks.on_error`.

`stop` (default): the sink's error (one line naming the file) goes up and the run stops cleanly,
the other sinks closed as usual. `continue`: that sink alone is closed and retired with one error
in the log, and the other sinks keep receiving every frame. Either way the failing sink has left
what it wrote before as a valid file (each sink restores or keeps its file; see its `write`).
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any

import numpy as np

from posestream.stream.core.config import Config, check_choice
from posestream.stream.core.errors import PosestreamError
from posestream.stream.core.results import FrameResult

log = logging.getLogger(__name__)

ON_ERROR = ("stop", "continue")


class GuardedSink:
    """Wraps one sink plugin; `failed` holds its error once it has been retired."""

    def __init__(self, sink: Any, name: str, on_error: str) -> None:
        self._sink = sink
        self.name = name
        self._on_error = on_error
        self.failed: str | None = None

    @property
    def needs_pixels(self) -> bool:
        return getattr(self._sink, "needs_pixels", True)

    def write(self, result: FrameResult, frame: np.ndarray | None) -> None:
        if self.failed is not None:
            return
        try:
            self._sink.write(result, frame)
        except (PosestreamError, OSError) as exc:
            if self._on_error == "stop":
                raise
            self.failed = str(exc)
            log.error("sink %s failed and is closed; the other sinks go on (sinks.on_error = "
                      "\"continue\"): %s", self.name, exc)
            with contextlib.suppress(PosestreamError, OSError):
                self._sink.close()

    def close(self) -> None:
        close = getattr(self._sink, "close", None)
        if close is not None and self.failed is None:
            close()


def guard_sink(sink: Any, name: str, config: Config) -> GuardedSink:
    on_error = config["sinks"]["on_error"]
    check_choice("sinks.on_error", on_error, ON_ERROR)
    return GuardedSink(sink, name, on_error)
