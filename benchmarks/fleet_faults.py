"""Network faults against a fleet on real hosts (namespaces), measured: how long until every camera
publishes again, and what a subscriber of the aggregated stream sees.

    sudo python -m posestream.benchmarks.fleet_faults [--rounds 1] [--out fleet_faults.json]
         [--workers-exit]

A head host (Ray head, `fleet run`, aggregated stream bound on its address with the `[zmq]` CURVE
options), two worker hosts (one CPU each) and a client host (the subscribers) on a private bridge;
three cameras (shared clips looped live at 5 fps, 320 px). Faults, in order, on one fleet:

1. **partition**: the link of the worker with most cameras goes down, comes back after the cameras
   moved; figures: when its pipelines stopped (lease), when every camera published again, whether
   any camera ran twice after the link came back, and how long its stale actors lived on.
2. **slow link**: the worker running the cameras gets a slow, lossy link for a while (netem where
   the kernel has it, else a token-bucket rate limit plus random loss); figures: frame rate and
   delivery delay before and during, restarts it caused.
3. **worker killed** (every process on it, as a crash) and its Ray node started again.
4. **head restarted**: every process on the head dies (driver, controller, aggregator, Ray's GCS);
   figures: when the last camera pipeline on the workers stopped, and, after the head, the
   workers' Ray nodes and `fleet run` were started again, when every camera published again.
   With `--workers-exit` the workers' Ray nodes are left to notice the lost head by themselves
   (they exit after `gcs_rpc_server_reconnect_timeout_s`, 60 s) and are then restarted, as a
   service manager would; without it they are restarted with the head.

For every camera, over the whole run: frames that repeated or went back in (epoch, frame) order on
the aggregated stream (must be none) and gaps reported by the subscriber; and frames that reached
subscribers without the key (must be none). Prints a table and writes JSON. Needs root.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from posestream.benchmarks.fleet_hosts import FleetHosts, Recording, record, wait_for
from posestream.benchmarks.netns import unavailable
from posestream.benchmarks.processes import interrupt
from posestream.stream.core.config import shared_dir
from posestream.stream.curve_keys import generate_key_pair

log = logging.getLogger(__name__)

WORKERS = ("w1", "w2")
CLIPS = {"walk": "data/video/street_walk_5f.mp4", "pair": "data/video/two_person_interaction_72f.mp4",
         "campus": "data/mot/TUD-Campus/TUD-Campus.mp4"}
PUBLISH_PORT = 5570
START_S = 240.0    # every camera's first frame: Ray workers and pipelines on a loaded 2-core machine
RECOVER_S = 45.0   # the target for cameras of a lost worker


def camera_source(shared: Path, clip: str) -> str:
    return f"lavfi:movie={shared / clip}:loop=0,setpts=N/FRAME_RATE/TB,fps=5,scale=320:-2"


def fleet_toml(path: Path, publish: str, cameras: dict[str, str], extra: str = "") -> Path:
    """FLEET.toml: `cameras` name -> source, 0.3 CPU each (three fit one worker)."""
    lines = ["[fleet]", f'publish = "{publish}"', "status_interval_s = 1.0",
             "restart_initial_s = 0.5", "restart_max_s = 4.0", extra, ""]
    for name, source in cameras.items():
        lines += ["[[camera]]", f'name = "{name}"', f'source = "{source}"', "num_cpus = 0.3", ""]
    path.write_text("\n".join(lines))
    return path


class Fleet:
    """`posestream fleet run` on the head, with its aggregated stream protected by CURVE keys
    made here (server + one allowed viewer), and recorders on the client host."""

    def __init__(self, hosts: FleetHosts, cameras: dict[str, str], work: Path, extra: str = "") -> None:
        self.hosts, self.cameras, self.work = hosts, cameras, work
        self.keys = work / "viewer-keys"
        if not (self.keys / "server.key_secret").exists():
            generate_key_pair(self.keys, "server")
            generate_key_pair(self.keys / "clients", "viewer")
        self.publish = f"tcp://{hosts.ip('head')}:{PUBLISH_PORT}"
        self.file = fleet_toml(work / "FLEET.toml", self.publish, cameras, extra)
        self.run: Any = None

    @property
    def viewer_curve(self) -> tuple[Path, Path]:
        return self.keys / "clients" / "viewer.key_secret", self.keys / "server.key"

    def start(self) -> None:
        keys = self.keys
        self.run = self.hosts.popen("head", [
            sys.executable, "-m", "posestream", "fleet", "run", str(self.file), "--address",
            self.hosts.address, "--quiet", "--set", "detector.input_size=320",
            "--set", "zmq.curve=true", "--set", f"zmq.server_secret_key={keys / 'server.key_secret'}",
            "--set", f"zmq.allowed_clients={keys / 'clients'}"], "fleet")

    def stop(self) -> None:
        if self.run is not None:
            interrupt(self.run)

    def log_tail(self) -> str:
        return self.hosts.log("fleet").read_text(errors="replace")[-4000:]


def nodes_of(viewer: Recording, hosts: FleetHosts, cameras: Any) -> dict[str, str]:
    """camera -> the host its status row names."""
    return {c: hosts.host_of(viewer.status[c]["node"]) for c in cameras if viewer.status.get(c, {}).get("node")}


def newest_epoch(viewer: Recording, camera: str) -> int:
    frames = viewer.frames_of(camera)
    return max((f.epoch or 0 for f in frames), default=0)


def back_after(viewer: Recording, cameras: Any, since: float, epochs: dict[str, int]) -> dict[str, float] | None:
    """Per camera, when its first frame of a newer epoch than `epochs` (or, for cameras not in
    `epochs`, any frame) arrived after `since`; None until every camera has one."""
    times = {}
    for camera in cameras:
        fresh = [f.t for f in viewer.frames_of(camera, since) if camera not in epochs
                 or (f.epoch or 0) > epochs[camera]]
        if not fresh:
            return None
        times[camera] = fresh[0]
    return times


def _most_pipelines_until(hosts: FleetHosts, done: Callable[[], bool], min_s: float,
                          timeout_s: float) -> tuple[int, float]:
    """Sample where the pipelines run until `done()` (at least `min_s`): the most pipelines any
    one camera had at once, and when `done()` became true (s from now)."""
    start, most = time.monotonic(), 0
    while True:
        names = [name for running in hosts.pipelines().values() for name in running]
        most = max([most, *(names.count(name) for name in names)])
        elapsed = time.monotonic() - start
        if elapsed >= min_s and done():
            return most, elapsed
        if elapsed > timeout_s:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s")
        time.sleep(0.5)


def _actors_on(hosts: FleetHosts, host: str) -> int:
    count = 0
    for pid in hosts.net.pids(host):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::CameraActor"):
                count += 1
        except OSError:
            continue
    return count


def busiest_worker(hosts: FleetHosts, fleet: Fleet, viewer: Recording) -> tuple[str, list[str], dict[str, int]]:
    """The worker running most cameras, those cameras, and the newest epoch seen of each."""
    placed = nodes_of(viewer, hosts, fleet.cameras)
    victim = max(WORKERS, key=lambda w: sum(h == w for h in placed.values()))
    moved = sorted(c for c, h in placed.items() if h == victim)
    return victim, moved, {c: newest_epoch(viewer, c) for c in moved}


def partition(hosts: FleetHosts, fleet: Fleet, viewer: Recording) -> dict[str, Any]:
    victim, moved, epochs = busiest_worker(hosts, fleet, viewer)
    cut = time.time()
    hosts.net.cut(victim)
    fenced = wait_for(f"the pipelines on cut-off {victim} to stop",
                      lambda: not hosts.pipelines().get(victim) and time.time(), 120) - cut
    back = wait_for("every camera publishing again", lambda: back_after(viewer, fleet.cameras, cut, epochs), 180)
    placed_after = nodes_of(viewer, hosts, fleet.cameras)
    restored = time.time()
    hosts.net.restore(victim)
    # Until Ray has removed the replaced actors from the healed host (it kills them, or the host's
    # raylet, declared dead meanwhile, exits): no camera may run twice at any moment.
    twice, stale = _most_pipelines_until(hosts, lambda: _actors_on(hosts, victim) == 0, 5.0, 180)
    node_restarted = [round(t - cut, 1) for t, host in hosts.node_restarts if host == victim and t > cut]
    return {"fault": "partition", "host": victim, "moved": moved, "pipelines_stopped_s": round(fenced, 1),
            "link_down_s": round(restored - cut, 1), "ray_node_restarted_at_s": node_restarted,
            "recovered_s": round(max(back.values()) - cut, 1),
            "per_camera_s": {c: round(t - cut, 1) for c, t in back.items()},
            "moved_to": sorted({placed_after[c] for c in moved if c in placed_after}),
            "max_pipelines_per_camera_after_heal": twice, "stale_actors_gone_s": round(stale, 1)}


def _rates(viewer: Recording, cameras: Any, start: float, end: float) -> dict[str, Any]:
    frames = [f for c in cameras for f in viewer.frames_of(c, start) if f.t <= end]
    delays = sorted((f.t - f.publish_ts) * 1000 for f in frames)
    return {"fps_per_camera": round(len(frames) / len(cameras) / (end - start), 2),
            "delay_ms_p50": round(statistics.median(delays), 1) if delays else None,
            "delay_ms_p95": round(delays[int(0.95 * (len(delays) - 1))], 1) if delays else None}


def _restarts(viewer: Recording, cameras: Any) -> int:
    return sum(int(viewer.status.get(c, {}).get("restarts", 0)) for c in cameras)


def slow_link(hosts: FleetHosts, fleet: Fleet, viewer: Recording, seconds: float = 20.0) -> dict[str, Any]:
    victim = busiest_worker(hosts, fleet, viewer)[0]
    before_end = time.time()
    before = _rates(viewer, fleet.cameras, before_end - seconds / 2, before_end)
    restarts = _restarts(viewer, fleet.cameras)
    applied = hosts.net.slow(victim, delay_ms=100, loss_pct=5, rate_kbit=256)
    start = time.time()
    time.sleep(seconds)
    during = _rates(viewer, fleet.cameras, start, time.time())
    hosts.net.heal(victim)
    return {"fault": "slow link", "host": victim, "applied": applied, "seconds": seconds,
            "before": before, "during": during,
            "restarts_caused": _restarts(viewer, fleet.cameras) - restarts}


def kill_worker(hosts: FleetHosts, fleet: Fleet, viewer: Recording) -> dict[str, Any]:
    victim, moved, epochs = busiest_worker(hosts, fleet, viewer)
    killed = time.time()
    hosts.kill_host(victim)
    back = wait_for("every camera publishing again", lambda: back_after(viewer, fleet.cameras, killed, epochs), 180)
    placed_after = nodes_of(viewer, hosts, fleet.cameras)
    started = time.time()
    hosts.start_node(victim)
    hosts.wait_nodes(1 + len(WORKERS))
    return {"fault": "worker killed", "host": victim, "moved": moved,
            "recovered_s": round(max(back.values()) - killed, 1),
            "per_camera_s": {c: round(t - killed, 1) for c, t in back.items()},
            "moved_to": sorted({placed_after[c] for c in moved if c in placed_after}),
            "rejoined_s": round(time.time() - started, 1)}


def restart_head(hosts: FleetHosts, fleet: Fleet, viewer: Recording, workers_exit: bool) -> dict[str, Any]:
    epochs = {c: newest_epoch(viewer, c) for c in fleet.cameras}
    killed = time.time()
    hosts.kill_host("head")
    fleet.run = None  # it ran on the head
    orphans = wait_for("no camera pipeline left on the workers",
                       lambda: not hosts.pipelines() and time.time(), 120) - killed
    result: dict[str, Any] = {"fault": "head restarted", "pipelines_stopped_s": round(orphans, 1)}
    hosts.start_node("head")
    if workers_exit:  # each worker's raylet gives up on the lost head; its service manager restarts it
        wait_for("every worker's Ray node to exit and start again", lambda: {
            host for t, host in hosts.node_restarts if t > killed} >= set(WORKERS), 240)
        result["workers_restarted_s"] = round(max(t for t, _ in hosts.node_restarts) - killed, 1)
    else:  # restarted with the head
        for worker in WORKERS:
            hosts.kill_host(worker)
            hosts.start_node(worker)
    hosts.wait_nodes(1 + len(WORKERS))
    fleet.start()
    back = wait_for("every camera publishing again", lambda: back_after(viewer, fleet.cameras, killed, epochs), START_S)
    result["recovered_s"] = round(max(back.values()) - killed, 1)
    return result


def stream_checks(viewer: Recording, attackers: dict[str, Recording], cameras: Any) -> dict[str, Any]:
    return {"disorder": {c: len(viewer.disorder(c)) for c in cameras},
            "gaps_reported": len(viewer.gaps),
            "frames": {c: len(viewer.frames_of(c)) for c in cameras},
            "unauthenticated_messages": {name: rec.messages for name, rec in attackers.items()}}


def attackers(hosts: FleetHosts, fleet: Fleet, names: Any) -> dict[str, Recording]:
    """Subscribers without the key on the client host: the aggregated stream plain and with an
    unknown key pair, and each camera's own endpoint plain."""
    stranger = fleet.work / "stranger-keys"
    if not (stranger / "stranger.key_secret").exists():
        generate_key_pair(stranger, "stranger")
    found = {"aggregated, no key": record(hosts, fleet.publish, "plain", raw=True),
             "aggregated, unknown key": record(hosts, fleet.publish, "stranger", raw=True,
                                               curve=(stranger / "stranger.key_secret",
                                                      fleet.keys / "server.key"))}
    for index, worker in enumerate(WORKERS):
        for port in range(5600, 5600 + len(names)):
            url = f"tcp://{hosts.ip(worker)}:{port}"
            found[f"camera endpoint {url}"] = record(hosts, url, f"camera-{index}-{port}", raw=True)
    return found


