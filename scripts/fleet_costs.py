"""Measure what each camera of a fleet costs: CPU %, memory (PSS) and FPS, for docs/fleet.md.

    python scripts/fleet_costs.py FLEET.toml [--warmup 40] [--seconds 60] [--set KEY=VALUE ...]
    python scripts/fleet_costs.py --aggregator PERSONS [--curve]  # the aggregator alone, CPU per message

Starts `posestream fleet run FLEET.toml` on a local Ray cluster, waits `--warmup` seconds, then
samples /proc for `--seconds`: per camera the actor process, its launcher and its pipeline's
processes (main + stages); the controller (aggregator included); Ray's own processes. FPS and p99
latency come from the status messages on the aggregated stream. Linux only.

`--aggregator PERSONS`: 20 synthetic camera publishers (another process) blast frame messages with
PERSONS persons at an `Aggregator`, with one subscriber; prints the forwarding rate and the
aggregator's CPU time per message. `--curve`: the camera streams CURVE-encrypted, as a fleet's are
by default (the publishers are CURVE servers admitting only the aggregator's key).
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from posestream.stream import curve_keys  # noqa: E402
from posestream.stream.core.config import load_config  # noqa: E402
from posestream.stream.curve_keys import KeyPair  # noqa: E402
from posestream.stream.fleet.aggregator import Aggregator  # noqa: E402
from posestream.stream.fleet.spec import load_fleet  # noqa: E402

# Below Linux's ephemeral port range (32768-60999), so no outgoing connection holds them.
BENCH_CAMERAS, BENCH_SECONDS, BENCH_OUT, BENCH_FIRST_PORT = 20, 10.0, "tcp://127.0.0.1:29900", 29901

TICK = os.sysconf("SC_CLK_TCK")


def processes() -> dict[int, tuple[int, str, float, float]]:
    """pid -> (ppid, cmdline, cpu seconds, pss MiB)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            pss = 0.0
            for line in (entry / "smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss = int(line.split()[1]) / 1024
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        table[int(entry.name)] = (int(fields[1]), cmd, (int(fields[11]) + int(fields[12])) / TICK, pss)
    return table


def descendants(table: dict, root: int) -> list[int]:
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += [p for p, row in table.items() if row[0] == pid]
    return out


def groups(table: dict, cameras: list[str], driver: int) -> dict[str, list[int]]:
    """Camera name -> its actor, launcher and pipeline pids; plus the controller, and the local
    cluster's Ray processes (everything else under the `fleet run` driver, the driver included)."""
    found: dict[str, list[int]] = {name: [] for name in cameras}
    for pid, (ppid, cmd, _, _) in table.items():
        if "posestream.stream.fleet.worker" in cmd and "--pipeline" not in cmd:
            name = cmd.split("--camera", 1)[1].split()[0]
            if name in found:
                found[name] = [ppid, *descendants(table, pid)]
    found["controller"] = [pid for pid, row in table.items() if row[1].startswith("ray::FleetController")]
    taken = {pid for members in found.values() for pid in members}
    found["ray + driver"] = [pid for pid in descendants(table, driver) if pid not in taken]
    return found


def _frame_message(persons: int) -> dict:
    keypoints = [[100.0 + k, 200.0 + k, 0.9] for k in range(17)]
    now = time.time()
    return {"v": 1, "stream": "lavfi", "frame": 1, "pts": 0.04, "capture_ts": now - 0.05,
            "publish_ts": now, "width": 1920, "height": 1080, "format": "coco17",
            "persons": [{"id": p, "box": [10.0, 20.0, 100.0, 300.0], "box_score": 0.9, "score": 0.8,
                         "keypoints": keypoints} for p in range(persons)]}


def _publishers(persons: int, ready: "multiprocessing.synchronize.Event", done: "multiprocessing.Queue",
                curve: tuple[KeyPair, bytes] | None) -> None:
    context = zmq.Context()
    auth = curve_keys.start_authenticator(context, frozenset([curve[1]])) if curve else None
    sockets = []
    for c in range(BENCH_CAMERAS):
        sock = context.socket(zmq.PUB)
        sock.sndhwm = 1000
        if curve:
            curve_keys.configure_server(sock, curve[0])
        sock.bind(f"tcp://127.0.0.1:{BENCH_FIRST_PORT + c}")
        sockets.append(sock)
    sub = context.socket(zmq.SUB)
    sub.rcvhwm = 100_000
    sub.subscribe(b"")
    sub.connect(BENCH_OUT)
    ready.set()
    time.sleep(2)
    payload = msgpack.packb(_frame_message(persons))
    sent = got = 0
    end = time.time() + BENCH_SECONDS
    while time.time() < end:
        for sock in sockets:
            sock.send_multipart([b"lavfi", payload])
            sent += 1
        while sub.poll(0):
            sub.recv_multipart()
            got += 1
        if sent % 2000 == 0:
            time.sleep(0.001)
    done.put((sent, got, len(payload)))
    for sock in (*sockets, sub):
        sock.close(0)
    if auth is not None:
        auth.stop()
    context.term()


def aggregator_bench(persons: int, curve: bool) -> None:
    zmq_settings = load_config().zmq.with_values(hwm=1000, linger_ms=0)
    client, server = (curve_keys.new_key_pair(), curve_keys.new_key_pair()) if curve else (None, None)
    aggregator = Aggregator(BENCH_OUT, zmq_settings, 10.0, client)
    aggregator.start()
    for c in range(BENCH_CAMERAS):
        aggregator.set_endpoint(f"cam{c}", f"tcp://127.0.0.1:{BENCH_FIRST_PORT + c}",
                                server.public if server else None)
    ctx = multiprocessing.get_context("spawn")
    ready, done = ctx.Event(), ctx.Queue()
    process = ctx.Process(target=_publishers, args=(persons, ready, done,
                                                    (server, client.public) if curve else None))
    process.start()
    ready.wait()
    time.sleep(2)
    r0, f0, t0 = resource.getrusage(resource.RUSAGE_SELF), aggregator.forwarded, time.time()
    time.sleep(BENCH_SECONDS - 1)
    r1, f1, t1 = resource.getrusage(resource.RUSAGE_SELF), aggregator.forwarded, time.time()
    sent, got, size = done.get()
    process.join()
    aggregator.close(0)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    print(f"{'CURVE' if curve else 'plain'}, {persons} persons/message, {size} B: forwarded {(f1 - f0) / (t1 - t0):.0f} msg/s using "
          f"{cpu / (t1 - t0) * 100:.0f} % of a core = {cpu / max(f1 - f0, 1) * 1e6:.0f} us CPU per "
          f"message (publishers sent {sent}, subscriber got {got})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fleet_file", nargs="?")
    parser.add_argument("--aggregator", type=int, metavar="PERSONS",
                        help="benchmark the aggregator alone with PERSONS persons per message")
    parser.add_argument("--curve", action="store_true", help="with --aggregator: CURVE camera streams")
    parser.add_argument("--warmup", type=float, default=40.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    if args.aggregator is not None:
        aggregator_bench(args.aggregator, args.curve)
        return 0
    if not args.fleet_file:
        parser.error("FLEET.toml is required (or --aggregator PERSONS)")
    spec = load_fleet(args.fleet_file)
    names = [c.name for c in spec.cameras]
    extra = [a for kv in args.overrides for a in ("--set", kv)]
    run = subprocess.Popen([sys.executable, "-m", "posestream", "fleet", "run", args.fleet_file,
                            "--quiet", *extra], stderr=subprocess.DEVNULL)
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.subscribe(b"")
    sub.connect(spec.settings.publish)
    status: dict[str, dict] = {}
    try:
        time.sleep(args.warmup)
        before = processes()
        pids = groups(before, names, run.pid)
        end = time.time() + args.seconds
        while time.time() < end:
            if sub.poll(200):
                topic, payload = sub.recv_multipart()
                message = msgpack.unpackb(payload)
                if message.get("type") == "status":
                    status.update({row["name"]: row for row in message["cameras"]})
        after = processes()
        print(f"{'part':<12} {'procs':>5} {'CPU %':>7} {'PSS MiB':>8} {'fps':>6} {'p99 ms':>7}")
        for name, members in pids.items():
            alive = [p for p in members if p in before and p in after]
            cpu = sum(after[p][2] - before[p][2] for p in alive) / args.seconds * 100
            pss = sum(after[p][3] for p in alive)
            row = status.get(name, {})
            fps = f"{row['fps']:.1f}" if row else ""
            p99 = f"{row['p99_ms']:.0f}" if row.get("p99_ms") is not None else ""
            print(f"{name:<12} {len(alive):>5} {cpu:>7.1f} {pss:>8.0f} {fps:>6} {p99:>7}")
    finally:
        run.send_signal(signal.SIGINT)
        run.wait(120)
        sub.close(0)
        context.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
