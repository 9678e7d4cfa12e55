"""`posestream run` on a real RTSP camera (the `rtsp_server` fixture) whose server is killed and
restarted, or frozen with SIGSTOP: the run logs lost/restored, keeps running, produces results
from frames captured after the restart, reports the counts in its metrics, stops cleanly on
Ctrl-C (exit 130) even while the camera hangs, and leaves no shared-memory segment behind.

Results are read over a ZMQ subscription, since its messages carry each frame's `capture_ts`."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from posestream.stream.client import Subscriber

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

STREAM = "127.0.0.1_live"  # the default name of rtsp://127.0.0.1:PORT/live
READ_TIMEOUT_S = 2.0
SETTINGS = {
    "source.connect_timeout_s": 3.0, "source.read_timeout_s": READ_TIMEOUT_S,
    "source.reconnect_initial_s": 0.25, "source.reconnect_max_s": 1.0,
    "detector.threads": 1, "detector.input_size": 320,  # light on 2 shared cores
}
STARTUP_S = 60.0  # model load and first results on a busy machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Run:
    """`posestream -v run` in a subprocess; its stderr is read by a thread into timestamped lines
    (so the pipe never fills and the tests can tell when a line appeared)."""

    def __init__(self, home: Path, source: str, sinks: list[str], metrics: Path) -> None:
        env = dict(os.environ, POSESTREAM_HOME=str(home))
        sets = [f"--set={key}={value}" for key, value in SETTINGS.items()]
        sink_args = [arg for sink in sinks for arg in ("--sink", sink)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "posestream", "-v", "run", "--quiet", "--source", source,
             *sink_args, "--metrics", str(metrics), *sets],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    @property
    def log(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def wait_for_line(self, pattern: str, timeout: float) -> float:
        """The monotonic time at which a line matching `pattern` was read."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, line in list(self.lines):
                if re.search(pattern, line):
                    return at
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r} within {timeout} s:\n{self.log[-4000:]}")

    def interrupt(self, timeout: float) -> tuple[int, float]:
        """Ctrl-C; returns (exit code, seconds until the process exited)."""
        sent = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout)
        exited = time.monotonic() - sent
        self._reader.join(5)
        return code, exited

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(5)


