"""Parent death: `posestream run` SIGKILLed mid-run (what the OOM killer or a container stop does).
Every stage process must notice within 2 s and exit, the run's frame rings must leave /dev/shm,
and the JSON written so far must stay a valid file. Plus the start-up sweep of rings left by dead
runs, which must never touch a live run's segment."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from multiprocessing import shared_memory
from pathlib import Path

import pytest

from posestream.benchmarks.soak import alive, descendants, label_processes, replay_source
from posestream.stream.core.config import load_config, shared_dir
from posestream.stream.orphans import segment_name, segment_owner, sweep

NOTICE_S = 2.0


def _dead_pid() -> int:
    """A pid that no process has right now (a child that has exited and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_sweep_removes_segments_of_dead_owners_only() -> None:
    dead = shared_memory.SharedMemory(create=True, size=4096, name=segment_name(_dead_pid()))
    live = shared_memory.SharedMemory(create=True, size=4096, name=segment_name())
    try:
        assert segment_owner(live.name) == os.getpid()
        removed = sweep()
        assert dead.name.lstrip("/") in removed
        assert not Path("/dev/shm", dead.name.lstrip("/")).exists()
        assert Path("/dev/shm", live.name.lstrip("/")).exists()
    finally:
        for shm in (dead, live):
            shm.close()
        live.unlink()
        with pytest.raises(FileNotFoundError):
            dead.unlink()


def test_names_of_other_software_are_not_ours() -> None:
    assert segment_owner("psm_1234abcd") is None
    assert segment_owner("sem.mp-xyz") is None
    assert segment_owner("posestream_12_zz") is None


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sigkilled_supervisor_takes_its_stages_and_rings_along(prepared_home: Path, tmp_path: Path) -> None:
    video = shared_dir(load_config()) / "data/video/two_person_interaction_72f.mp4"
    out = tmp_path / "out.json"
    env = dict(os.environ, POSESTREAM_HOME=str(prepared_home))
    proc = subprocess.Popen(
        [sys.executable, "-m", "posestream", "-v", "run", "--quiet", "--live",
         "--source", replay_source(video, 10.0, tmp_path), "--sink", f"json:{out}",
         "--set", "source.lavfi_realtime=true", "--set", "detector.threads=1",
         "--set", "detector.input_size=320"],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "run.log", "w"), env=env)
    try:
        deadline = time.monotonic() + 180
        while not (out.is_file() and out.stat().st_size > 8):
            assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no result within 180 s"
            time.sleep(0.2)
        names = label_processes(proc.pid, descendants(proc.pid))
        # multiprocessing's resource tracker is no stage: it leaves when the last stage has gone
        # (and unlinks what they leaked); it is checked below without the 2 s promise.
        tracker = [pid for pid, name in names.items() if name == "resource_tracker"]
        stages = [pid for pid, name in names.items() if name not in ("supervisor", "resource_tracker")]
        rings = [p for p in Path("/dev/shm").iterdir() if segment_owner(p.name) == proc.pid]
        assert {names[p] for p in stages} >= {"source0", "detect", "nms", "track", "sinks"} and rings
        proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        proc.wait()
        gone: dict[int, float] = {}
        while len(gone) < len(stages) and time.monotonic() - killed < 10:
            gone.update({pid: time.monotonic() - killed for pid in stages
                         if pid not in gone and not alive(pid)})
            time.sleep(0.05)
        took = max(gone.values(), default=99.0)
        print("exit after the supervisor's SIGKILL, s:", {names[p]: round(t, 2) for p, t in gone.items()})
        while any(alive(pid) for pid in tracker) and time.monotonic() - killed < 10:
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = (tmp_path / "run.log").read_text()
    assert not [pid for pid in stages + tracker if alive(pid)], log[-3000:]
    # they notice within about a second; the slack is for a loaded CI machine (without the
    # watch they would outlive the 10 s loop above)
    assert took <= NOTICE_S + 3.0, f"stages outlived the supervisor: {gone} s"
    assert not [p for p in rings if p.exists()], "frame rings left in /dev/shm"
    entries = json.loads(out.read_text())  # valid JSON, not only recoverable
    assert entries and all(e["category_id"] == 1 for e in entries)
