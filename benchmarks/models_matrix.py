"""Accuracy and speed of every detector / SPPE combination, and of the `apache` preset.

    python -m posestream.benchmarks.models_matrix [--sets coco,crowdpose,posetrack,halpe26]
        [--fps-rounds 2] [--frames 144] [--skip-eval] [--skip-fps] [--out matrix.json]

Accuracy: `posestream eval` (whole commands) on every annotated set in `../shared/data` for each
detector alone (one-stage) and each detector + SPPE pair, without and with `pose.landmark_merge =
average` (the SPPE's points averaged with the detector's own by score). Speed: whole `posestream run`
commands (model loading included, JSON sink, tracking on) on the 1080p clip looped to `--frames`,
the default and the candidates alternated round by round; ratios to the default's FPS of the same
round. Prints one table and writes the JSON (rewritten after every row, so a stopped run keeps
what it measured). Models must be prepared (`posestream models prepare NAME`).
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib
from pathlib import Path
from typing import Any

from posestream.benchmarks.clips import DEFAULT_VIDEO, looped_clip
from posestream.benchmarks.peer import run_posestream
from posestream.benchmarks.report import emit
from posestream.stream.core.config import load_config, preset_path, shared_dir

SETS = {  # name -> (GT file, images folder or None = the GT's), under ../shared/data
    "coco": ("coco/person_keypoints.json", None),
    "crowdpose": ("crowdpose/crowdpose_keypoints.json", None),
    "posetrack": ("posetrack/posetrack18_val_subset.json", None),
    "halpe26": ("halpe/halpe26_keypoints.json", "coco/images"),
}
DETECTORS = {
    "yolo11n-pose (AGPL-3.0)": [],
    "movenet-multipose 256": ["model.name=movenet-multipose", "detector.plugin=movenet-multipose",
                              "detector.input_size=256", "engine.precision=fp32"],
    "mediapipe-person": ["model.name=mediapipe-person", "detector.plugin=mediapipe-person", "engine.precision=fp32"],
}
TOPDOWN_ONLY = ("mediapipe-person",)  # detectors without COCO keypoints: no one-stage row
SPPES = {
    "movenet-thunder": ["pose.plugin=movenet", "pose.model=movenet-thunder"],
    "movenet-lightning": ["pose.plugin=movenet", "pose.model=movenet-lightning"],
    "blazepose-heavy": ["pose.plugin=blazepose", "pose.model=blazepose-heavy"],
    "blazepose-full": ["pose.plugin=blazepose", "pose.model=blazepose-full"],
    "blazepose-lite": ["pose.plugin=blazepose", "pose.model=blazepose-lite"],
}
_AP = re.compile(r"Average Precision  \(AP\) @\[ IoU=0\.50:0\.95 \| area=   all \| maxDets= 20 \] = (-?[0-9.]+)")


def preset_overrides(name: str) -> list[str]:
    """A shipped preset as `--set` items (so the runs show what the preset holds)."""
    return [f"{table}.{key}={value!r}".replace("'", '"') if isinstance(value, str) else f"{table}.{key}={value}"
            for table, values in tomllib.loads(preset_path(name).read_text(encoding="utf-8")).items() for key, value in values.items()]


def rows() -> dict[str, list[str]]:
    """Every configuration measured, by label."""
    table = {f"{det}, one-stage": over for det, over in DETECTORS.items() if det not in TOPDOWN_ONLY}
    for det, over in DETECTORS.items():
        for sppe, pose in SPPES.items():
            for merge in ("none", "average"):
                label = f"{det} + {sppe}" + (", merged" if merge == "average" else "")
                table[label] = [*over, "pose.mode=topdown", *pose, f"pose.landmark_merge={merge}"]
    return table


def eval_ap(data: Path, name: str, overrides: list[str]) -> float | None:
    gt, images = SETS[name]
    cmd = [sys.executable, "-m", "posestream", "eval", "--gt", str(data / gt)]
    if images:
        cmd += ["--images", str(data / images)]
    for item in overrides:
        cmd += ["--set", item]
    result = subprocess.run(cmd, capture_output=True, text=True)
    found = _AP.search(result.stdout)
    if result.returncode != 0 or not found:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"  eval failed ({name}): {tail}", file=sys.stderr)
        return None
    return float(found.group(1))


def measure_fps(video: Path, frames: int, rounds: int, variants: dict[str, list[str]]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="models-matrix-") as tmp:
        scratch = Path(tmp)
        clip, count = looped_clip(video, frames, scratch / "clip.mp4")
        runs: dict[str, list[dict[str, Any]]] = {label: [] for label in variants}
        for _ in range(rounds):
            for label, overrides in variants.items():
                runs[label].append(run_posestream(clip, count, scratch, overrides, re.sub(r"\W", "_", label)))
    base = [r["fps"] for r in runs["default"]]
    return {label: {"fps": [r["fps"] for r in got], "median_fps": statistics.median(r["fps"] for r in got),
                    "ratio_to_default": [round(r["fps"] / b, 3) for r, b in zip(got, base)],
                    "persons_per_frame": got[-1].get("persons_per_frame"), "busy_pct": got[-1].get("busy_pct")}
            for label, got in runs.items()} | {"frames": count}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--only", default="", help="measure only rows whose label contains this text")
    parser.add_argument("--fps-rounds", type=int, default=2)
    parser.add_argument("--frames", type=int, default=144)
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("--skip-fps", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    data = shared_dir(load_config()) / "data"
    sets = [s for s in args.sets.split(",") if s]
    result: dict[str, Any] = {"sets": sets, "accuracy": {}, "started": time.strftime("%Y-%m-%d %H:%M")}
    apache = preset_overrides("apache")
    if not args.skip_eval:
        table = {**rows(), "preset apache": apache}
        for label, overrides in table.items():
            if args.only and args.only not in label:
                continue
            result["accuracy"][label] = {s: eval_ap(data, s, overrides) for s in sets}
            print(f"{label}: {result['accuracy'][label]}", file=sys.stderr)
            emit([], result, args.out)
    if not args.skip_fps:
        variants = {"default": [], "preset apache": apache,
                    "yolo11n-pose + movenet-thunder": ["pose.mode=topdown", *SPPES["movenet-thunder"]],
                    "movenet-multipose 256, one-stage": DETECTORS["movenet-multipose 256"],
                    "preset apache with movenet-thunder": [*apache, *SPPES["movenet-thunder"]]}
        result["fps"] = measure_fps(data / "video" / DEFAULT_VIDEO, args.frames, args.fps_rounds, variants)
    lines = ["| configuration | " + " | ".join(f"{s} AP" for s in sets) + " |", "|---|" + "---|" * len(sets)]
    for label, aps in result["accuracy"].items():
        lines.append(f"| {label} | " + " | ".join("-" if aps[s] is None else f"{aps[s]:.3f}" for s in sets) + " |")
    for label, row in result.get("fps", {}).items():
        if label != "frames":
            lines.append(f"FPS {label}: {row['fps']} (median {row['median_fps']}, / default {row['ratio_to_default']})")
    emit(lines, result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
