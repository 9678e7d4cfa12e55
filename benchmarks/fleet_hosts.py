"""A posestream fleet on real network hosts made of namespaces (`benchmarks.netns`), for the fleet's
network tests and the fault benchmark (`benchmarks/fleet_faults.py`): one place that starts Ray
on the hosts, runs `posestream fleet run` there, records the aggregated stream from another host,
and knows where each camera's pipeline runs.

Hosts: `head` (Ray head with no CPUs for cameras: the `fleet run` driver, controller and aggregator
live there), workers (`ray start --address`, one CPU each, where the cameras run) and `client`
(no Ray: subscribers, legitimate or not). Ray's token authentication is on, with a token made for
this cluster. Every Ray node is `ray start --block` in its own session with a /dev/shm of its own
(a tmpfs that goes when the node's last process does), so killing a host's processes
(`TestNet.kill_all`) is what a crashed machine looks like, shared memory included, and nothing
outside the namespaces is touched.

Each Ray node runs as under a service manager with `Restart=always`: when its `ray start --block`
exits unasked (a raylet that the head declared dead after a partition exits when it reconnects,
and one that lost its head exits after 60 s), it is started again after `RESTART_S`, and the
restart is recorded. A host killed on purpose (`kill_host`) stays down until `start_node`.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Sequence

from posestream.benchmarks.netns import TestNet

RAY_PORT = 6379
PIPELINE_MODULE = b"posestream.stream.fleet.worker"
RESTART_S = 2.0  # the service manager's pause before starting an exited Ray node again
OBJECT_STORE_BYTES = 100_000_000  # the fleet puts nothing in Ray's object store
# A machine's own /dev/shm for a command: a private mount namespace with a fresh tmpfs there.
OWN_SHM = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
           'mount -t tmpfs -o size=1g,mode=1777 tmpfs /dev/shm && exec "$@"', "sh"]


def wait_for(what: str, check: Callable[[], Any], timeout_s: float, poll_s: float = 0.25) -> Any:
    """`check()`'s first truthy value; `TimeoutError` naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


