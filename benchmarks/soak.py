"""Soak: a real clip looped as a live camera through `posestream run` for N minutes, with the
resources of every process sampled, to show that nothing grows over a long run.

The run is a child process (`python -m posestream run`, live policy, JSON sink), so what is sampled
is exactly what an operator runs: the supervisor, its stage processes and multiprocessing's
resource tracker. Every `interval_s` the sampler reads, from /proc, each process's resident memory
(RSS), open file descriptors and threads, and counts the entries and bytes of /dev/shm. At the end
the run is stopped with SIGINT (as Ctrl-C would) and the samples become a JSON with one
least-squares slope per series (RSS in MB per 10 minutes, after a warm-up: model loading and
allocator arenas settle first) and a PNG of the series over time.

    python -m posestream.benchmarks.soak --minutes 10 --out soak.json --plot soak.png
    posestream bench --soak 10 --out soak.json --plot soak.png
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from posestream.benchmarks.processes import interrupt
from posestream.stream.core.config import load_config
from posestream.stream.core.settings import Settings
from posestream.stream.core.errors import ConfigError

log = logging.getLogger(__name__)

RSS_SLOPE_LIMIT_MB = 1.0      # per 10 minutes per process, after warm-up (the promise in docs/reliability.md)
SHM_DIR = Path("/dev/shm")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICKS = os.sysconf("SC_CLK_TCK")


# -- /proc ----------------------------------------------------------------------------------------

def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (which may hold spaces): field 3 (state) is index 0."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def children(pid: int) -> list[int]:
    """Direct children of `pid`, by their start time (oldest first)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields and int(fields[1]) == pid:
            found.append((int(fields[19]), int(entry)))
    return [p for _, p in sorted(found)]


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children, ...)."""
    out, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        out += kids
        todo += kids
    return out


def alive(pid: int) -> bool:
    """Running and not a zombie (a zombie's resources are gone; only its exit code waits)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def process_sample(pid: int) -> dict[str, float] | None:
    """RSS (MB), open fds and threads of one process; None once it is gone."""
    try:
        statm = Path(f"/proc/{pid}/statm").read_text().split()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    threads = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("Threads:"))
    return {"rss_mb": int(statm[1]) * _PAGE / 1e6, "fds": fds, "threads": threads}


def shm_sample(owner: int) -> dict[str, float]:
    """The frame-ring segments of the run whose supervisor is `owner` (named after its pid, see
    `stream.orphans`): other runs on a shared machine come and go in /dev/shm too."""
    from posestream.stream.orphans import segment_owner

    entries = [e for e in SHM_DIR.iterdir() if segment_owner(e.name) == owner] if SHM_DIR.is_dir() else []
    size = 0
    for entry in entries:
        try:
            size += entry.stat().st_size
        except OSError:
            continue
    return {"shm_entries": len(entries), "shm_mb": size / 1e6}


def label_processes(root: int, pids: list[int]) -> dict[int, str]:
    """Names for the run's processes: the supervisor, multiprocessing's resource tracker and each
    stage by the name it gives itself (`stream.orphans.name_process`: /proc/PID/comm = ps:<stage>)."""
    from posestream.stream.orphans import COMM_PREFIX

    names = {root: "supervisor"}
    for pid in pids:
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if comm.startswith(COMM_PREFIX):
            names[pid] = comm.removeprefix(COMM_PREFIX)
        elif b"resource_tracker" in cmdline:
            names[pid] = "resource_tracker"
        else:
            names[pid] = f"process{pid}"
    return names


# -- analysis -------------------------------------------------------------------------------------

def slope_per_10min(t: np.ndarray, values: np.ndarray) -> float | None:
    """Least-squares slope of `values` against `t` (seconds), per 10 minutes."""
    if len(t) < 3 or np.ptp(t) <= 0:
        return None
    return float(np.polyfit(t, values, 1)[0]) * 600.0


@dataclass
class Verdict:
    ok: bool
    problems: list[str]


