"""Stopping a posestream command that runs as a child process the way a user would: Ctrl-C first
(the pipeline drains its frames and exits 130), then SIGKILL if it has not left in time. Used by
the soak benchmark and by the tests that run `posestream` commands."""
from __future__ import annotations

import signal
import subprocess


def interrupt(proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """SIGINT `proc` if it still runs; SIGKILL it when it has not exited within `timeout_s`."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30)
