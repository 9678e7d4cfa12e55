"""Soak: the analysis on made-up series (a leak is caught, a flat run with passing helper threads is
not), and a 60-second run of the real pipeline on a looped clip with the same assertions as the
10-minute one: no process grows in fds or threads, the run's rings in /dev/shm stay as they are,
RSS does not climb after the warm-up, and everything is gone after the stop."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from posestream.benchmarks.soak import analyse, run_soak, verdict, write_plot
from posestream.stream.core.config import load_config, shared_dir

CI_RSS_FLOOR_RISE_MB = 16.0  # about 2.5 frames of 1080p: see the comment in the 60-second test


def _samples(rss: list[float], threads: list[int], shm: list[int] | None = None) -> list[dict]:
    shm = shm or [1] * len(rss)
    return [{"t": 10.0 * i, "processes": {"detect": {"rss_mb": r, "fds": 17, "threads": n}},
             "shm_entries": s, "shm_mb": 50.0 * s} for i, (r, n, s) in enumerate(zip(rss, threads, shm))]


def test_flat_run_passes_even_with_a_passing_helper_thread() -> None:
    threads = [7, 7, 8, 7, 7, 7, 8, 7, 7, 7]
    result = analyse(_samples([200.0] * 10, threads), warmup_s=0)
    assert verdict(result).ok, verdict(result).problems
    assert result["processes"]["detect"]["rss_slope_mb_per_10min"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("rss, threads, shm, problem", [
    ([200.0 + 0.01 * i for i in range(10)], [7] * 10, None, "RSS grows 0.60 MB"),   # under the limit
    ([200.0 + 0.1 * i for i in range(10)], [7] * 10, None, "RSS grows 6.00 MB"),
    ([200.0] * 10, [7, 7, 7, 8, 8, 9, 9, 10, 10, 11], None, "threads grew 7 -> 10"),
    ([200.0] * 10, [7] * 10, [1, 1, 1, 2, 2, 2, 3, 3, 3, 3], "/dev/shm entries grew 1 -> 3"),
])
def test_growth_is_named(rss: list[float], threads: list[int], shm: list[int] | None, problem: str) -> None:
    check = verdict(analyse(_samples(rss, threads, shm), warmup_s=0))
    if problem.startswith("RSS grows 0.60"):
        assert check.ok  # 0.6 MB per 10 minutes is within the promise
    else:
        assert not check.ok and any(problem in p for p in check.problems), check.problems


def test_warmup_is_left_out_of_the_slope() -> None:
    rss = [100.0, 150.0, 190.0] + [200.0] * 10  # loading, then flat
    assert verdict(analyse(_samples(rss, [7] * 13), warmup_s=30)).ok
    assert not verdict(analyse(_samples(rss, [7] * 13), warmup_s=0)).ok


@pytest.mark.slow
@pytest.mark.soak
@pytest.mark.timeout(900)
def test_sixty_second_soak_is_flat(prepared_home: Path, tmp_path: Path) -> None:
    """60 s measured after a 120 s warm-up: the detector's RSS climbs for its first ~100 s here
    (allocator arenas filling; docs/reliability.md), which a shorter warm-up would mistake for a leak."""
    video = shared_dir(load_config()) / "data/video/two_person_interaction_72f.mp4"
    result = run_soak(video, 3.0, tmp_path, fps=10.0, interval_s=2.0, warmup_s=120.0,
                      overrides=["detector.threads=1", "detector.input_size=320"],
                      home=str(prepared_home))
    (tmp_path / "result.json").write_text(json.dumps(result, indent=1))  # to look at after a failure
    analysis = result["analysis"]
    assert result["exit_code"] == 130, result["log_tail"]  # stopped by SIGINT, cleanly
    assert set(analysis["processes"]) >= {"supervisor", "resource_tracker", "source0", "detect", "nms",
                                          "track", "sinks"}
    assert analysis["steady_samples"] >= 20
    for name, p in analysis["processes"].items():
        assert p["fds_late"] <= p["fds_early"], (name, p)
        assert p["threads_late"] <= p["threads_early"], (name, p)
        # A minute is too short for the per-10-minutes slope: one 1080p frame buffer (6 MB) allocated
        # at a sample swings it by tens of MB, and on a loaded machine the detector's arena still
        # takes one step of ~12 MB after two minutes. The floor of the RSS (least of each half) is
        # what a leak raises; this bound catches a leak of ~50 kB per frame, the 10-minute soak the rest.
        assert p["rss_floor_rise_mb"] <= CI_RSS_FLOOR_RISE_MB, (name, p)
    assert analysis["shm"]["entries_late"] == analysis["shm"]["entries_early"] >= 1
    assert result["shm_after_exit"]["shm_entries"] == 0
    assert result["report"]["streams"]["lavfi"]["frames_out"] > 0
    plot = tmp_path / "soak.png"
    write_plot(result, plot)
    assert plot.stat().st_size > 10_000
