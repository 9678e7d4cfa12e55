"""MOTChallenge sequences, results in MOTChallenge text format, and their scores from TrackEval.

A sequence is a folder with `seqinfo.ini` (its `seqLength` at least), the ground truth (`gt/gt.txt`
as MOTChallenge ships it, or `gt.txt`) and the frames: `img1/` (the ini's `imDir`) with images
named by frame number (`000001.jpg`), or one video file whose frame N is GT frame N + 1. Frames are
numbered from 1, boxes are `x, y, w, h` in pixels (top-left corner and size).

Which ground truth counts follows MOTChallenge (and TrackEval, which implements it):
- **MOT15 rules** (the class column holds no class ids, as in MOT15's `-1, -1, -1` world
  coordinates): every GT row counts except those with confidence 0.
- **MOT16/17/20 rules** (column 8 holds class ids 1..13): only pedestrians (class 1) with confidence
  not 0 are scored; results that match a GT box of a distractor class (person on vehicle, static
  person, distractor, reflection; MOT20 also non-MOT vehicle) are removed before scoring.

The metrics come from TrackEval (`pip install 'posestream[eval]'`): CLEAR (MOTA, recall, precision,
ID switches; IoU 0.5), Identity (IDF1) and HOTA (averaged over IoU 0.05..0.95), each computed by the
library on the sequence; this module only lays the files out the way TrackEval reads them.
"""
from __future__ import annotations

import configparser
import contextlib
import io
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from posestream.stream.core.errors import BackendUnavailableError, InputError, InputNotFoundError
from posestream.stream.core.images import IMAGE_SUFFIXES, VIDEO_SUFFIXES, is_image_path

GT_FILES = ("gt/gt.txt", "gt.txt")  # MOTChallenge's layout first, then a flat folder
MOT_CLASSES = range(1, 14)  # MOT16/17/20 class ids (1 = pedestrian ... 13 = crowd)
RULES = {
    "MOT15": "MOT15 rules: every GT row counts except those with confidence 0 (the class column holds "
             "no class ids)",
    "MOT17": "MOT16/17 rules: only pedestrian GT rows (class 1) with confidence not 0 count; results "
             "matching a GT box of class 2, 7, 8 or 12 (person on vehicle, static person, distractor, "
             "reflection) are removed",
    "MOT20": "MOT20 rules: only pedestrian GT rows (class 1) with confidence not 0 count; results "
             "matching a GT box of class 2, 6, 7, 8 or 12 (person on vehicle, non-MOT vehicle, static "
             "person, distractor, reflection) are removed",
}
# What `score` returns, in print order: key -> label
METRICS = {"MOTA": "MOTA", "IDF1": "IDF1", "HOTA": "HOTA", "DetA": "DetA", "AssA": "AssA",
           "recall": "recall", "precision": "precision", "id_switches": "ID switches",
           "ids": "ids (results)", "gt_ids": "ids (GT)", "mostly_tracked": "mostly tracked",
           "mostly_lost": "mostly lost", "tp": "true positives", "fp": "false positives",
           "fn": "false negatives", "gt_boxes": "GT boxes"}


@dataclass(frozen=True)
class MotSequence:
    """One MOTChallenge sequence folder, checked."""

    name: str
    folder: Path
    gt: Path
    length: int                 # frames (seqinfo.ini seqLength); GT and results lie in 1..length
    frames: Path                # the img1/ folder or the video file
    rules: str                  # "MOT15" | "MOT17" | "MOT20": which GT rows count (see RULES)
    frame_rate: float | None = None
    size: tuple[int, int] | None = None  # (width, height) from seqinfo.ini

    @property
    def is_video(self) -> bool:
        return self.frames.is_file()