class FleetHosts:
    """`FleetHosts(workers, work_dir)`: namespaces head, *workers, client and a Ray cluster on
    them. `close()` (safe twice) kills everything inside and deletes the namespaces."""

    def __init__(self, workers: Sequence[str], work_dir: Path, env: dict[str, str] | None = None) -> None:
        self.workers = tuple(workers)
        self.work_dir = Path(work_dir)
        self.net = TestNet(["head", *self.workers, "client"])
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
                    "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1", **(env or {})}
        self.nodes: dict[str, subprocess.Popen] = {}
        self.node_restarts: list[tuple[float, str]] = []  # (time, host) of service-manager restarts
        self._logs: list[IO[str]] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        try:
            for host in ("head", *self.workers):
                self.start_node(host)
            threading.Thread(target=self._service_manager, daemon=True, name="ray-nodes").start()
            self.wait_nodes(1 + len(self.workers))
        except BaseException:
            self.close()
            raise

    def _service_manager(self) -> None:
        """Start again every Ray node whose `ray start --block` exited unasked."""
        while not self._closing.wait(0.5):
            with self._lock:
                exited = [host for host, node in self.nodes.items() if node.poll() is not None]
            for host in exited:
                if self._closing.wait(RESTART_S):
                    return
                with self._lock:
                    if host in self.nodes and self.nodes[host].poll() is not None:
                        self.node_restarts.append((time.time(), host))
                        self._start(host)

    @property
    def address(self) -> str:
        return f"{self.ip('head')}:{RAY_PORT}"

    def ip(self, host: str) -> str:
        return self.net.hosts[host].address

    def host_of(self, ip: str) -> str:
        return next(name for name, host in self.net.hosts.items() if host.address == ip)

    # -- processes in hosts -------------------------------------------------------------------------
    def log(self, name: str) -> Path:
        return self.work_dir / f"{name}.log"

    def popen(self, host: str, argv: Sequence[str], log_name: str, env: dict[str, str] | None = None,
              stdout: int | None = None) -> subprocess.Popen:
        """`argv` in `host`, in a session of its own; stderr (and stdout unless given) into a log."""
        out = self.log(log_name).open("a")
        self._logs.append(out)
        return subprocess.Popen(self.net.argv(host, *argv), env={**self.env, **(env or {})},
                                stdout=out if stdout is None else stdout, stderr=out,
                                start_new_session=True, text=True)

    def run(self, host: str, argv: Sequence[str], timeout_s: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(self.net.argv(host, *argv), env=self.env, capture_output=True,
                              text=True, timeout=timeout_s)

    def posestream(self, host: str, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
        return self.run(host, [sys.executable, "-m", "posestream", *args], timeout_s)

    # -- Ray nodes ---------------------------------------------------------------------------------
    def start_node(self, host: str) -> None:
        """`ray start --block` on `host` (the head when host is "head"), temp dir of its own."""
        with self._lock:
            self._start(host)

    def _start(self, host: str) -> None:
        temp = Path("/tmp") / self.net.hosts[host].namespace  # short: Ray's socket paths are bounded
        argv = [*OWN_SHM, str(Path(sys.executable).with_name("ray")), "start", "--block",
                "--disable-usage-stats", f"--node-ip-address={self.ip(host)}", f"--temp-dir={temp}",
                f"--object-store-memory={OBJECT_STORE_BYTES}"]
        if host == "head":
            argv += ["--head", f"--port={RAY_PORT}", "--num-cpus=0", "--include-dashboard=false"]
        else:
            argv += [f"--address={self.address}", "--num-cpus=1"]
        self.nodes[host] = self.popen(host, argv, f"ray-{host}")

    def kill_host(self, host: str) -> None:
        """Everything on `host` dies at once (SIGKILL), as when the machine crashes; its Ray node
        stays down until `start_node`."""
        with self._lock:
            self.nodes.pop(host, None)
            self.net.kill_all(host, grace_s=0)

    def wait_nodes(self, count: int, timeout_s: float = 180) -> None:
        """Until `count` Ray nodes are alive (asked from the head)."""
        code = ("import ray, time\n"
                f"ray.init(address='{self.address}', logging_level='ERROR')\n"
                f"while sum(n['Alive'] for n in ray.nodes()) < {count}: time.sleep(0.5)\n")
        done = self.run("head", [sys.executable, "-c", code], timeout_s)
        if done.returncode != 0:
            raise RuntimeError(f"Ray nodes did not come up: {done.stderr[-2000:]}")

    # -- camera pipelines --------------------------------------------------------------------------
    def pipelines(self) -> dict[str, list[str]]:
        """host -> the cameras whose pipeline process runs there (one entry per process)."""
        found: dict[str, list[str]] = {}
        for host in self.net.hosts:
            for pid in self.net.pids(host):
                try:
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                if PIPELINE_MODULE in argv and b"--pipeline" in argv:
                    found.setdefault(host, []).append(argv[argv.index(b"--camera") + 1].decode())
        return found

    def close(self) -> None:
        self._closing.set()
        with self._lock:
            self.nodes.clear()
        self.net.close()
        for host in self.net.hosts.values():
            shutil.rmtree(Path("/tmp") / host.namespace, ignore_errors=True)
        for out in self._logs:
            out.close()
        self._logs.clear()

    def __enter__(self) -> "FleetHosts":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Frame:
    t: float          # arrival at the recorder
    stream: str
    frame: int
    epoch: int | None
    publish_ts: float


@dataclass
class Recording:
    """What one recorder process (`benchmarks.fleet_recorder`) saw, filled by a reader thread."""

    process: subprocess.Popen
    frames: list[Frame] = field(default_factory=list)
    status: dict[str, dict[str, Any]] = field(default_factory=dict)  # camera -> its latest row
    gaps: list[dict[str, Any]] = field(default_factory=list)
    messages: int = 0  # raw mode: anything at all that arrived
    ready: threading.Event = field(default_factory=threading.Event)

    def _read(self) -> None:
        for line in self.process.stdout:  # type: ignore[union-attr]
            event = json.loads(line)
            kind = event["kind"]
            if kind == "frame":
                self.frames.append(Frame(event["t"], event["stream"], event["frame"], event["epoch"],
                                         event["publish_ts"]))
            elif kind == "status":
                self.status.update({row["name"]: row for row in event["cameras"]})
            elif kind == "gap":
                self.gaps.append(event)
            elif kind == "message":
                self.messages += 1
            elif kind == "ready":
                self.ready.set()

    def frames_of(self, camera: str, since: float = 0.0) -> list[Frame]:
        return [f for f in list(self.frames) if f.stream == camera and f.t > since]

    def first_after(self, camera: str, since: float) -> float | None:
        frames = self.frames_of(camera, since)
        return frames[0].t if frames else None

    def disorder(self, camera: str) -> list[tuple[int | None, int]]:
        """(epoch, frame) pairs that did not follow the previous one strictly upwards: duplicate
        or out-of-order frames (an empty list is what the fleet promises)."""
        bad, last = [], (-1, -1)
        for f in self.frames_of(camera):
            key = (f.epoch if f.epoch is not None else -1, f.frame)
            if key <= last:
                bad.append(key)
            last = max(last, key)
        return bad

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def record(hosts: FleetHosts, url: str, name: str, curve: tuple[Path, Path] | None = None,
           raw: bool = False) -> Recording:
    """Start a recorder on the client host; returns once it is connected (or tried to be)."""
    argv = [sys.executable, "-m", "posestream.benchmarks.fleet_recorder", url]
    if curve:
        argv += ["--curve", str(curve[0]), str(curve[1])]
    if raw:
        argv.append("--raw")
    recording = Recording(hosts.popen("client", argv, f"recorder-{name}", stdout=subprocess.PIPE))
    threading.Thread(target=recording._read, daemon=True, name=f"recorder-{name}").start()
    if not recording.ready.wait(60):
        recording.close()
        raise RuntimeError(f"recorder {name} did not start: {hosts.log(f'recorder-{name}').read_text()[-2000:]}")
    return recording
