"""Measure what open viewers cost a running pipeline: `python -m posestream.benchmarks.viewer_load URL`.

Alternates windows without viewers (A) and with N viewers (B), A B A B ..., and reads the sinks
stage's frame counter from `/metrics` at each window's edges, so slow drifts of a shared machine hit
both sides alike. A viewer is what the page is to the server: a WebSocket that watches every stream
and reads every frame it is sent (it decodes nothing, as a browser on another machine would cost
this one nothing). With `--pid` (the `posestream run` process) it also reports the CPU the pipeline's
processes used per window, which other load on a shared machine disturbs far less than FPS.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import time
import urllib.request
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families


def sink_frames(url: str) -> float:
    with urllib.request.urlopen(url + "metrics", timeout=30) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        if family.name == "posestream_stage_frames":
            return sum(s.value for s in family.samples if s.labels.get("stage") == "sinks")
    raise RuntimeError(f"{url}metrics has no posestream_stage_frames series")


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) of `pid` itself and of it with its child processes, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    own = tree = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        process = int(stat.parent.name)
        if process == pid or int(fields[1]) == pid:
            used = (int(fields[11]) + int(fields[12])) / ticks
            tree += used
            own += used if process == pid else 0.0
    return own, tree


async def viewer(session: aiohttp.ClientSession, url: str, stop: asyncio.Event, counts: list[int]) -> None:
    async with session.ws_connect(url + "ws") as ws:
        streams: list[str] = []
        while not stop.is_set():
            try:
                msg = await asyncio.wait_for(ws.receive(), 0.5)
            except asyncio.TimeoutError:
                continue
            if msg.type == aiohttp.WSMsgType.BINARY:
                counts[0] += 1
            elif msg.type == aiohttp.WSMsgType.TEXT:
                data = json.loads(msg.data)
                if data.get("type") == "status" and sorted(data["streams"]) != streams:
                    streams = sorted(data["streams"])
                    await ws.send_json({"watch": streams})
            else:
                return


async def window(url: str, viewers: int, seconds: float,
                 pid: int | None) -> tuple[float, int, tuple[float, float, float]]:
    """Pipeline FPS over `seconds` with `viewers` open, the frames they received, and the CPU cores
    the supervisor, all pipeline processes and these viewers used meanwhile."""
    stop = asyncio.Event()
    counts = [0]
    async with aiohttp.ClientSession() as session:
        tasks = [asyncio.create_task(viewer(session, url, stop, counts)) for _ in range(viewers)]
        await asyncio.sleep(2.0 if viewers else 0.0)  # let them connect and subscribe
        cpu_before = cpu_seconds(pid) if pid else (0.0, 0.0)
        own_before = _own_cpu_s()
        start, before = time.monotonic(), await asyncio.to_thread(sink_frames, url)
        await asyncio.sleep(seconds)
        after, end = await asyncio.to_thread(sink_frames, url), time.monotonic()
        cpu_after = cpu_seconds(pid) if pid else (0.0, 0.0)
        own = (_own_cpu_s() - own_before) / (time.monotonic() - start)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    cores = ((cpu_after[0] - cpu_before[0]) / (end - start), (cpu_after[1] - cpu_before[1]) / (end - start),
             own)
    return (after - before) / (end - start), counts[0], cores


async def main(url: str, viewers: int, seconds: float, rounds: int, pid: int | None) -> None:
    without, with_, cpu_a, cpu_b = [], [], [], []
    for i in range(rounds):
        fps, _, cores = await window(url, 0, seconds, pid)
        without.append(fps)
        cpu_a.append(cores)
        fps_b, received, cores_b = await window(url, viewers, seconds, pid)
        with_.append(fps_b)
        cpu_b.append(cores_b)
        cpu = (f" | CPU cores (supervisor / all): {cores[0]:.3f} / {cores[1]:.2f} vs "
               f"{cores_b[0]:.3f} / {cores_b[1]:.2f}; the viewers themselves {cores_b[2]:.2f}") if pid else ""
        print(f"round {i + 1}: no viewers {fps:.2f} fps | {viewers} viewers {fps_b:.2f} fps "
              f"({received} frames delivered to them){cpu}", flush=True)
    a, b = statistics.mean(without), statistics.mean(with_)
    print(f"mean: no viewers {a:.2f} fps, {viewers} viewers {b:.2f} fps, ratio {b / a:.3f} "
          f"(change {100 * (b - a) / a:+.1f} %)")
    if pid:
        # CPU per frame: the work each frame costs, which other load on the machine hardly changes
        per_a = sum(c[1] for c in cpu_a) / max(sum(without), 1e-9)
        per_b = sum(c[1] for c in cpu_b) / max(sum(with_), 1e-9)
        print(f"mean CPU cores, supervisor (server): {statistics.mean(c[0] for c in cpu_a):.3f} -> "
              f"{statistics.mean(c[0] for c in cpu_b):.3f}; all pipeline processes: "
              f"{statistics.mean(c[1] for c in cpu_a):.2f} -> {statistics.mean(c[1] for c in cpu_b):.2f}; "
              f"CPU s per frame {per_a:.3f} -> {per_b:.3f} ({100 * (per_b - per_a) / per_a:+.1f} %)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the viewer, e.g. http://127.0.0.1:8080/")
    parser.add_argument("--viewers", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each window")
    parser.add_argument("--rounds", type=int, default=3, help="A B pairs")
    parser.add_argument("--pid", type=int, help="the `posestream run` process, to report CPU use")
    args = parser.parse_args()
    asyncio.run(main(args.url if args.url.endswith("/") else args.url + "/", args.viewers,
                     args.seconds, args.rounds, args.pid))
