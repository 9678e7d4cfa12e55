"""What a SIGKILLed supervisor leaves behind, prevented and cleaned up.

A supervisor killed with SIGKILL (the OOM killer, a container stop) runs no cleanup: its stage
processes would live on and its frame rings would stay in /dev/shm. Two mechanisms cover that:

- `exit_with_parent`, called first thing in every stage: the kernel kills a stage the moment its
  supervisor dies (Linux parent-death signal); the sinks stage instead watches the parent's pid,
  aborts, closes its files (an MP4 gets its index), unlinks the dead owner's rings and is ended by
  a timer after `ORPHAN_GRACE_S` at the latest, so nothing outlives its supervisor by more than
  about one second;
- frame rings are named `posestream_<owner pid>_<random>` (`segment_name`), so `sweep()` (called
  whenever a ring is created) can tell the segments of a dead run from those of a live one and
  unlink only the former.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import secrets
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SEGMENT_PREFIX = "posestream_"
SHM_DIR = Path("/dev/shm")
PARENT_POLL_S = 0.1           # how often the sinks stage checks that its supervisor is alive
ORPHAN_GRACE_S = 1.0          # time the orphaned sinks stage gets to close its files before SIGALRM ends it
_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
COMM_PREFIX = "ps:"         # /proc/PID/comm of a stage process: ps:detect, ps:source0, ...
_SEGMENT = re.compile(rf"^{SEGMENT_PREFIX}(\d+)_[0-9a-f]+$")


def segment_name(owner: int | None = None) -> str:
    """A fresh shared-memory name that records its owner's pid (default: this process)."""
    return f"{SEGMENT_PREFIX}{owner or os.getpid()}_{secrets.token_hex(6)}"


def segment_owner(name: str) -> int | None:
    """The pid recorded in a posestream segment name; None for any other name."""
    match = _SEGMENT.match(name.lstrip("/"))
    return int(match.group(1)) if match else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def sweep(owner: int | None = None) -> list[str]:
    """Unlink posestream segments whose owner is dead (only `owner`'s when given, if it is dead).
    Returns the names removed. Segments of live processes are never touched."""
    if not SHM_DIR.is_dir():
        return []
    removed = []
    for path in SHM_DIR.iterdir():
        pid = segment_owner(path.name)
        if pid is None or (owner is not None and pid != owner) or pid_alive(pid):
            continue
        try:
            path.unlink()
        except FileNotFoundError:  # another process swept it first
            continue
        except OSError as exc:
            log.warning("cannot remove orphaned shared memory %s: %s", path, exc.strerror)
            continue
        removed.append(path.name)
    if removed:
        log.warning("removed %d shared-memory segment(s) left by dead posestream runs: %s",
                    len(removed), ", ".join(removed))
    return removed


def _set_parent_death_signal(signum: int) -> bool:
    """Linux `prctl(PR_SET_PDEATHSIG)`: the kernel sends `signum` to this process when the thread
    that started it exits. False where prctl is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def name_process(stage: str) -> None:
    """Show the stage in `ps`, `top` and /proc/PID/comm as `ps:<stage>` (Linux; at most 15 bytes),
    so an operator, and the soak benchmark, can tell the stage processes apart."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_NAME, f"{COMM_PREFIX}{stage}".encode()[:15], 0, 0, 0)


def exit_with_parent(abort: Any, graceful: bool, parent: int | None = None,
                     poll_s: float = PARENT_POLL_S, grace_s: float = ORPHAN_GRACE_S) -> None:
    """End this stage process when its supervisor (`parent`, default the current parent) dies.

    Not `graceful`: the kernel SIGKILLs it at once (parent-death signal; the supervisor starts
    stages from the thread that supervises them, which lives as long as they do). `graceful`
    (the sinks, which should close their files): a daemon thread polls the parent's pid, then sets
    `abort`, sweeps the dead parent's rings, and arms a SIGALRM timer of `grace_s` whose default
    action ends the process even if it is stuck in interpreter shutdown."""
    parent = parent or os.getppid()
    if not graceful and _set_parent_death_signal(signal.SIGKILL):
        if os.getppid() != parent:  # died before the signal was armed
            os.kill(os.getpid(), signal.SIGKILL)
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        signal.setitimer(signal.ITIMER_REAL, grace_s)
        log.error("the supervisor (pid %d) died; this stage stops", parent)
        with contextlib.suppress(OSError):  # the event's semaphore may be gone; the timer still fires
            abort.set()
        sweep(parent)

    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
