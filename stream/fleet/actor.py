"""The camera actor: one per camera, on the node Ray placed it, supervising that camera's pipeline.

Why one actor per camera (not one per node group): Ray then places, accounts and re-places each
camera on its own (its `num_cpus`/`num_gpus` are the actor's resources), a camera whose node leaves
is rescheduled wherever one camera's worth of resources is free, and one camera's trouble never
touches another's actor. The cost, one idle Python process per camera, is measured in docs/fleet.md.

The actor runs the pipeline through a launcher process (`posestream.stream.fleet.worker`, which
says why), restarts it with capped exponential backoff when it exits unasked, and stops it with
SIGTERM (the pipeline drains, flushes its sinks and unlinks its rings; the launcher kills it after
`fleet.stop_timeout_s`).
Ray itself never sees a frame: the pipeline publishes on its own zmq endpoint on this node, as a
CURVE server that admits only the aggregator (`fleet.keys` says which keys travel where).

**Lease.** The controller asks every actor for its status a few times a second. An actor that has
heard nothing for `fleet.lease_s` (its node cut off, the controller gone) stops its pipeline and
starts none again: the controller replaces a silent camera only after longer than that, so a camera
cut off by a partition has stopped before its replacement starts. A lease that ran out stays lost:
when a partition heals, the status call the controller sent before it can still arrive here before
Ray's kill does, and must not revive an actor that was replaced meanwhile (it would run the camera
twice). The controller replaces a fenced actor it still holds. **Epoch**: every pipeline
incarnation stamps its frames with a number that grows with each restart and each new actor (the
controller's clock at the actor's creation plus the time since, in ms), which the aggregator uses
to drop anything from a stale incarnation.
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

from posestream.stream.core.errors import PosestreamError
from posestream.stream.core.settings import Settings
from posestream.stream.curve_keys import KeyPair
from posestream.stream.fleet.keys import KeyFolder, camera_keys
from posestream.stream.fleet.worker import EXIT_UNREACHABLE

log = logging.getLogger(__name__)

POLL_S = 0.2
FENCED = -1000  # `_run_once` result: the pipeline was stopped because the lease ran out


class CameraActor:
    """Created by the controller as a Ray actor with the camera's resources.

    `job`: camera name, source, index, full config, generation (controller ms at creation), the
    CURVE material (`curve`, the aggregator's `client_public` key, the `keys` folder and the
    camera's `pinned` public key, all public) and the fleet settings the actor needs (camera_host,
    camera_port_first, restart_initial_s, restart_max_s, stable_s, stop_timeout_s, lease_s).
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
        self.public_key = ""
        self.epoch = 0
        self.pid: int | None = None
        self.exit_code: int | None = None   # of the last pipeline that ended
        self.failure = ""                   # "unreachable" / "restarting": why the last one ended
        self.started_at = 0.0          # time.time() of the current pipeline's start
        self._born = time.monotonic()
        self._pair: KeyPair | None = None   # this actor's CURVE server pair, made or read once
        self._contact = time.monotonic()  # the controller's last status call
        self._lease_lost = False  # the lease ran out once: no call renews it (see the module)
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
        """The camera's state; each call also renews the actor's lease, unless it ran out."""
        with self._lock:
            if self._lease_ran_out():  # e.g. sent before a partition, delivered when it healed
                log.warning("camera %s: word from the controller after the lease ran out; staying "
                            "stopped (the controller replaces this actor)", self.job["name"])
            self._contact = time.monotonic()
            return {"name": self.job["name"], "node_id": self.node_id, "node_ip": self.node_ip,
                    "state": self.state, "restarts": self.restarts, "error": self.error,
                    "endpoint": self.endpoint, "public_key": self.public_key, "epoch": self.epoch,
                    "pid": self.pid, "exit_code": self.exit_code, "failure": self.failure,
                    "uptime_s": time.time() - self.started_at if self.state == "running" else 0.0}

    def stop(self, timeout_s: float) -> dict[str, Any]:
        """Stop the pipeline cleanly (SIGTERM: drain, flush sinks, unlink rings); kill it after
        `timeout_s`. Returns the final status, with the pipeline's exit code in `error` if not 0."""
        self._stop.set()
        with self._lock:
            process = self._process
        running = process is not None and process.poll() is None
        if running:
            self._terminate(process, timeout_s)
        self._thread.join(timeout_s)
        with contextlib.suppress(OSError):
            os.unlink(self._error_file)
        with self._lock:
            self.state = "stopped"
            self.pid = None
            if not running:  # stopped during a backoff: no pipeline was asked to stop
                self.exit_code = None
        return self.status()

    def _terminate(self, process: subprocess.Popen, timeout_s: float) -> None:
        process.send_signal(signal.SIGTERM)  # the launcher escalates after stop_timeout_s itself
        try:
            process.wait(timeout_s + 5)
        except subprocess.TimeoutExpired:
            log.warning("camera %s: launcher did not stop within %.0f s; killing it",
                        self.job["name"], timeout_s + 5)
            process.kill()  # its pipeline still gets SIGTERM (parent-death signal)
            process.wait()

    # -- supervision ------------------------------------------------------------------------------
    def _lease_ran_out(self) -> bool:
        """Whether the lease ever ran out (latched; called with the lock held)."""
        self._lease_lost = self._lease_lost or time.monotonic() - self._contact > self.job["lease_s"]
        return self._lease_lost

    def _leased(self) -> bool:
        with self._lock:
            return not self._lease_ran_out()

    def _set(self, state: str, error: str) -> None:
        with self._lock:
            self.state, self.error, self.pid = state, error, None

    def _supervise(self) -> None:
        delay = self.job["restart_initial_s"]
        while not self._stop.is_set():
            if not self._leased():  # cut off (here or during a backoff): start nothing, ever
                self._set("fenced", f"no word from the fleet controller for {self.job['lease_s']:g} s; "
                          "pipeline stopped so the camera never runs twice")
                return
            started = time.monotonic()
            try:
                keys = self._keys()
            except PosestreamError as exc:
                code = EXIT_UNREACHABLE
                self._set("refused", f"{exc} (node {self.node_ip})")
            else:
                try:
                    code = self._run_once(keys)
                finally:
                    if keys is not None:
                        keys.close()
            if self._stop.is_set():
                return
            if code == FENCED:
                log.warning("camera %s: lease ran out (no word from the controller for %g s); "
                            "pipeline stopped", self.job["name"], self.job["lease_s"])
                continue  # fenced at the top of the loop
            if time.monotonic() - started >= self.job["stable_s"]:
                delay = self.job["restart_initial_s"]
            with self._lock:
                self.restarts += 1
                self.pid = None
                if self.state != "refused":  # the pipeline ran and ended: its exit says why
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

    def _keys(self) -> KeyFolder | None:
        """The pipeline's CURVE files for this run (None without CURVE), from the actor's pair; its
        public key is reported to the controller, which gives it to the aggregator. The pipeline
        process removes the folder when it exits, the actor too (whichever outlives the other)."""
        if not self.job["curve"]:
            return None
        if self._pair is None:
            pinned = self.job["pinned"].encode("ascii") if self.job["pinned"] else None
            self._pair = camera_keys(self.job["keys"], self.job["name"], pinned)
            self.public_key = self._pair.public.decode("ascii")
        return KeyFolder(self.job["name"], self._pair, self.job["client_public"].encode("ascii"))

    def _config(self, keys: KeyFolder | None) -> Settings:
        """The job's settings with this incarnation's stream settings: CURVE files and epoch."""
        return self.job["config"].with_overrides({"zmq": {
            "curve": keys is not None, "epoch": self.epoch,
            "server_secret_key": str(keys.server_secret_key) if keys else "",
            "allowed_clients": str(keys.allowed_clients) if keys else ""}})

    def _run_once(self, keys: KeyFolder | None) -> int:
        """Start one pipeline incarnation and wait for it to exit (its exit code), or stop it when
        the lease runs out (`FENCED`)."""
        # A fixed port per camera (first + its index): two cameras never share an endpoint, so
        # the aggregator cannot mistake one camera's frames for another's, wherever they run.
        port = self.job["camera_port_first"] + self.job["index"]
        host = f"[{self.host}]" if ":" in self.host else self.host
        endpoint = f"tcp://{host}:{port}"
        # Strictly growing per camera: the controller's clock at this actor's creation plus the
        # actor's own monotonic time since (never goes back, whatever the node's wall clock says).
        self.epoch = self.job["generation"] + int((time.monotonic() - self._born) * 1000)
        work = {"camera": self.job["name"], "source": self.job["source"], "config": self._config(keys).to_json(),
                "endpoint": endpoint, "stop_timeout_s": self.job["stop_timeout_s"],
                "error_file": self._error_file, "key_folder": str(keys.path) if keys else ""}
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
                if not self._leased() and not self._stop.is_set():
                    self._terminate(process, self.job["stop_timeout_s"])
                    code = FENCED
                    break
        with self._lock:
            self.exit_code = None if code == FENCED else code
        return code