class Results:
    """Every ZMQ message of the run, collected on a thread."""

    def __init__(self, endpoint: str) -> None:
        self.messages: list[dict[str, Any]] = []
        self._subscriber = Subscriber(endpoint)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        while not self._stop.is_set():
            message = self._subscriber.receive(timeout=0.2)
            if message is not None:
                self.messages.append(message)

    def wait_for(self, check: Callable[[list[dict[str, Any]]], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check(list(self.messages)):
                return
            time.sleep(0.1)
        raise AssertionError(f"{what} within {timeout} s ({len(self.messages)} results in all)")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._subscriber.close()


def _start(home: Path, server: Any, tmp_path: Path) -> tuple[Run, Results, Path]:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    results = Results(endpoint)
    metrics = tmp_path / "metrics.json"
    run = Run(home, server.url, [f"zmq:{endpoint}", f"json:{tmp_path / 'out.json'}"], metrics)
    results.wait_for(lambda m: len(m) >= 5, "no 5 results from the camera", STARTUP_S)
    return run, results, metrics


def _rings(log: str) -> list[str]:
    names = re.findall(r"created frame ring (\S+):", log)
    assert names, "no frame ring was logged"
    return names


def _captured_after(messages: list[dict[str, Any]], wall_ts: float) -> list[dict[str, Any]]:
    return [m for m in messages if m["capture_ts"] > wall_ts]


def test_server_killed_and_restarted_is_lost_then_restored(
        prepared_home: Path, rtsp_server: Any, tmp_path: Path) -> None:
    run, results, metrics = _start(prepared_home, rtsp_server, tmp_path)
    try:
        killed_at = time.time()
        rtsp_server.kill()
        run.wait_for_line(rf"source {STREAM}: lost \(", 5 + READ_TIMEOUT_S)
        time.sleep(max(0.0, killed_at + 3.0 - time.time()))  # the camera is away for 3 s
        restarted_at = time.time()
        rtsp_server.start()
        run.wait_for_line(rf"source {STREAM}: restored", 20)
        results.wait_for(lambda m: len(_captured_after(m, restarted_at)) >= 3,
                         "no 3 results from frames captured after the restart", 30)
        assert run.proc.poll() is None, "the run ended while the camera was away"
        code, exited = run.interrupt(timeout=30)
    finally:
        run.close()
        results.close()
    log = run.log
    assert code == 130, log[-4000:]
    messages = results.messages
    before = [m for m in messages if m["capture_ts"] < killed_at]
    after = _captured_after(messages, restarted_at)
    assert before and after
    frames = [m["frame"] for m in messages]
    assert frames == sorted(set(frames))  # one numbering across the outage, in order
    assert min(m["frame"] for m in after) > max(m["frame"] for m in before)
    assert all(m["stream"] == STREAM for m in messages)
    lost = [i for i, line in enumerate(log.splitlines()) if f"source {STREAM}: lost (" in line]
    restored = [i for i, line in enumerate(log.splitlines()) if f"source {STREAM}: restored" in line]
    assert len(lost) == 1 and len(restored) == 1 and lost[0] < restored[0], log[-4000:]
    assert "Traceback" not in log and "posestream: error" not in log
    report = json.loads(metrics.read_text())
    stream = report["streams"][STREAM]
    assert (report["status"], report["signal"], stream["policy"]) == ("interrupted", "SIGINT", "live")
    assert (stream["source"]["lost"], stream["source"]["restored"]) == (1, 1)
    assert stream["source"]["reconnect_attempts"] >= 1
    assert stream["frames_out"] >= len(messages)
    assert not any(Path("/dev/shm", name).exists() for name in _rings(log))


def test_frozen_server_is_lost_within_the_timeout_and_ctrl_c_still_stops(
        prepared_home: Path, rtsp_server: Any, tmp_path: Path) -> None:
    run, results, metrics = _start(prepared_home, rtsp_server, tmp_path)
    try:
        frozen_at = time.monotonic()
        rtsp_server.freeze()
        lost_at = run.wait_for_line(rf"source {STREAM}: lost \(", READ_TIMEOUT_S + 5)
        time.sleep(1.0)  # a reconnect attempt is now blocked on the frozen server
        assert run.proc.poll() is None, "the run ended while the camera hung"
        code, exited = run.interrupt(timeout=30)
    finally:
        rtsp_server.thaw()
        run.close()
        results.close()
    log = run.log
    assert lost_at - frozen_at <= READ_TIMEOUT_S + 1.5, f"lost after {lost_at - frozen_at:.1f} s"
    assert code == 130, log[-4000:]
    # Bounded by one connect + read timeout of the reader thread, plus the drain.
    assert exited < 15, f"Ctrl-C took {exited:.1f} s with the camera frozen"
    assert "Traceback" not in log and "posestream: error" not in log
    report = json.loads(metrics.read_text())
    stream = report["streams"][STREAM]
    assert report["status"] == "interrupted"
    assert (stream["source"]["lost"], stream["source"]["restored"]) == (1, 0)
    assert stream["frames_out"] >= 5
    assert not any(Path("/dev/shm", name).exists() for name in _rings(log))


RESTARTS = 5


def test_camera_restarted_five_times_within_a_minute_is_restored_each_time(
        prepared_home: Path, rtsp_server: Any, tmp_path: Path) -> None:
    """Repeated camera loss: the server is killed and restarted five times inside a minute; every
    time the run logs lost then restored and delivers results from frames captured after the
    restart, and its counters say five of each."""
    run, results, metrics = _start(prepared_home, rtsp_server, tmp_path)
    cycles: list[tuple[float, float]] = []
    try:
        first_kill = time.monotonic()
        for cycle in range(1, RESTARTS + 1):
            killed_at = time.time()
            rtsp_server.kill()
            _wait_for_count(run, rf"source {STREAM}: lost \(", cycle, 5 + READ_TIMEOUT_S)
            restarted_at = time.time()
            rtsp_server.start()
            _wait_for_count(run, rf"source {STREAM}: restored", cycle, 20)
            results.wait_for(lambda m: len(_captured_after(m, restarted_at)) >= 2,
                             f"no results after restart {cycle}", 20)
            cycles.append((killed_at, restarted_at))
        within = time.monotonic() - first_kill
        print(f"{RESTARTS} restarts, each restored with results, in {within:.1f} s")
        assert run.proc.poll() is None, "the run ended while the camera came and went"
        code, _ = run.interrupt(timeout=30)
    finally:
        run.close()
        results.close()
    log = run.log
    assert code == 130, log[-4000:]
    assert within <= 60.0, f"the five restarts took {within:.0f} s"
    report = json.loads(metrics.read_text())
    source = report["streams"][STREAM]["source"]
    assert (source["lost"], source["restored"]) == (RESTARTS, RESTARTS), source
    assert source["reconnect_attempts"] >= RESTARTS
    frames = [m["frame"] for m in results.messages]
    assert frames == sorted(set(frames))  # one numbering across all outages
    for _, restarted_at in cycles:
        assert _captured_after(results.messages, restarted_at)
    assert "Traceback" not in log and "posestream: error" not in log
    assert not any(Path("/dev/shm", name).exists() for name in _rings(log))


def _wait_for_count(run: Run, pattern: str, count: int, timeout: float) -> None:
    """Wait until `count` lines match `pattern`."""
    deadline = time.monotonic() + timeout
    while sum(bool(re.search(pattern, line)) for _, line in list(run.lines)) < count:
        assert run.proc.poll() is None and time.monotonic() < deadline, \
            f"fewer than {count} lines matching {pattern!r} within {timeout} s:\n{run.log[-4000:]}"
        time.sleep(0.05)
