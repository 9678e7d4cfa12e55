"""The camera actor's lease, with a real pipeline on a local Ray node: once the lease has run out,
the actor stops its pipeline and never starts one again, also when a status call arrives later.
That late call is what a healed partition delivers: the controller sent it before the cut, and Ray
hands it to the cut-off actor before its kill; the controller has replaced that actor meanwhile,
so a pipeline started then would run the camera twice (issue #25)."""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Iterator

import pytest

from posestream.stream.core.config import load_config
from posestream.stream.fleet.actor import CameraActor
from posestream.stream.fleet.controller import FleetController
from posestream.stream.fleet.spec import parse_fleet

pytestmark = pytest.mark.slow

LEASE_S = 3.0
START_S = 120.0  # the launcher and pipeline processes of a loaded 2-core machine


def camera_processes(camera: str) -> list[int]:
    """Launcher and pipeline processes labelled with `camera`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
        except OSError:
            continue
        if b"posestream.stream.fleet.worker" in argv and camera.encode() in argv:
            found.append(int(entry.name))
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def local_ray(prepared_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    ray.init(address="local", num_cpus=1, include_dashboard=False, _node_ip_address="127.0.0.1",
             configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


def test_a_lease_that_ran_out_is_not_renewed_by_a_late_status_call(local_ray: None) -> None:
    camera = f"lease{os.getpid()}"
    port = free_port()
    spec = parse_fleet({"fleet": {"camera_host": "127.0.0.1", "camera_port_first": port,
                                  "camera_port_last": port, "lease_s": LEASE_S},
                        "camera": [{"name": camera, "source": "lavfi:testsrc=size=320x240:rate=5",
                                    "num_cpus": 0.3}]}, load_config())
    controller = FleetController(spec)  # only for the job it gives a camera actor; not started
    actor = CameraActor(controller._job(controller.slots[0]))
    try:
        deadline = time.monotonic() + START_S
        while not [p for p in camera_processes(camera) if p != actor.pid]:  # the pipeline too
            assert time.monotonic() < deadline, f"no pipeline after {START_S:.0f} s: {actor.status()}"
            assert actor.status()["state"] in ("starting", "running"), actor.status()
            time.sleep(0.2)
        # Silence: the lease runs out and the actor stops its pipeline.
        deadline = time.monotonic() + LEASE_S + spec.settings.stop_timeout_s + 30
        while actor.state != "fenced":  # read directly: a status() call would be word from the controller
            assert time.monotonic() < deadline, "the pipeline was not stopped when the lease ran out"
            time.sleep(0.2)
        assert not camera_processes(camera)
        # The late call: answered as fenced, and it revives nothing.
        late = actor.status()
        assert (late["state"], late["pid"]) == ("fenced", None), late
        actor._thread.join(10)
        assert not actor._thread.is_alive(), "the fenced actor still supervises (it may start again)"
        assert actor.status()["state"] == "fenced" and not camera_processes(camera)
    finally:
        actor.stop(10)
    assert not camera_processes(camera)
