"""Identity quality of the tracker next to the peer's trackers, on the same detections.

Every clip is read once and its poses found once per detector input size with the default chain
(YOLO11n-pose, pose NMS; cached in `$POSESTREAM_HOME/tracking-cache`), then every contestant tracks
exactly those persons: posestream's `oks-byte` (as configured, and each `--variant`) and the peer,
Ultralytics' `BYTETracker` (`bytetrack.yaml`) and `BOTSORT` (`botsort.yaml`, with its sparse
optical-flow camera-motion compensation on the frames) - the classes `YOLO.track` runs, with the
settings it reads, fed the boxes and scores `track` would feed them (same weights, same input size,
score threshold 0.1). Only the tracker differs, which is what this benchmark measures.

Clips with ground truth (MOTChallenge sequences under `data/mot`) are scored with TrackEval
(`stream.mot.score`: MOTA, IDF1, HOTA, ID switches); the shared videos have none, so they report
what can be read without it: ids made, id fragments (an id that disappears and comes back), and
how many of the main people's frames their longest ids cover (`people` per clip below).

    python -m posestream.benchmarks.tracking [--input-size 640,1280] [--clips NAME,...]
        [--variant NAME=KEY=VALUE,...] [--video NAME=PATH:PEOPLE] [--no-peer] [--out tracking.json]

The peer is optional (`pip install ultralytics lapx` into the same venv; never a posestream
dependency); without it its rows are skipped with one line.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import av
import cv2
import numpy as np

from posestream.benchmarks.report import emit
from posestream.stream.core.config import home_dir, load_config, parse_value, shared_dir
from posestream.stream.core.settings import Settings
from posestream.stream.core.contracts import IdAllocator, TrackFrame
from posestream.stream.core.errors import InputNotFoundError
from posestream.stream.core.images import list_images
from posestream.stream.core.results import Poses

PEER_TRACKERS = ("bytetrack", "botsort")
DETECTION_TABLES = ("model", "engine", "detector", "small_people", "pose", "pose_nms")  # cache key


@dataclass(frozen=True)
class Clip:
    """One benchmark clip: a MOTChallenge sequence (scored against its GT), a video or an image
    folder (no GT; `people` = how many persons it is about, for the coverage column)."""

    name: str
    path: Path
    mot: bool = False
    people: int = 0


def shared_clips(config: Settings, scratch: Path) -> list[Clip]:
    """The MOT sequences (and a panning copy of each, for camera motion), the small-person dev
    set's tracking part (`small_people_set`: TUD-Campus three times, 3-5x smaller, on a 1920x1080
    canvas) and the shared videos."""
    from posestream.benchmarks.small_people_set import build_dev_set

    data = shared_dir(config) / "data"
    sequences = [p for p in sorted((data / "mot").glob("*")) if p.is_dir()]
    clips = [Clip(p.name, p, mot=True) for p in sequences]
    clips.append(Clip("dev tud-far", build_dev_set(scratch / "dev")["tud-far"], mot=True))
    clips += [Clip(f"{p.name}-pan", panning_copy(p, scratch / f"{p.name}-pan"), mot=True) for p in sequences]
    clips += [Clip("two_person_interaction_72f", data / "video/two_person_interaction_72f.mp4", people=2),
              Clip("street_walk_5f", data / "video/street_walk_5f.mp4", people=1),
              Clip("soccer_posetrack_000001_5f", data / "video/soccer_posetrack_000001_5f.mp4", people=3),
              Clip("posetrack_000001_10f", data / "posetrack/sequences/000001_mpiinew_test", people=3)]
    return [clip for clip in clips if clip.path.exists()]


def own_clip(spec: str) -> Clip:
    """`NAME=PATH:PEOPLE` (`--video`) as a clip without GT."""
    name, _, rest = spec.partition("=")
    path, _, people = rest.rpartition(":")
    if not name or not path or not people.isdigit():
        raise SystemExit(f"--video wants NAME=PATH:PEOPLE, got {spec!r}")
    if not Path(path).exists():
        raise InputNotFoundError(f"--video {name}: {path} not found")
    return Clip(name, Path(path), people=int(people))


def panning_copy(folder: Path, out: Path, zoom: float = 1.25, cycles: float = 1.0) -> Path:
    """A MOT sequence seen by a camera that pans: each frame is a window `1 / zoom` of the
    picture's size, swept left-right-left (`cycles` times over the sequence) and up-down at half
    that rate, scaled back to full size; the GT boxes moved and scaled with it (boxes leaving the
    window are clipped, those with less than half their area inside dropped). Written once."""
    from posestream.stream.mot import open_sequence, read_mot_file

    if (out / "seqinfo.ini").is_file():
        return out
    sequence = open_sequence(folder)
    frames = read_frames(Clip(folder.name, folder, mot=True))[:sequence.length]
    height, width = frames[0].shape[:2]
    win_w, win_h = width / zoom, height / zoom
    phase = 2 * np.pi * cycles * np.arange(len(frames)) / max(len(frames) - 1, 1)
    left = (width - win_w) * (0.5 - 0.5 * np.cos(phase))
    top = (height - win_h) * (0.5 - 0.5 * np.cos(phase / 2))
    (out / "img1").mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(frames):
        affine = np.array([[zoom, 0, -left[index] * zoom], [0, zoom, -top[index] * zoom]])
        view = cv2.warpAffine(frame, affine, (width, height), flags=cv2.INTER_LINEAR)
        cv2.imwrite(str(out / "img1" / f"{index + 1:06d}.jpg"), view, [cv2.IMWRITE_JPEG_QUALITY, 95])
    rows = read_mot_file(sequence.gt, sequence.length, "ground truth")
    index = rows[:, 0].astype(int) - 1
    x0 = (rows[:, 2] - left[index]) * zoom
    y0 = (rows[:, 3] - top[index]) * zoom
    x1, y1 = x0 + rows[:, 4] * zoom, y0 + rows[:, 5] * zoom
    cx0, cy0 = np.clip(x0, 0, width), np.clip(y0, 0, height)
    cx1, cy1 = np.clip(x1, 0, width), np.clip(y1, 0, height)
    inside = (cx1 - cx0) * (cy1 - cy0) >= 0.5 * (x1 - x0) * (y1 - y0)
    moved = rows.copy()
    moved[:, 2:6] = np.stack([cx0, cy0, cx1 - cx0, cy1 - cy0], axis=1)
    lines = [f"{int(r[0])},{int(r[1])},{r[2]:.1f},{r[3]:.1f},{r[4]:.1f},{r[5]:.1f}," +
             ",".join(f"{v:g}" for v in r[6:]) for r in moved[inside]]
    (out / "gt.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "seqinfo.ini").write_text(
        f"[Sequence]\nname={out.name}\nimDir=img1\nframeRate={sequence.frame_rate or 25:g}\n"
        f"seqLength={len(frames)}\nimWidth={width}\nimHeight={height}\nimExt=.jpg\n", encoding="utf-8")
    return out


# -- frames and detections ----------------------------------------------------------------------------

def read_frames(clip: Clip) -> list[np.ndarray]:
    """BGR frames in order (a MOT sequence's video frame N is its GT frame N + 1)."""
    path = clip.path
    if clip.mot:
        from posestream.stream.mot import open_sequence

        path = open_sequence(path).frames
    if path.is_dir():
        return [cv2.imread(str(p)) for p in list_images(path)]
    if not path.is_file():
        raise InputNotFoundError(f"clip not found: {path}")
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="bgr24") for frame in container.decode(video=0)]


