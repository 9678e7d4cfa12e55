"""The camera actor: one per camera, on the node Ray placed it, supervising that camera's pipeline.

Why one actor per camera (not one per node group): Ray then places, accounts and re-places each
camera on its own (its `num_cpus`/`num_gpus` are the actor's resources), a camera whose node leaves
is rescheduled wherever one camera's worth of resources is free, and one camera's trouble never
touches another's actor. The cost, one idle Python process per camera, is measured in docs/fleet.md.

The actor runs the pipeline through a launcher process (`posestream.stream.fleet.worker`, which
says why), restarts it with capped exponential backoff when it exits unasked, and stops it with
SIGTERM (the pipeline drains, flushes its sinks and unlinks its rings; the launcher kills it after
`fleet.stop_timeout_s`).
Ray itself never sees a frame: the pipeline publishes on its own zmq endpoint on this node.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from posestream.stream.fleet.worker import EXIT_UNREACHABLE

log = logging.getLogger(__name__)

POLL_S = 0.2


class CameraActor:
    """Created by the controller as a Ray actor with the camera's resources.

    `job`: camera name, source, index, full config, and the fleet settings the actor needs
    (camera_host, camera_port_first, restart_initial_s, restart_max_s, stable_s, stop_timeout_s).
    """

    def __init__(self, job: dict[str, Any]) -> None:
        import ray

        self.job = job
        self.node_id = ray.get_runtime_context().get_node_id()
        self.node_ip = ray.util.get_node_ip_address()
        self.host = job["camera_host"] or self.node_ip
        self.state = "starting"
        self.restarts = 0
        self.error = ""
        self.endpoint = ""
        self.pid: int | None = None
        self.exit_code: int | None = None   # of the last pipeline that ended
        self.failure = ""                   # "unreachable" / "restarting": why the last one ended
        self.started_at = 0.0          # time.time() of the current pipeline's start
        self._process: subprocess.Popen | None = None
        self._error_file = os.path.join(tempfile.gettempdir(),
                                        f"posestream-fleet-{os.getpid()}-{job['index']}.err")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # The pipeline's parent-death signal follows the thread that forked it, so one long-lived
        # thread starts every incarnation and lives exactly as long as the actor's work.
        self._thread = threading.Thread(target=self._supervise, name=f"camera-{job['name']}",
                                        daemon=True)
        self._thread.start()

    # -- answers to the controller ---------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        with self._lock:
            return {"name": self.job["name"], "node_id": self.node_id, "node_ip": self.node_ip,
                    "state": self.state, "restarts": self.restarts, "error": self.error,
                    "endpoint": self.endpoint, "pid": self.pid, "exit_code": self.exit_code,
                    "failure": self.failure,
                    "uptime_s": time.time() - self.started_at if self.state == "running" else 0.0}

    def stop(self, timeout_s: float) -> dict[str, Any]:
        """Stop the pipeline cleanly (SIGTERM: drain, flush sinks, unlink rings); kill it after
        `timeout_s`. Returns the final status, with the pipeline's exit code in `error` if not 0."""
        self._stop.set()
        with self._lock:
            process = self._process
        running = process is not None and process.poll() is None
        if running:
            process.send_signal(signal.SIGTERM)  # the launcher escalates after timeout_s itself
            try:
                process.wait(timeout_s + 5)
            except subprocess.TimeoutExpired:
                log.warning("camera %s: launcher did not stop within %.0f s; killing it",
                            self.job["name"], timeout_s + 5)
                process.kill()  # its pipeline still gets SIGTERM (parent-death signal)
                process.wait()
        self._thread.join(timeout_s)
        with contextlib.suppress(OSError):
            os.unlink(self._error_file)
        with self._lock:
            self.state = "stopped"
            self.pid = None
            if not running:  # stopped during a backoff: no pipeline was asked to stop
                self.exit_code = None
        return self.status()

    # -- supervision ------------------------------------------------------------------------------
    def _supervise(self) -> None:
        delay = self.job["restart_initial_s"]
        while not self._stop.is_set():
            started = time.monotonic()
            code = self._run_once()
            if self._stop.is_set():
                return
            if time.monotonic() - started >= self.job["stable_s"]:
                delay = self.job["restart_initial_s"]
            with self._lock:
                self.restarts += 1
                self.pid = None
                if code == EXIT_UNREACHABLE:
                    self.state = "unreachable"
                    self.error = "the camera could not be opened or stopped delivering"
                else:
                    self.state = "restarting"
                    self.error = f"pipeline exited with code {code}"
                with contextlib.suppress(OSError):
                    with open(self._error_file, encoding="utf-8") as fh:
                        self.error = fh.read().strip() or self.error
                self.failure = self.state
            log.warning("camera %s: %s; retrying in %.1f s", self.job["name"], self.error, delay)
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, self.job["restart_max_s"])

    def _run_once(self) -> int:
        """Start one pipeline incarnation and wait for it to exit; its exit code."""
        # A fixed port per camera (first + its index): two cameras never share an endpoint, so
        # the aggregator cannot mistake one camera's frames for another's, wherever they run.
        port = self.job["camera_port_first"] + self.job["index"]
        host = f"[{self.host}]" if ":" in self.host else self.host
        endpoint = f"tcp://{host}:{port}"
        work = {"camera": self.job["name"], "source": self.job["source"], "config": self.job["config"].to_json(),
                "endpoint": endpoint, "stop_timeout_s": self.job["stop_timeout_s"], "error_file": self._error_file}
        with contextlib.suppress(OSError):
            os.unlink(self._error_file)
        # The launcher (see worker.py); the camera's name only labels it for `ps`.
        process = subprocess.Popen([sys.executable, "-m", "posestream.stream.fleet.worker",
                                    "--camera", self.job["name"]], stdin=subprocess.PIPE)
        with self._lock:
            self._process = process
            self.pid = process.pid
            self.endpoint = endpoint
            self.started_at = time.time()
            self.state = "running"
        with contextlib.suppress(BrokenPipeError):  # a worker that died at once: its exit says why
            with process.stdin:  # type: ignore[union-attr]  (stdin=PIPE)
                process.stdin.write(json.dumps(work).encode("utf-8"))  # type: ignore[union-attr]
        while True:
            try:
                code = process.wait(POLL_S)
                break
            except subprocess.TimeoutExpired:
                continue
        with self._lock:
            self.exit_code = code
        return code