def open_sequence(folder: str | Path) -> MotSequence:
    """The sequence in `folder`; anything missing or malformed is one `InputError` naming it."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputNotFoundError(f"MOT sequence folder not found: {folder}")
    ini = folder / "seqinfo.ini"
    if not ini.is_file():
        raise InputNotFoundError(f"MOT sequence {folder}: seqinfo.ini is missing")
    parser = configparser.ConfigParser()
    try:
        parser.read(ini, encoding="utf-8")
        info = parser["Sequence"]
        length = int(info["seqLength"])
    except (configparser.Error, KeyError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"MOT sequence {folder}: seqinfo.ini has no [Sequence] seqLength "
                         f"(an integer): {exc!r}") from None
    if length < 1:
        raise InputError(f"MOT sequence {folder}: seqinfo.ini seqLength = {length}, must be >= 1")
    gt = next((folder / name for name in GT_FILES if (folder / name).is_file()), None)
    if gt is None:
        raise InputNotFoundError(f"MOT sequence {folder}: ground truth is missing "
                                 f"(neither {' nor '.join(GT_FILES)})")
    rows = read_mot_file(gt, length, "ground truth")
    frames = _frames(folder, info.get("imDir", "img1"))
    size = None
    with contextlib.suppress(KeyError, ValueError):
        size = (int(info["imWidth"]), int(info["imHeight"]))
    rate = None
    with contextlib.suppress(KeyError, ValueError):
        rate = float(info["frameRate"])
    name = info.get("name", folder.name) or folder.name
    return MotSequence(folder.name, folder, gt, length, frames, gt_rules(rows, name), rate, size)


def _frames(folder: Path, image_dir: str) -> Path:
    """The frame folder (images named by frame number) or the one video file of the sequence."""
    images = folder / image_dir
    if images.is_dir():
        names = [p for p in images.iterdir() if is_image_path(p)]
        if not names:
            raise InputError(f"MOT sequence {folder}: {image_dir}/ holds no images ({', '.join(IMAGE_SUFFIXES)})")
        unnumbered = [p.name for p in names if not p.stem.isdigit()]
        if unnumbered:
            raise InputError(f"MOT sequence {folder}: {image_dir}/ images must be named by frame number "
                             f"(000001.jpg ...), not {unnumbered[0]}")
        return images
    videos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if len(videos) != 1:
        found = "none" if not videos else ", ".join(p.name for p in videos)
        raise InputNotFoundError(f"MOT sequence {folder}: frames are missing: no {image_dir}/ folder and not "
                                 f"exactly one video file ({', '.join(VIDEO_SUFFIXES)}; found {found})")
    return videos[0]


def read_mot_file(path: Path, length: int, what: str) -> np.ndarray:
    """The rows of a MOTChallenge text file (`frame, id, x, y, w, h, conf, ...`, comma or space
    separated) as a float array [N, >= 7]; frames outside 1..`length`, too few or non-numeric
    columns are one `InputError` naming the line."""
    if not path.is_file():
        raise InputNotFoundError(f"{what} file not found: {path}")
    rows: list[list[float]] = []
    width = None
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            values = [float(v) for v in re.split(r"[,\s]+", line.strip()) if v]
        except ValueError:
            raise InputError(f"{what} {path}, line {number}: not numbers: {line.strip()[:80]!r}") from None
        if len(values) < 7 or (width is not None and len(values) != width):
            need = "at least 7 (frame, id, x, y, w, h, conf, ...)" if width is None else f"{width} like line 1"
            raise InputError(f"{what} {path}, line {number}: {len(values)} columns, expected {need}")
        width = len(values)
        if not (values[0] == int(values[0]) and 1 <= values[0] <= length):
            raise InputError(f"{what} {path}, line {number}: frame {values[0]:g} is not in 1..{length} "
                             "(MOTChallenge numbers frames from 1 to seqLength)")
        rows.append(values)
    return np.array(rows, dtype=np.float64).reshape(-1, width or 10)


def gt_rules(rows: np.ndarray, name: str = "") -> str:
    """"MOT17" (or "MOT20" for a sequence named so) when column 8 holds MOT class ids, else "MOT15"."""
    if rows.shape[1] >= 8 and len(rows) and np.isin(rows[:, 7], MOT_CLASSES).all():
        return "MOT20" if name.upper().startswith("MOT20") else "MOT17"
    return "MOT15"


def frame_number(image_id: str | int, is_video: bool) -> int:
    """The MOT frame (from 1) of a posestream result: video frame N (`N.jpg`) is MOT frame N + 1;
    an image `000042.jpg` of img1/ is frame 42."""
    stem = Path(str(image_id)).stem
    if not stem.isdigit():
        raise InputError(f"result image_id {image_id!r} is not a frame number")
    return int(stem) + 1 if is_video else int(stem)


def rows_from_alphapose(entries: Iterable[dict[str, Any]], is_video: bool,
                        length: int) -> tuple[np.ndarray, int, int]:
    """MOT result rows `frame, id, x, y, w, h, score, -1, -1, -1` from AlphaPose entries (the box of
    each tracked person), and how many persons were left out: those without a track id (not confirmed
    by the tracker, or no tracker) and those on frames after `length`."""
    rows, untracked, beyond = [], 0, 0
    for entry in entries:
        if entry.get("idx") is None:
            untracked += 1
            continue
        frame = frame_number(entry["image_id"], is_video)
        if frame > length:
            beyond += 1
            continue
        x, y, w, h = (float(v) for v in entry["box"])
        rows.append([frame, int(entry["idx"]), x, y, w, h, float(entry["score"]), -1, -1, -1])
    return np.array(rows, dtype=np.float64).reshape(-1, 10), untracked, beyond


def write_mot_file(path: Path, rows: np.ndarray) -> None:
    """Rows in MOTChallenge text format (integers for frame and id, two decimals for boxes)."""
    lines = [f"{int(r[0])},{int(r[1])},{r[2]:.2f},{r[3]:.2f},{r[4]:.2f},{r[5]:.2f},{r[6]:.5f},-1,-1,-1"
             for r in rows[np.lexsort((rows[:, 1], rows[:, 0]))]] if len(rows) else []
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def score(sequence: MotSequence, results: Path) -> dict[str, float | int]:
    """TrackEval's CLEAR, Identity, HOTA and Count metrics of `results` (MOTChallenge text) on the
    sequence, by the `METRICS` keys. A results file TrackEval refuses (an id twice in one frame, a
    frame outside the sequence, ...) is one `InputError` with its reason."""
    try:
        import trackeval
    except ImportError:
        raise BackendUnavailableError("MOT metrics need TrackEval: pip install 'posestream[eval]'") from None
    read_mot_file(results, sequence.length, "results")  # our message for what TrackEval would misread
    with tempfile.TemporaryDirectory(prefix="posestream-mot-") as tmp:
        root = Path(tmp)
        (root / "gt" / sequence.name / "gt").mkdir(parents=True)
        (root / "gt" / sequence.name / "gt" / "gt.txt").symlink_to(sequence.gt.resolve())
        (root / "results" / "posestream" / "data").mkdir(parents=True)
        (root / "results" / "posestream" / "data" / f"{sequence.name}.txt").symlink_to(results.resolve())
        config = {"GT_FOLDER": str(root / "gt"), "TRACKERS_FOLDER": str(root / "results"),
                  "TRACKERS_TO_EVAL": ["posestream"], "BENCHMARK": sequence.rules, "SKIP_SPLIT_FOL": True,
                  "SEQ_INFO": {sequence.name: sequence.length}, "PRINT_CONFIG": False}
        metrics = [trackeval.metrics.CLEAR({"PRINT_CONFIG": False}), trackeval.metrics.Identity({"PRINT_CONFIG": False}),
                   trackeval.metrics.HOTA(), trackeval.metrics.Count()]
        captured = io.StringIO()
        try:
            with contextlib.redirect_stdout(captured):
                dataset = trackeval.datasets.MotChallenge2DBox(config)
                raw = dataset.get_raw_seq_data("posestream", sequence.name)
                data = dataset.get_preprocessed_seq_data(raw, "pedestrian")
                res: dict[str, Any] = {}
                for metric in metrics:
                    res.update(metric.eval_sequence(data))
        except trackeval.utils.TrackEvalException as exc:
            raise InputError(f"TrackEval refused {results}: {exc}") from None
    return {"MOTA": float(res["MOTA"]), "IDF1": float(res["IDF1"]), "HOTA": float(np.mean(res["HOTA"])),
            "DetA": float(np.mean(res["DetA"])), "AssA": float(np.mean(res["AssA"])),
            "recall": float(res["CLR_Re"]), "precision": float(res["CLR_Pr"]),
            "id_switches": int(res["IDSW"]), "ids": int(res["IDs"]), "gt_ids": int(res["GT_IDs"]),
            "mostly_tracked": int(res["MT"]), "mostly_lost": int(res["ML"]), "tp": int(res["CLR_TP"]),
            "fp": int(res["CLR_FP"]), "fn": int(res["CLR_FN"]), "gt_boxes": int(res["GT_Dets"])}


def format_scores(scores: dict[str, float | int]) -> list[str]:
    """One line per metric, as `posestream eval --mot` prints them."""
    return [f"{label:<16}{scores[key]:.3f}" if isinstance(scores[key], float) else f"{label:<16}{scores[key]}"
            for key, label in METRICS.items()]
