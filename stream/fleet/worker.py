"""One camera's pipeline in processes of its own: `python -m posestream.stream.fleet.worker`.

A camera actor does not run `Pipeline` itself: a crashing pipeline then cannot take the actor (and
its answers to the controller) with it, the pipeline's own stop path is reused unchanged (SIGTERM
-> `SignalTrap` -> stages drain, sinks flush, rings unlinked), and the pipeline runs in a main
thread, where `SignalTrap` works.

Two processes, because Ray SIGKILLs an actor's direct children when the actor exits (its node
left, or it was killed): a SIGKILLed pipeline would orphan its stages and leak its rings. So the
actor starts a *launcher* (this module), and the launcher starts the *pipeline* (this module with
`--pipeline`) in its own session, which asks Linux for SIGTERM when the launcher dies. Whatever
kills the launcher, the pipeline still stops in order. The launcher forwards a stop request
(SIGTERM) and kills the pipeline's process group if it has not drained within the stop timeout.

The job arrives as JSON on stdin (`--camera NAME` only labels the processes for `ps`). The exit
code says what happened: 0 stopped on request (or the stream ended), `EXIT_UNREACHABLE` the source
could not be opened or read (retried as "unreachable"), anything else a crash ("restarting"); the
pipeline's error, if any, is written to the job's `error_file` for the status table.
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

from posestream.stream.core.errors import InputError, PosestreamError, SourceTimeoutError
from posestream.stream.core.settings import Settings

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


def kill_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def launch(raw_job: bytes) -> int:
    """The launcher: run the pipeline process, forward a stop, clean up its group afterwards."""
    job = json.loads(raw_job)
    pipeline = subprocess.Popen([sys.executable, "-m", __spec__.name, "--camera", job["camera"],
                                 "--pipeline"], stdin=subprocess.PIPE, start_new_session=True)
    deadline: list[float] = []  # set by a stop request: when the pipeline is killed

    def stop(*_: object) -> None:
        if not deadline:
            deadline.append(time.monotonic() + float(job["stop_timeout_s"]))
            with contextlib.suppress(ProcessLookupError):
                pipeline.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    with contextlib.suppress(BrokenPipeError), pipeline.stdin:  # type: ignore[union-attr]
        pipeline.stdin.write(json.dumps({**job, "parent_pid": os.getpid()}).encode())  # type: ignore[union-attr]
    while True:
        try:
            code = pipeline.wait(0.2)
            break
        except subprocess.TimeoutExpired:
            if deadline and time.monotonic() > deadline[0]:  # did not drain in time
                kill_group(pipeline.pid, signal.SIGKILL)
    # Stages left behind by a killed pipeline leave with SIGTERM; the multiprocessing resource
    # tracker ignores it and unlinks their shared memory once they are gone.
    kill_group(pipeline.pid, signal.SIGTERM)
    return code if code >= 0 else EXIT_CRASHED


def run_pipeline(job: dict) -> int:
    """The pipeline process: one camera, one zmq sink on the camera's endpoint. Its CURVE key
    folder (if any) is removed when it ends, also when its actor was killed first."""
    try:
        return _pipeline(job)
    finally:
        if job.get("key_folder"):
            shutil.rmtree(job["key_folder"], ignore_errors=True)


def _pipeline(job: dict) -> int:
    _die_with_parent(int(job["parent_pid"]))
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s [{job['camera']}] %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    from posestream.stream.pipeline import Pipeline

    try:
        with Pipeline(Settings.from_json(job["config"]), [job["source"]], [f"zmq:{job['endpoint']}"],
                      "live") as pipeline:
            report = pipeline.run()
    except PosestreamError as exc:
        logging.getLogger(__name__).error("camera %s: %s", job["camera"], exc)
        with contextlib.suppress(OSError):  # the actor shows it as the camera's note
            with open(job["error_file"], "w", encoding="utf-8") as fh:
                fh.write(str(exc)[:300])
        return EXIT_UNREACHABLE if is_source_failure(exc) else EXIT_CRASHED
    logging.getLogger(__name__).info("camera %s: pipeline %s", job["camera"],
                                     f"stopped by {report.signal}" if report.signal else "ended")
    return 0


def main() -> int:
    # A stop request before the pipeline traps signals itself: nothing started, nothing to flush.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    raw = sys.stdin.buffer.read()
    if "--pipeline" in sys.argv:
        return run_pipeline(json.loads(raw))
    return launch(raw)


if __name__ == "__main__":
    sys.exit(main())
