"""The fleet on a real two-node Ray cluster (head + worker, one CPU each, loopback), end to end
through the command line: three live cameras (a real clip looped through lavfi's movie filter and
two lavfi test sources) plus one unreachable RTSP camera; a camera's pipeline killed; the worker
node removed; a clean stop. One cluster and one fleet for the module keep it to about two minutes.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import zmq

from posestream.benchmarks.processes import interrupt
from posestream.stream.core import wire
from posestream.stream.core.errors import InputError
from posestream.stream.curve_keys import generate_key_pair

pytestmark = pytest.mark.slow

GOOD = ("clip", "bars", "grid")
BAD = "dead"
CLIP = "data/video/two_person_interaction_72f.mp4"
START_TIMEOUT_S = 150.0   # first frames of every camera: Ray workers + pipelines on a loaded 2-core box
RECOVER_S = 45.0          # the bound for cameras of a lost node


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker_pids(camera: str, pipeline_only: bool = False) -> list[int]:
    """Launcher and pipeline processes of `camera` (the worker module labels them with its name)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (b"posestream.stream.fleet.worker" in argv and camera.encode() in argv
                and (b"--pipeline" in argv or not pipeline_only)):
            pids.append(int(entry.name))
    return pids


def wait_for(what: str, check: Callable[[], Any], timeout: float, log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    tail = "" if log is None else "\n" + log.read_text(errors="replace")[-4000:]
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}{tail}")


class StreamWatch(threading.Thread):
    """Records the aggregated stream: arrival times of frames and the latest status per camera."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.frames: dict[str, list[float]] = {}
        self.status: dict[str, dict[str, Any]] = {}
        self.bad: list[str] = []
        self.heartbeats: list[dict[str, Any]] = []
        self._halt = threading.Event()
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.SUB)
        self._socket.subscribe(b"")
        self._socket.connect(url)

    def run(self) -> None:
        while not self._halt.is_set():
            if not self._socket.poll(200):
                continue
            topic, payload = self._socket.recv_multipart()
            try:
                message = wire.decode(topic, payload)  # the shared schema; topic = its own
            except InputError as exc:
                self.bad.append(str(exc))
                continue
            kind = wire.message_type(message)
            if kind == "status":
                for camera in message["cameras"]:
                    self.status[camera["name"]] = camera
            elif kind == "heartbeat":
                self.heartbeats.append(message)
            elif kind == "frame":
                self.frames.setdefault(message["stream"], []).append(time.time())

    def frames_after(self, camera: str, since: float) -> int:
        return sum(1 for t in self.frames.get(camera, []) if t > since)

    def close(self) -> None:
        self._halt.set()
        self.join(5)
        self._socket.close(0)
        self._context.term()


@pytest.fixture(scope="module")
def cluster(prepared_home: Path) -> Iterator[tuple[Any, Any, dict[str, str]]]:
    """Head and worker node, one CPU each, advertised and bound on loopback."""
    env = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "include_dashboard": False, "node_ip_address": "127.0.0.1"})
        try:
            worker = cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
            cluster.wait_for_nodes()
            yield cluster, worker, {**os.environ, **env}
        finally:
            cluster.shutdown()


def fleet_file(tmp: Path, shared: Path, publish: str, ports: int, *extra: str,
               **cameras: dict[str, Any]) -> Path:
    """FLEET.toml; `extra`: more `[fleet]` lines; a camera's "set" becomes its `[camera.set]`."""
    lines = ["[fleet]", f'publish = "{publish}"', f"camera_port_first = {ports}", f"camera_port_last = {ports + 19}",
             "status_interval_s = 1.0", "restart_initial_s = 0.5", "restart_max_s = 4.0",
             "actor_timeout_s = 15.0", *extra, ""]
    for name, camera in cameras.items():
        lines += ["[[camera]]", f'name = "{name}"']
        lines += [f"{key} = {value!r}".replace("'", '"') for key, value in camera.items() if key != "set"]
        if "set" in camera:
            lines += ["[camera.set]", *(f'"{key}" = {value!r}'.replace("'", '"')
                                        for key, value in camera["set"].items())]
        lines.append("")
    path = tmp / "FLEET.toml"
    path.write_text("\n".join(lines))
    return path


def start_fleet(path: Path, address: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    """`posestream fleet run FLEET.toml` on the test cluster (320-px detector), output into `log`."""
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "posestream", "fleet", "run", str(path),
                                 "--address", address, "--quiet", "--set", "detector.input_size=320"],
                                env=env, stdout=out, stderr=subprocess.STDOUT)


def cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "posestream", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_no_fleet_and_an_impossible_resource_request_are_one_clear_error_each(cluster: Any, tmp_path: Path, shared: Path) -> None:
    ray_cluster, _, env = cluster
    nothing = cli("fleet", "status", "--address", ray_cluster.address, env=env)
    assert nothing.returncode == 2
    assert "posestream: error: no fleet is running in Ray namespace 'posestream'" in nothing.stderr
    path = fleet_file(tmp_path, shared, f"tcp://127.0.0.1:{free_port()}", free_port(),
                      big={"source": "lavfi:testsrc=size=320x240:rate=5", "num_cpus": 4})
    done = cli("fleet", "run", str(path), "--address", ray_cluster.address, env=env)
    assert done.returncode == 2, done.stderr[-2000:]
    assert ("posestream: error: camera 'big' asks for num_cpus = 4 but the largest node of the "
            "cluster has 1 CPUs") in done.stderr


def test_fleet_survives_a_killed_camera_a_lost_node_and_a_bad_camera(
        cluster: Any, tmp_path: Path, shared: Path) -> None:
    ray_cluster, worker, env = cluster
    publish = f"tcp://127.0.0.1:{free_port()}"
    clip = shared / CLIP
    path = fleet_file(
        tmp_path, shared, publish, 20000 + free_port() % 40000,
        clip={"source": f"lavfi:movie={clip}:loop=0,setpts=N/FRAME_RATE/TB,scale=320:-2",
              "num_cpus": 0.25},
        bars={"source": "lavfi:testsrc=size=320x240:rate=5", "num_cpus": 0.25},
        grid={"source": "lavfi:testsrc2=size=320x240:rate=5", "num_cpus": 0.25},
        dead={"source": f"rtsp://127.0.0.1:{free_port()}/nothing-here", "num_cpus": 0.25})
    log = tmp_path / "fleet.log"
    watch = StreamWatch(publish)
    watch.start()
    run = start_fleet(path, ray_cluster.address, env, log)
    try:
        # Every good camera publishes on the one aggregated stream; the bad one is retried.
        wait_for("frames of every good camera", lambda: all(watch.frames.get(c) for c in GOOD),
                 START_TIMEOUT_S, log)
        wait_for("the bad camera reported unreachable", lambda: watch.status.get(BAD, {}).get("state")
                 == "unreachable" and watch.status[BAD]["restarts"] >= 1, 30, log)
        assert BAD not in watch.frames and not watch.bad
        assert set(watch.heartbeats[-1]["streams"]) == {*GOOD, BAD}  # one publisher, every camera
        status = cli("fleet", "status", "--address", ray_cluster.address, env=env)
        assert status.returncode == 0, status.stderr[-2000:]
        rows = {line.split()[0]: line for line in status.stdout.splitlines()[1:]}
        assert set(rows) == {*GOOD, BAD}
        assert "unreachable" in rows[BAD]

        # A camera's pipeline killed: restarted by its actor, the others never stop.
        (pid,) = worker_pids("bars", pipeline_only=True)
        os.kill(pid, signal.SIGKILL)
        killed_at = time.time()
        wait_for("bars publishing again after its pipeline was killed",
                 lambda: watch.frames_after("bars", killed_at + 2.0) > 0, 60, log)
        assert all(watch.frames_after(c, killed_at) > 0 for c in ("clip", "grid"))
        wait_for("bars' restart counted", lambda: watch.status["bars"]["restarts"] >= 1, 10, log)

        # The worker node leaves: its cameras start again on the head within 45 s.
        moved = [c for c in GOOD if watch.status[c]["node_id"] == worker.node_id]
        assert moved, f"no camera was placed on the worker node: {watch.status}"
        ray_cluster.remove_node(worker, allow_graceful=False)
        removed_at = time.time()
        wait_for("every good camera publishing again after the node left",
                 lambda: all(watch.frames_after(c, removed_at + 5.0) > 0 for c in GOOD), RECOVER_S, log)
        recovered_s = time.time() - removed_at
        head = ray_cluster.head_node.node_id
        wait_for("moved cameras reported on the head node",
                 lambda: all(watch.status[c]["node_id"] == head for c in moved), 10, log)
        print(f"cameras {moved} recovered {recovered_s:.1f} s after their node left")

        # Clean stop from another process: every pipeline drained (exit code 0), none left behind.
        stop = cli("fleet", "stop", "--address", ray_cluster.address, env=env)
        assert stop.returncode == 0, stop.stderr[-2000:]
        rows = {line.split()[0]: line for line in stop.stdout.splitlines()[1:]}
        assert set(rows) == {*GOOD, BAD}
        for camera in GOOD:
            assert rows[camera].split()[3] == "stopped" and "exit code" not in rows[camera], rows
        assert run.wait(60) == 0, log.read_text()[-4000:]
        assert not any(worker_pids(c) for c in (*GOOD, BAD))
    finally:
        watch.close()
        interrupt(run)
        for camera in (*GOOD, BAD):
            for pid in worker_pids(camera):
                os.kill(pid, signal.SIGKILL)


