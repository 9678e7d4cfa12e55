"""The supervisor with real stage processes (a lavfi test source needs no model): tagged errors,
deaths noticed at once, restarts, hangs caught by heartbeats, and shutdown escalation."""
from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from posestream.stream.core.config import load_config
from posestream.stream.core.errors import InputNotFoundError, StageError
from posestream.stream.ring import FrameRing
from posestream.stream.stage_bodies import run_source
from posestream.stream.stage_runtime import StageFailure, StageIO, Work
from posestream.stream.supervisor import Supervisor, SupervisorSettings

CTX = multiprocessing.get_context("spawn")
LAVFI = "lavfi:testsrc=size=160x120:rate=25"


def _settings(**changes: Any) -> SupervisorSettings:
    values = dict(heartbeat_s=0.1, heartbeat_timeout_s=1.0, startup_timeout_s=30.0, max_restarts=2,
                  abort_timeout_s=1.0, kill_timeout_s=1.0)
    values.update(changes)
    return SupervisorSettings(**values)


def _add_source(sup: Supervisor, spec: str, restartable: bool = False) -> tuple[Any, Any, Any]:
    cond = CTX.Condition()
    reader, writer = CTX.Pipe(duplex=False)
    io = StageIO([], writer, [cond], 1, 1, 0)
    stage = sup.add("source0", run_source, {"io": io, "spec": spec, "stream_id": 0, "policy": None},
                    load_config(), restartable)
    return stage, cond, reader


def _poll_for(sup: Supervisor, kind: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for _, got, payload in sup.poll(0.1):
            if got == kind:
                return payload
    raise AssertionError(f"no '{kind}' message within {timeout} s")


def _poll_until_raises(sup: Supervisor, timeout: float) -> tuple[BaseException, float]:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            sup.poll(0.1)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            return exc, time.monotonic() - started
    raise AssertionError(f"the supervisor raised nothing within {timeout} s")


@pytest.mark.parametrize("error, expected, text", [
    (InputNotFoundError("source not found: x.mp4"), InputNotFoundError, "source0: source not found: x.mp4"),
    (ValueError("bad frame"), StageError, "stage 'source0' failed: ValueError: bad frame"),
    (KeyError("k"), StageError, "stage 'source0' failed: KeyError"),
])
def test_failure_is_picklable_and_keeps_the_error_class(error: Exception, expected: type, text: str) -> None:
    try:
        raise error
    except Exception as exc:  # noqa: BLE001 - building the failure from a live traceback
        failure = StageFailure.from_exception("source0", exc)
    raised = pickle.loads(pickle.dumps(failure)).to_exception()
    assert type(raised) is expected
    assert text in str(raised)


def test_stage_error_arrives_with_its_class() -> None:
    with Supervisor(_settings(), 1, CTX) as sup:
        _add_source(sup, "/nonexistent/clip.mp4")
        sup.start_all()
        exc, _ = _poll_until_raises(sup, 60)
    assert isinstance(exc, InputNotFoundError)
    assert "source0" in str(exc) and "/nonexistent/clip.mp4" in str(exc)


def test_sigkill_is_noticed_at_once_and_names_the_stage() -> None:
    with Supervisor(_settings(), 1, CTX) as sup:
        stage, _, _ = _add_source(sup, LAVFI)
        sup.start_all()
        _poll_for(sup, "info")
        os.kill(stage.process.pid, signal.SIGKILL)
        exc, waited = _poll_until_raises(sup, 10)
    assert isinstance(exc, StageError)
    assert str(exc) == "stage 'source0' was killed by SIGKILL; stopping the pipeline"
    assert waited < 2.0


def test_restartable_stage_comes_back() -> None:
    with Supervisor(_settings(), 1, CTX) as sup:
        stage, _, _ = _add_source(sup, LAVFI, restartable=True)
        sup.start_all()
        _poll_for(sup, "info")
        first = stage.process.pid
        os.kill(first, signal.SIGKILL)
        _poll_for(sup, "info")  # the new process opened the source again
        assert stage.restarts == 1 and stage.process.pid != first


def test_restarts_are_capped() -> None:
    with Supervisor(_settings(max_restarts=1), 1, CTX) as sup:
        stage, _, _ = _add_source(sup, LAVFI, restartable=True)
        sup.start_all()
        _poll_for(sup, "info")
        os.kill(stage.process.pid, signal.SIGKILL)
        _poll_for(sup, "info")  # restart 1 of 1
        os.kill(stage.process.pid, signal.SIGKILL)
        exc, _ = _poll_until_raises(sup, 10)
    assert stage.restarts == 1
    assert str(exc) == "stage 'source0' was killed by SIGKILL; stopping the pipeline"


def test_hung_stage_is_caught_by_its_heartbeat_and_shm_is_unlinked() -> None:
    with Supervisor(_settings(heartbeat_timeout_s=1.0), 1, CTX) as sup:
        stage, cond, frames = _add_source(sup, LAVFI)
        sup.start_all()
        info = _poll_for(sup, "info")["info"]
        with FrameRing.create(4, info.max_height, info.max_width, cond) as ring:
            segment = Path("/dev/shm", ring.name)
            stage.control.send(("ring", (ring.name, 1, "cam")))
            assert frames.poll(30), "the source published nothing"
            assert isinstance(frames.recv(), Work)
            assert stage.ready
            pid = stage.process.pid
            os.kill(pid, signal.SIGSTOP)
            exc, waited = _poll_until_raises(sup, 10)
    assert isinstance(exc, StageError)
    assert "stage 'source0' stopped responding (no heartbeat for" in str(exc)
    assert 0.9 < waited < 3.0
    assert not Path(f"/proc/{pid}").exists()  # killed and reaped
    assert not segment.exists()


def test_close_escalates_to_kill_for_a_frozen_stage() -> None:
    sup = Supervisor(_settings(abort_timeout_s=0.3, kill_timeout_s=0.5), 1, CTX)
    stage, _, _ = _add_source(sup, LAVFI)
    sup.start_all()
    _poll_for(sup, "info")
    pid = stage.process.pid
    os.kill(pid, signal.SIGSTOP)  # ignores the abort event and SIGTERM (until continued)
    started = time.monotonic()
    sup.close()
    sup.close()
    assert time.monotonic() - started < 3.0
    assert stage.exitcode == -signal.SIGKILL
    assert not Path(f"/proc/{pid}").exists()


def test_close_stops_a_waiting_stage_with_the_abort_event() -> None:
    sup = Supervisor(_settings(), 1, CTX)
    stage, _, _ = _add_source(sup, LAVFI)
    sup.start_all()
    _poll_for(sup, "info")
    sup.close()
    assert stage.exitcode == 0  # left on the abort event, no signal needed
