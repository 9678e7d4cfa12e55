"""The bench picture: end-to-end latency over time in live mode, per-stage busy % and FPS.

matplotlib is an optional extra (`pip install posestream[plot]`); without it `--plot` fails with one
clear message before anything is measured.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from posestream.stream.core.errors import ConfigError, InputError

INSTALL_HINT = "--plot needs matplotlib: pip install 'posestream[plot]' (or pip install matplotlib)"


def check_plotting() -> None:
    """Raise one `ConfigError` when matplotlib is not installed."""
    if importlib.util.find_spec("matplotlib") is None:
        raise ConfigError(INSTALL_HINT)


def write_plot(result: dict[str, Any], path: Path) -> Path:
    """Draw the figure from a `run_bench` result and save it as PNG at `path`."""
    check_plotting()
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

    live = result.get("live") or {}
    has_live = "series" in live.get("trend", {})
    offline = result["videos"][0]["pipeline"]["report"] if result.get("videos") else None
    fig, axes = plt.subplots(1, 3 if has_live else 2, figsize=(16 if has_live else 11, 4.5))
    axes = list(axes)
    if has_live:
        ax = axes.pop(0)
        series = live["trend"]["series"]
        ax.plot([s[0] for s in series], [s[1] for s in series], ".", ms=3, alpha=0.5,
                label="frame")
        windows = live["trend"]["windows"]
        ax.step([w["start_s"] for w in windows], [w["p99"] for w in windows], where="post",
                label="p99 per window")
        ax.step([w["start_s"] for w in windows], [w["p50"] for w in windows], where="post",
                label="p50 per window")
        last = series[-1][0] if series else 0.0
        ax.axvspan(0, live.get("warmup_s", 0.0), color="grey", alpha=0.15, label="warm-up / drain (excluded)")
        ax.axvspan(max(0.0, last - live.get("drain_s", 0.0)), last, color="grey", alpha=0.15)
        frame_ms = live.get("processing_ms")
        if frame_ms:
            ax.axhline(3 * frame_ms, color="red", ls="--", lw=1, label="target p99 (3x frame time)")
        ax.set(title=f"live: {live['fps_in']:g} fps in, {live['drop_pct']}% dropped",
               xlabel="time since first frame (s)", ylabel="end-to-end latency (ms)")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    runs = [("offline", offline)] + ([("live", live["report"])] if has_live else [])
    runs = [(name, report) for name, report in runs if report]
    if not runs:
        raise InputError("nothing to plot: the result has neither a pipeline run nor a live run")
    stages = list(runs[0][1]["stages"])
    width = 0.8 / len(runs)
    for ax, key, title in ((axes[0], "busy_pct", "busy % per stage"), (axes[1], "fps", "FPS per stage")):
        for i, (name, report) in enumerate(runs):
            values = [report["stages"].get(s, {}).get(key) or 0.0 for s in stages]
            ax.bar([x + i * width for x in range(len(stages))], values, width, label=name)
        ax.set_xticks([x + width * (len(runs) - 1) / 2 for x in range(len(stages))], stages)
        ax.set(title=title)
        ax.legend(fontsize=8)
    fig.suptitle("posestream bench" + (" (quick: not a measurement)" if result.get("quick") else ""))
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
