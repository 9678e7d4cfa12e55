"""One camera's pipeline as a process of its own: `python -m posestream.stream.fleet.worker`.

A camera actor starts this module rather than running `Pipeline` in the actor itself, for three
reasons: a crashing pipeline cannot take the actor (and its answers to the controller) with it;
the pipeline's own stop path is reused unchanged (SIGTERM -> `SignalTrap` -> stages drain, sinks
flush, rings unlinked); and the pipeline runs in a main thread, where `SignalTrap` works.

The job arrives as JSON on stdin (`--camera NAME` on the command line only labels the process) (the camera's full config, its source and its zmq endpoint). The
exit code tells the actor what happened: 0 stopped on request (or the stream ended), `EXIT_UNREACHABLE` the source could
not be opened or read (retried as "unreachable"), anything else a crash (retried as "restarting").
The process asks Linux to send it SIGTERM when the actor that started it dies, so a camera never
outlives its actor (e.g. when its node leaves the cluster).
"""
from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import sys

from posestream.stream.core.errors import InputError, PosestreamError, SourceTimeoutError

EXIT_UNREACHABLE = 3
EXIT_CRASHED = 1
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """SIGTERM this process when its parent dies (Linux prctl); exit now if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


def is_source_failure(exc: BaseException) -> bool:
    """The camera itself failed (connect, timeout, unreadable stream): retry as unreachable."""
    return isinstance(exc, (SourceTimeoutError, InputError)) and str(exc).startswith("source")


def main() -> int:
    # A stop request before the pipeline traps signals itself: nothing started, nothing to flush.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    job = json.loads(sys.stdin.read())
    _die_with_parent(int(job["parent_pid"]))
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s [{job['camera']}] %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    from posestream.stream.pipeline import Pipeline

    try:
        with Pipeline(job["config"], [job["source"]], [f"zmq:{job['endpoint']}"], "live") as pipeline:
            report = pipeline.run()
    except PosestreamError as exc:
        logging.getLogger(__name__).error("camera %s: %s", job["camera"], exc)
        return EXIT_UNREACHABLE if is_source_failure(exc) else EXIT_CRASHED
    logging.getLogger(__name__).info("camera %s: pipeline %s", job["camera"],
                                     f"stopped by {report.signal}" if report.signal else "ended")
    return 0


if __name__ == "__main__":
    sys.exit(main())