def print_table(results: list[dict[str, Any]]) -> None:
    print(f"{'fault':<16}{'host':<6}{'cameras moved':<20}{'every camera back (s)':<24}notes")
    for r in results:
        notes = {k: v for k, v in r.items() if k not in ("fault", "host", "moved", "recovered_s",
                                                          "per_camera_s")}
        print(f"{r['fault']:<16}{r.get('host', '-'):<6}{','.join(r.get('moved', [])) or '-':<20}"
              f"{str(r.get('recovered_s', '-')):<24}{json.dumps(notes)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", default="fleet_faults.json")
    parser.add_argument("--workers-exit", action="store_true",
                        help="let the workers' Ray nodes exit by themselves after the head is lost")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    reason = unavailable()
    if reason:
        print(f"fleet_faults: cannot make test hosts here: {reason}")
        return 2
    shared = shared_dir()
    cameras = {name: camera_source(shared, clip) for name, clip in CLIPS.items()}
    results: list[dict[str, Any]] = []
    for round_ in range(args.rounds):
        work = Path(tempfile.mkdtemp(prefix="fleet-faults-"))
        with FleetHosts(WORKERS, work) as hosts:
            fleet = Fleet(hosts, cameras, work)
            viewer = record(hosts, fleet.publish, "viewer", curve=fleet.viewer_curve)
            strangers = attackers(hosts, fleet, cameras)
            started = time.time()
            fleet.start()
            try:
                wait_for("every camera's first frame", lambda: all(viewer.frames_of(c) for c in cameras), START_S)
                log.info("round %d: every camera publishes, %.0f s after `fleet run`", round_ + 1,
                         time.time() - started)
                time.sleep(10)
                for fault in (partition, slow_link, kill_worker):
                    results.append({"round": round_ + 1, **fault(hosts, fleet, viewer)})
                    log.info("%s", results[-1])
                    time.sleep(5)
                results.append({"round": round_ + 1, **restart_head(hosts, fleet, viewer, args.workers_exit)})
                time.sleep(5)
                results.append({"round": round_ + 1, "fault": "whole run",
                                **stream_checks(viewer, strangers, cameras)})
            finally:
                fleet.stop()
                for recording in (viewer, *strangers.values()):
                    recording.close()
    print_table(results)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