def _early_late(rows: list[dict[str, Any]], keys: tuple[str, ...], n: int = 3) -> dict[str, int]:
    """`<key>_early` = the most of the first `n` samples, `<key>_late` = the fewest of the last `n`:
    a leak raises every late sample above the early ones, a passing helper thread or socket does not."""
    out = {}
    for key in keys:
        out[f"{key}_early"] = max(int(r[key]) for r in rows[:n])
        out[f"{key}_late"] = min(int(r[key]) for r in rows[-n:])
    return out


def analyse(samples: list[dict[str, Any]], warmup_s: float) -> dict[str, Any]:
    """Per process: RSS slope (MB / 10 min) after warm-up, and fds / threads at the end of warm-up
    and at the end; the same for /dev/shm. `growth` counts are last minus first after warm-up."""
    steady = [s for s in samples if s["t"] >= warmup_s]
    result: dict[str, Any] = {"warmup_s": warmup_s, "samples": len(samples),
                              "steady_samples": len(steady), "processes": {}}
    names = sorted({name for s in steady for name in s["processes"]})
    for name in names:
        rows = [(s["t"], s["processes"][name]) for s in steady if name in s["processes"]]
        t = np.array([r[0] for r in rows])
        rss = np.array([r[1]["rss_mb"] for r in rows])
        first, last = rows[0][1], rows[-1][1]
        result["processes"][name] = {
            "rss_mb_first": round(first["rss_mb"], 2), "rss_mb_last": round(last["rss_mb"], 2),
            "rss_mb_max": round(float(rss.max()), 2),
            "rss_slope_mb_per_10min": None if (s := slope_per_10min(t, rss)) is None else round(s, 3),
            # The least RSS of the second half minus that of the first: a leak raises the floor,
            # a frame buffer that happens to be allocated at one sample (6 MB at 1080p) does not.
            "rss_floor_rise_mb": round(float(rss[len(rss) // 2:].min() - rss[:max(1, len(rss) // 2)].min()), 3),
            "fds_first": first["fds"], "fds_last": last["fds"], "fds_max": max(r[1]["fds"] for r in rows),
            "threads_first": first["threads"], "threads_last": last["threads"],
            "threads_max": max(r[1]["threads"] for r in rows), "samples": len(rows),
            **_early_late([r[1] for r in rows], ("fds", "threads"))}
    if steady:
        t = np.array([s["t"] for s in steady])
        shm = np.array([s["shm_mb"] for s in steady])
        result["shm"] = {"entries_first": steady[0]["shm_entries"], "entries_last": steady[-1]["shm_entries"],
                         "entries_max": max(s["shm_entries"] for s in steady),
                         "mb_first": round(steady[0]["shm_mb"], 3), "mb_last": round(steady[-1]["shm_mb"], 3),
                         "mb_slope_per_10min": slope_per_10min(t, shm),
                         **{k.replace("shm_", ""): v for k, v in _early_late(steady, ("shm_entries",)).items()}}
    return result


def verdict(analysis: dict[str, Any], rss_limit_mb: float = RSS_SLOPE_LIMIT_MB) -> Verdict:
    """The soak's promise: RSS slope <= `rss_limit_mb` per 10 minutes for every process, and no
    process ends with more fds or threads than it had after warm-up; /dev/shm no fuller."""
    problems = []
    if not analysis["processes"]:
        problems.append("no process was sampled after the warm-up")
    for name, p in analysis["processes"].items():
        slope = p["rss_slope_mb_per_10min"]
        if slope is None:
            problems.append(f"{name}: too few samples for a slope")
        elif slope > rss_limit_mb:
            problems.append(f"{name}: RSS grows {slope:.2f} MB per 10 min (limit {rss_limit_mb})")
        for key in ("fds", "threads"):
            if p[f"{key}_late"] > p[f"{key}_early"]:
                problems.append(f"{name}: {key} grew {p[f'{key}_early']} -> {p[f'{key}_late']}")
    shm = analysis.get("shm")
    if shm and shm["entries_late"] > shm["entries_early"]:
        problems.append(f"/dev/shm entries grew {shm['entries_early']} -> {shm['entries_late']}")
    return Verdict(not problems, problems)


# -- the run --------------------------------------------------------------------------------------

def replay_source(video: Path, fps: float, link_dir: Path) -> str:
    """An endless live camera: the clip looped forever by FFmpeg's `movie` filter and paced in
    real time (`source.lavfi_realtime`); timestamps keep rising across loops."""
    from posestream.benchmarks.clips import live_replay_spec

    return live_replay_spec(video, fps, 10**9, link_dir)


def _wait_for_output(proc: subprocess.Popen[bytes], output: Path, log_path: Path, timeout_s: float) -> None:
    """Wait until the run has written its first result (models loaded, frames flowing)."""
    deadline = time.monotonic() + timeout_s
    while not (output.is_file() and output.stat().st_size > 8):
        if proc.poll() is not None:
            raise ConfigError(f"the soak run ended before its first result (exit {proc.returncode}): "
                              f"{log_path.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise ConfigError(f"the soak run wrote no result within {timeout_s:g} s")
        time.sleep(0.5)


def run_soak(video: Path, minutes: float, scratch: Path, *, fps: float = 10.0, interval_s: float = 5.0,
             warmup_s: float | None = None, config_file: str | None = None,
             overrides: list[str] = (), home: str | None = None,
             startup_s: float = 300.0) -> dict[str, Any]:
    """Run the pipeline on the looped clip for `minutes` (counted from its first written result)
    and sample it; returns samples, analysis and verdict. The JSON sink writes into `scratch` (its
    file grows on disk, not in memory)."""
    if minutes <= 0:
        raise ConfigError(f"soak length must be > 0 minutes, got {minutes}")
    if not video.is_file():
        raise ConfigError(f"soak video not found: {video}")
    seconds = minutes * 60.0
    warmup_s = min(180.0, seconds / 4) if warmup_s is None else warmup_s
    cmd = [sys.executable, "-m", "posestream", "run", "--quiet", "--live",
           "--source", replay_source(video, fps, scratch), "--sink", f"json:{scratch / 'soak.json'}",
           "--metrics", str(scratch / "metrics.json"), "--set", "source.lavfi_realtime=true"]
    if config_file:
        cmd += ["--config", config_file]
    for item in overrides:
        cmd += ["--set", item]
    env = dict(os.environ, **({"POSESTREAM_HOME": home} if home else {}))
    log_path = scratch / "run.log"
    samples: list[dict[str, Any]] = []
    with open(log_path, "w") as run_log:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=run_log, env=env)
        names: dict[int, str] = {}
        try:
            _wait_for_output(proc, scratch / "soak.json", log_path, startup_s)
            started = time.monotonic()
            while (elapsed := time.monotonic() - started) < seconds:
                if proc.poll() is not None:
                    raise ConfigError(f"the soak run ended early (exit {proc.returncode}): "
                                      f"{log_path.read_text()[-2000:]}")
                pids = descendants(proc.pid)
                if any(names.get(p, "process").startswith("process") for p in pids):
                    names = label_processes(proc.pid, pids)
                procs = {}
                for pid in [proc.pid, *pids]:
                    sample = process_sample(pid)
                    if sample is not None:
                        procs[names.get(pid, str(pid))] = sample
                samples.append({"t": round(elapsed, 2), "processes": procs, **shm_sample(proc.pid)})
                time.sleep(max(0.0, interval_s - (time.monotonic() - started - elapsed)))
        finally:
            interrupt(proc)
    after = shm_sample(proc.pid)
    analysis = analyse(samples, warmup_s)
    check = verdict(analysis)
    metrics_path = scratch / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
    return {"video": str(video), "minutes": minutes, "fps_in": fps, "interval_s": interval_s,
            "exit_code": proc.returncode, "shm_after_exit": after, "analysis": analysis,
            "ok": check.ok, "problems": check.problems, "report": metrics,
            "load_avg": os.getloadavg(), "cpus": os.cpu_count(), "samples": samples,
            "log_tail": log_path.read_text()[-3000:]}


def format_result(result: dict[str, Any]) -> list[str]:
    a = result["analysis"]
    lines = [f"soak: {result['minutes']:g} min of {Path(result['video']).name} at {result['fps_in']:g} fps, "
             f"{a['samples']} samples every {result['interval_s']:g} s, warm-up {a['warmup_s']:g} s; "
             f"exit {result['exit_code']}; load average {', '.join(f'{x:.1f}' for x in result['load_avg'])} "
             f"on {result['cpus']} CPUs",
             f"{'process':<18}{'RSS MB':>9}{'slope MB/10min':>16}{'fds':>9}{'threads':>9}"]
    for name, p in a["processes"].items():
        slope = p["rss_slope_mb_per_10min"]
        lines.append(f"{name:<18}{p['rss_mb_last']:>9.1f}{'-' if slope is None else f'{slope:+.3f}':>16}"
                     f"{p['fds_first']:>4}->{p['fds_last']:<4}{p['threads_first']:>4}->{p['threads_last']:<4}")
    shm = a.get("shm")
    if shm:
        lines.append(f"frame rings in /dev/shm {shm['entries_first']} -> {shm['entries_last']} "
                     f"({shm['mb_last']:.1f} MB); after exit {result['shm_after_exit']['shm_entries']}")
    report = result.get("report") or {}
    for name, s in report.get("streams", {}).items():
        lines.append(f"stream {name}: {s['frames_in']} frames in, {s['frames_out']} out, {s['dropped']} dropped")
    lines.append("verdict: flat" if result["ok"] else "verdict: GROWTH: " + "; ".join(result["problems"]))
    return lines


def write_plot(result: dict[str, Any], path: Path) -> None:
    """RSS, fds and threads per process and /dev/shm entries over time, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    names = sorted({n for s in samples for n in s["processes"]})
    fig, axes = plt.subplots(4, 1, figsize=(10, 12), sharex=True)
    for key, ax, label in (("rss_mb", axes[0], "RSS, MB"), ("fds", axes[1], "open fds"),
                           ("threads", axes[2], "threads")):
        for name in names:
            pts = [(s["t"] / 60, s["processes"][name][key]) for s in samples if name in s["processes"]]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name)
        ax.set_ylabel(label)
    axes[0].legend(fontsize=8, ncol=4)
    axes[3].plot([s["t"] / 60 for s in samples], [s["shm_entries"] for s in samples])
    axes[3].set_ylabel("frame rings in /dev/shm")
    axes[3].set_xlabel("minutes")
    for ax in axes:
        ax.axvline(result["analysis"]["warmup_s"] / 60, color="grey", linestyle=":")
    fig.suptitle(f"soak: {Path(result['video']).name} looped at {result['fps_in']:g} fps")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def default_video(config: Settings) -> Path:
    from posestream.stream.core.config import shared_dir

    return shared_dir(config) / "data/video/two_person_interaction_72f.mp4"


def run_from_args(minutes: float, out: Path | None, plot: Path | None, video: Path | None,
                  config: Settings, config_file: str | None = None, overrides: list[str] = (),
                  fps: float = 10.0, interval_s: float = 5.0) -> int:
    """Shared by `python -m posestream.benchmarks.soak` and `posestream bench --soak`; exit 1 on growth."""
    if plot:
        from posestream.benchmarks.plot import check_plotting

        check_plotting()
    with tempfile.TemporaryDirectory(prefix="posestream-soak-") as tmp:
        result = run_soak(video or default_video(config), minutes, Path(tmp), fps=fps,
                          interval_s=interval_s, config_file=config_file, overrides=overrides)
    print("\n".join(format_result(result)))
    if out:
        out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    if plot:
        write_plot(result, plot)
    return 0 if result["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--video", type=Path, help="clip to loop (default: the shared 72-frame clip)")
    parser.add_argument("--fps", type=float, default=10.0, help="replay rate of the looped clip")
    parser.add_argument("--interval", type=float, default=5.0, help="sampling period, s")
    parser.add_argument("--out", type=Path, help="write the samples, slopes and verdict as JSON")
    parser.add_argument("--plot", type=Path, help="write a PNG of the series (needs matplotlib)")
    parser.add_argument("--config", help="config file for the run")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    return run_from_args(args.minutes, args.out, args.plot, args.video, load_config(args.config),
                         args.config, args.overrides, args.fps, args.interval)


if __name__ == "__main__":
    sys.exit(main())
