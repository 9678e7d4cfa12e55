"""Measure what each camera of a fleet costs: CPU %, memory (PSS) and FPS, for docs/fleet.md.

    python scripts/fleet_costs.py FLEET.toml [--warmup 40] [--seconds 60] [--set KEY=VALUE ...]

Starts `posestream fleet run FLEET.toml` on a local Ray cluster, waits `--warmup` seconds, then
samples /proc for `--seconds`: per camera the actor process, its launcher and its pipeline's
processes (main + stages); the controller (aggregator included); Ray's own processes. FPS and p99
latency come from the status messages on the aggregated stream. Linux only.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from posestream.stream.fleet.spec import load_fleet  # noqa: E402

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fleet_file")
    parser.add_argument("--warmup", type=float, default=40.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
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
                    status[message["stream"]] = message
        after = processes()
        print(f"{'part':<12} {'procs':>5} {'CPU %':>7} {'PSS MiB':>8} {'fps':>6} {'p99 ms':>7}")
        for name, members in pids.items():
            alive = [p for p in members if p in before and p in after]
            cpu = sum(after[p][2] - before[p][2] for p in alive) / args.seconds * 100
            pss = sum(after[p][3] for p in alive)
            row = status.get(name, {})
            fps = f"{row['fps']:.1f}" if row else ""
            p99 = f"{row['latency_p99_ms']:.0f}" if row.get("latency_p99_ms") is not None else ""
            print(f"{name:<12} {len(alive):>5} {cpu:>7.1f} {pss:>8.0f} {fps:>6} {p99:>7}")
    finally:
        run.send_signal(signal.SIGINT)
        run.wait(120)
        sub.close(0)
        context.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