def test_camera_without_room_waits_for_resources(cluster: Any, tmp_path: Path, shared: Path) -> None:
    """Three cameras of 0.75 CPU on 1-CPU nodes: at most one per node runs, the rest are reported
    "waiting for resources" (not an error: a node may join), and `fleet stop` ends them all."""
    ray_cluster, _, env = cluster
    publish = f"tcp://127.0.0.1:{free_port()}"
    names = ("w1", "w2", "w3")
    path = fleet_file(tmp_path, shared, publish, 20000 + free_port() % 40000,
                      **{n: {"source": "lavfi:testsrc=size=320x240:rate=2", "num_cpus": 0.75}
                         for n in names})
    log = tmp_path / "fleet.log"
    watch = StreamWatch(publish)
    watch.start()
    run = start_fleet(path, ray_cluster.address, env, log)
    try:
        def states() -> dict[str, str]:
            return {n: watch.status.get(n, {}).get("detail", "") for n in names}

        wait_for("a waiting camera next to a running one", lambda: "waiting for resources" in
                 states().values() and "running" in states().values(), START_TIMEOUT_S, log)
        nodes = len({watch.status[n]["node_id"] for n in names if states()[n] == "running"})
        assert list(states().values()).count("running") == nodes  # one 0.75-CPU camera per node
        stop = cli("fleet", "stop", "--address", ray_cluster.address, env=env)
        assert stop.returncode == 0, stop.stderr[-2000:]
        rows = stop.stdout.splitlines()[1:]
        assert len(rows) == 3 and all(" stopped " in row for row in rows), rows
        assert run.wait(60) == 0, log.read_text()[-4000:]
    finally:
        watch.close()
        interrupt(run)
        for camera in names:
            for pid in worker_pids(camera):
                os.kill(pid, signal.SIGKILL)


def test_bad_keys_and_a_node_without_the_model_are_one_line_each(cluster: Any, tmp_path: Path) -> None:
    """Fixed keys (`fleet.keys`): a FLEET.toml naming key files that do not exist is one error
    before anything starts; at run time a camera whose key on its node is not its pinned one is
    "refused", a camera whose node has no model in its cache keeps restarting with the model's
    error, each in one line of `fleet status`, while the good camera publishes."""
    ray_cluster, _, env = cluster
    keys = tmp_path / "keys"
    for name in ("fleet", "good", "badkey", "nocache", "other"):
        generate_key_pair(keys, name)
    shutil.copy(keys / "other.key_secret", keys / "badkey.key_secret")  # not badkey.key's pair
    (keys / "other.key").unlink()
    empty = tmp_path / "empty-home"
    empty.mkdir()
    publish = f"tcp://127.0.0.1:{free_port()}"
    ports = 20000 + free_port() % 40000
    source = {"source": "lavfi:testsrc=size=320x240:rate=5", "num_cpus": 0.25}

    for keys_dir, message in ((tmp_path / "nowhere", f"fleet.keys: directory {tmp_path / 'nowhere'} not found"),
                              (keys, f"fleet.keys: CURVE key file not found: {keys / 'other.key'}")):
        path = fleet_file(tmp_path, Path(), publish, ports, f'keys = "{keys_dir}"', good=source, other=source)
        done = cli("fleet", "run", str(path), "--address", ray_cluster.address, env=env)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, done.stderr
        assert lines[0].startswith(f"posestream: error: {message}"), lines

    path = fleet_file(tmp_path, Path(), publish, ports, f'keys = "{keys}"', good=source, badkey=source,
                      nocache={**source, "set": {"paths.home": str(empty)}})
    log = tmp_path / "fleet.log"
    watch = StreamWatch(publish)
    watch.start()
    run = start_fleet(path, ray_cluster.address, env, log)
    try:
        wait_for("frames of the good camera", lambda: watch.frames.get("good"), START_TIMEOUT_S, log)
        wait_for("the bad camera refused and the camera without a model restarting", lambda:
                 watch.status.get("badkey", {}).get("detail") == "refused"
                 and watch.status.get("nocache", {}).get("restarts", 0) >= 1, 90, log)
        status = cli("fleet", "status", "--address", ray_cluster.address, env=env)
        rows = {line.split()[0]: line for line in status.stdout.splitlines()[1:]}
        assert set(rows) == {"good", "badkey", "nocache"}, status.stdout
        assert " running " in rows["good"]
        assert " refused " in rows["badkey"] and (
            f"camera key {keys / 'badkey.key_secret'} does not match badkey.key") in rows["badkey"]
        assert f"model 'yolo11n-pose' is not prepared in {empty / 'models'}" in rows["nocache"]
        assert "badkey" not in watch.frames and "nocache" not in watch.frames
        good_since = time.time()
        wait_for("the good camera still publishing", lambda: watch.frames_after("good", good_since) > 3, 30, log)
    finally:
        watch.close()
        interrupt(run)
        for camera in ("good", "badkey", "nocache"):
            for pid in worker_pids(camera):
                os.kill(pid, signal.SIGKILL)