def detections_key(clip: Clip, config: Settings) -> str:
    """What the cached detections of `clip` depend on: the settings that shape them, the clip's path
    and the model cards (their files' sha256, the INT8 model's too: a model rebuilt by another recipe
    or on another CPU finds anew)."""
    from posestream.engines.models import load_card

    tables = {name: dataclasses.asdict(getattr(config, name)) for name in DETECTION_TABLES}
    tables["clip"] = str(clip.path.resolve())  # two `--video` clips may share a name
    names = [config.model.name] + ([config.pose.model] if config.pose.mode == "topdown" else [])
    tables["cards"] = [dataclasses.asdict(load_card(config, name)[0]) for name in names]
    return hashlib.sha256(json.dumps(tables, sort_keys=True, default=str).encode()).hexdigest()[:12]


def detections(clip: Clip, frames: list[np.ndarray], config: Settings, cache: Path) -> list[Poses]:
    """The default chain's poses per frame, found as the pipeline finds them (frames decoded at the
    size it decodes them, the detector told the stream and frame number, which its small-person
    windows follow); cached per `detections_key`."""
    from posestream.stream.chain import PoseChain
    from posestream.stream.links import Origin

    file = cache / f"{clip.name}-{config.detector.input_size}-{detections_key(clip, config)}.npz"
    if file.is_file():
        with np.load(file) as data:
            bounds = data["bounds"]
            return [Poses(data["boxes"][a:b], data["box_scores"][a:b], data["keypoints"][a:b],
                          data["scores"][a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    long_side = decoded_side(config)
    found = []
    with PoseChain(config) as chain:  # frame by frame as the pipeline's stages run it
        for index, frame in enumerate(frames):
            image, _ = as_decoded(frame, long_side) if long_side else (frame, 1.0)
            found += chain.process([image], [Origin((0, index), frame.shape[:2])])
    bounds = np.cumsum([0] + [len(p) for p in found])
    cache.mkdir(parents=True, exist_ok=True)
    joined = {name: np.concatenate([getattr(p, name) for p in found])
              for name in ("boxes", "box_scores", "keypoints", "scores")}
    np.savez(file, bounds=bounds, **joined)
    return found


# -- the contestants: each yields (frame index, ids [N], boxes [N, 4] x, y, w, h) per frame ------------

Tracks = Iterator[tuple[int, np.ndarray, np.ndarray]]


def track_posestream(found: list[Poses], frames: list[np.ndarray], config: Settings) -> Tracks:
    """The configured tracker as the track stage drives it: told each frame's number, and given the
    frame (decoded at the detector's size when larger) when it reads pixels."""
    from posestream.stream.core import registry

    settings = config
    tracker_cls = registry.load("posestream.trackers", settings.tracker.plugin)
    tracker = tracker_cls(settings, IdAllocator())
    pixels = tracker_cls.reads_pixels(settings)
    long_side = decoded_side(config)
    for index, (poses, frame) in enumerate(zip(found, frames)):
        image, scale = None, 1.0
        if pixels:
            image, scale = as_decoded(frame, long_side) if long_side else (frame, 1.0)
        out = tracker.update(poses, TrackFrame(index, None, image, scale))
        yield index, out.ids, out.boxes


def decoded_side(config: Settings) -> int | None:
    """The long side the pipeline's sources decode at with this config (None: full size)."""
    from posestream.stream.stage_graph import decode_long_side, plan

    return decode_long_side(config, plan(config, 1, False))


def as_decoded(frame: np.ndarray, long_side: int) -> tuple[np.ndarray, float]:
    """The frame shrunk to `long_side` (as `source.scale_in_decoder` decodes it), and the scale."""
    scale = min(1.0, long_side / max(frame.shape[:2]))
    if scale == 1.0:
        return frame, 1.0
    size = (round(frame.shape[1] * scale), round(frame.shape[0] * scale))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA), size[0] / frame.shape[1]


def peer_missing() -> str | None:
    for module in ("ultralytics", "lap"):
        if importlib.util.find_spec(module) is None:
            return "peer not installed: pip install ultralytics lapx (into this venv) to add the peer rows"
    return None


def track_peer(kind: str, found: list[Poses], frames: list[np.ndarray]) -> Tracks:
    """Ultralytics' tracker `kind` (its default yaml), as `YOLO.track` drives it per frame: boxes,
    scores and class 0 in; the activated tracks' boxes and ids out."""
    import ultralytics
    from ultralytics.engine.results import Boxes
    from ultralytics.trackers.track import TRACKER_MAP
    from ultralytics.utils import YAML, IterableSimpleNamespace

    cfg = IterableSimpleNamespace(**YAML.load(Path(ultralytics.__file__).parent / f"cfg/trackers/{kind}.yaml"))
    cfg.device = "cpu"
    tracker = TRACKER_MAP[cfg.tracker_type](args=cfg)
    for index, (poses, frame) in enumerate(zip(found, frames)):
        xyxy = np.concatenate([poses.boxes[:, :2], poses.boxes[:, :2] + poses.boxes[:, 2:]], axis=1)
        data = np.concatenate([xyxy, poses.box_scores[:, None], np.zeros((len(poses), 1))], axis=1)
        tracks = tracker.update(Boxes(data.astype(np.float32), frame.shape[:2]), frame)
        tracks = np.asarray(tracks).reshape(-1, 8)
        boxes = np.concatenate([tracks[:, :2], tracks[:, 2:4] - tracks[:, :2]], axis=1)
        yield index, tracks[:, 4].astype(np.int64), boxes


# -- scores -----------------------------------------------------------------------------------------

def score_mot(clip: Clip, tracks: Tracks) -> dict[str, Any]:
    from posestream.stream.mot import open_sequence, score, write_mot_file

    sequence = open_sequence(clip.path)
    rows = [[index + 1, i, *box, 1.0, -1, -1, -1] for index, ids, boxes in tracks
            for i, box in zip(ids.tolist(), boxes.tolist()) if i >= 0 and index < sequence.length]
    with tempfile.TemporaryDirectory(prefix="posestream-tracking-") as tmp:
        results = Path(tmp) / f"{sequence.name}.txt"
        write_mot_file(results, np.array(rows, dtype=np.float64).reshape(-1, 10))
        return score(sequence, results)


def identity_without_gt(tracks: Tracks, people: int) -> dict[str, Any]:
    """Ids made, fragments (id gaps: frames where an id is missing between two of its frames,
    counted once per gap) and coverage: the frames of the `people` longest ids over `people` x
    frames."""
    frames_of: dict[int, list[int]] = {}
    frames = 0
    for index, ids, _ in tracks:
        frames = index + 1
        for i in ids.tolist():
            if i >= 0:
                frames_of.setdefault(i, []).append(index)
    lengths = sorted((len(f) for f in frames_of.values()), reverse=True)
    fragments = sum(int(np.count_nonzero(np.diff(sorted(f)) > 1)) for f in frames_of.values())
    coverage = sum(lengths[:people]) / max(people * frames, 1)
    return {"ids": len(frames_of), "fragments": fragments, "coverage": coverage, "people": people}


def id_timelines(clip: Clip, tracks: list[tuple[int, np.ndarray, np.ndarray]]) -> dict[int, list[int]]:
    """Per GT person, the id the tracker gave them in each frame (-1: not covered, i.e. no tracked
    box with IoU >= 0.5; -2: not in the GT that frame), for the picture."""
    from posestream.stream.core.similarity import iou_matrix
    from posestream.stream.mot import open_sequence, read_mot_file

    sequence = open_sequence(clip.path)
    gt = read_mot_file(sequence.gt, sequence.length, "ground truth")
    lines = {int(i): [-2] * sequence.length for i in np.unique(gt[:, 1])}
    for index, ids, boxes in tracks:
        rows = gt[gt[:, 0] == index + 1]
        keep = ids >= 0
        iou = iou_matrix(rows[:, 2:6], boxes[keep])
        for person, overlap in zip(rows[:, 1].astype(int), iou):
            best = int(np.argmax(overlap)) if overlap.size else -1
            lines[person][index] = int(ids[keep][best]) if best >= 0 and overlap[best] >= 0.5 else -1
    return lines


def evaluate(clip: Clip, tracks: Tracks) -> dict[str, Any]:
    start = time.perf_counter()
    done = list(tracks)
    result = score_mot(clip, iter(done)) if clip.mot else identity_without_gt(iter(done), clip.people)
    result["seconds"] = time.perf_counter() - start  # tracking + scoring, not a latency figure
    if clip.mot:
        result["timelines"] = id_timelines(clip, done)
    return result


def plot_timelines(rows: list[dict[str, Any]], clip: str, size: int, path: Path) -> Path:
    """One panel per tracker: a row per GT person, coloured by the id it had in each frame (grey:
    not covered; blank: not in view). A person drawn in one colour kept one id."""
    from posestream.benchmarks.plot import check_plotting

    check_plotting()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = [r for r in rows if r["clip"] == clip and r["input_size"] == size and "timelines" in r]
    fig, axes = plt.subplots(len(chosen), 1, figsize=(9, 1.0 + 1.3 * len(chosen)), sharex=True, squeeze=False)
    palette = plt.get_cmap("tab20")
    for ax, row in zip(axes[:, 0], chosen):
        for y, (person, line) in enumerate(sorted(row["timelines"].items())):
            for frame, track_id in enumerate(line):
                if track_id == -2:
                    continue
                colour = "0.8" if track_id < 0 else palette(track_id % 20)
                ax.barh(y, 1, left=frame, height=0.8, color=colour, linewidth=0)
        ax.set_yticks(range(len(row["timelines"])), [str(p) for p in sorted(row["timelines"])])
        ax.set_ylabel("GT person")
        ax.set_title(f"{row['tracker']}: IDF1 {row['IDF1']:.3f}, {row['id_switches']} ID switches, "
                     f"{row['ids']} ids", fontsize=9, loc="left")
    axes[-1, 0].set_xlabel(f"frame ({clip}, detector input {size}); colour = track id, grey = not tracked")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# -- the table ----------------------------------------------------------------------------------------

def parse_variants(specs: list[str]) -> dict[str, dict[str, Any]]:
    """`NAME=KEY=VALUE,KEY=VALUE` -> {NAME: {KEY: VALUE}} (keys are dotted config keys)."""
    variants = {}
    for spec in specs:
        name, _, rest = spec.partition("=")
        pairs = (item.split("=", 1) for item in rest.split(",") if item)
        variants[name] = {key: parse_value(value) for key, value in pairs}
    return variants


def run(clips: list[Clip], sizes: list[int], variants: dict[str, dict[str, Any]], peer: bool,
        cache: Path) -> list[dict[str, Any]]:
    rows = []
    for clip in clips:
        frames = read_frames(clip)
        for size in sizes:
            config = load_config(overrides={"detector.input_size": size})
            found = detections(clip, frames, config, cache)
            contestants: dict[str, Callable[[], Tracks]] = {}
            for name, overrides in variants.items():
                tuned = load_config(overrides={"detector.input_size": size, **overrides})
                contestants[name] = lambda tuned=tuned: track_posestream(found, frames, tuned)
            if peer:
                for kind in PEER_TRACKERS:
                    contestants[f"peer {kind}"] = lambda kind=kind: track_peer(kind, found, frames)
            for name, make in contestants.items():
                rows.append({"clip": clip.name, "input_size": size, "tracker": name,
                             "frames": len(frames), **evaluate(clip, make())})
    return rows


def table(rows: list[dict[str, Any]]) -> list[str]:
    mot = [r for r in rows if "IDF1" in r]
    plain = [r for r in rows if "IDF1" not in r]
    lines = []
    if mot:
        header = f"{'clip':<28} {'size':>5} {'tracker':<18} {'MOTA':>6} {'IDF1':>6} {'HOTA':>6} " \
                 f"{'IDsw':>5} {'ids':>4} {'GT ids':>6}"
        lines += [header, "-" * len(header)]
        lines += [f"{r['clip']:<28} {r['input_size']:>5} {r['tracker']:<18} {r['MOTA']:>6.3f} "
                  f"{r['IDF1']:>6.3f} {r['HOTA']:>6.3f} {r['id_switches']:>5} {r['ids']:>4} "
                  f"{r['gt_ids']:>6}" for r in mot]
    if plain:
        header = f"{'clip (no GT)':<28} {'size':>5} {'tracker':<18} {'ids':>4} {'fragments':>9} " \
                 f"{'coverage':>8} {'people':>6}"
        lines += ["", header, "-" * len(header)] if lines else [header, "-" * len(header)]
        lines += [f"{r['clip']:<28} {r['input_size']:>5} {r['tracker']:<18} {r['ids']:>4} "
                  f"{r['fragments']:>9} {r['coverage']:>8.3f} {r['people']:>6}" for r in plain]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-size", default="640,1280", help="detector input sizes, comma-separated")
    parser.add_argument("--clips", default="", help="clip names, comma-separated (default: all shared)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=KEY=VALUE,...",
                        help="a posestream row with these config overrides (repeatable); "
                             "'posestream' (the configured tracker) is always there")
    parser.add_argument("--video", action="append", default=[], metavar="NAME=PATH:PEOPLE",
                        help="also a clip of your own without GT (a video or image folder, about PEOPLE "
                             "persons), e.g. OpenCV's vtest.avi (repeatable)")
    parser.add_argument("--no-peer", action="store_true", help="leave out the peer's rows")
    parser.add_argument("--cache", type=Path, help="detections cache (default $POSESTREAM_HOME/tracking-cache)")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    parser.add_argument("--plot", type=Path, metavar="PNG",
                        help="id timelines per GT person, one panel per tracker, of --plot-clip")
    parser.add_argument("--plot-clip", default="TUD-Campus-pan:1280", metavar="CLIP:SIZE")
    args = parser.parse_args(argv)
    config = load_config()
    cache = args.cache or home_dir(config) / "tracking-cache"
    clips = shared_clips(config, cache)
    if args.clips:
        wanted = args.clips.split(",")
        clips = [c for c in clips if c.name in wanted]
    clips += [own_clip(spec) for spec in args.video]
    variants = {"posestream": {}, **parse_variants(args.variant)}
    missing = None if args.no_peer else peer_missing()
    rows = run(clips, [int(s) for s in args.input_size.split(",")], variants,
               peer=not args.no_peer and missing is None, cache=cache)
    lines = table(rows) + ([missing] if missing else [])
    report = {"benchmark": "tracking", "python": platform.python_version(),
              "machine": platform.machine(), "variants": variants, "results": rows}
    emit(lines, report, args.out)
    if args.plot:
        name, _, size = args.plot_clip.partition(":")
        plot_timelines(rows, name, int(size), args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
