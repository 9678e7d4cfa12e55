"""A small-person dev set made from the shared evaluation data: people shrunk 3-5x on a 1920x1080 canvas.

Two parts, written as MOTChallenge folders (`seqinfo.ini`, `gt.txt`, `img1/000001.jpg ...`), so
`posestream eval --mot` reads them and recall can be split by person height:

- `tud-far`: the 71 frames of TUD-Campus (8 pedestrians, 130-310 px tall) three times on one
  canvas, shrunk 3x, 4x and 5x (26-103 px tall), the smaller ones higher up, as a wide camera sees
  near and far people; the ground truth transformed with them (ids 100 + id, 200 + id, 300 + id).
- `stills`: every annotated image of the shared COCO, CrowdPose and PoseTrack sets, each shrunk 3x,
  4x or 5x in turn and placed at a seeded position on its own canvas; one "frame" per image, with
  every annotated person box (COCO crowd regions have confidence 0: not scored). Still images: no
  tracking metrics, recall only.

The canvas is plain grey (128). This is a dev set derived from evaluation data: it shows where a
strategy stands, it is not for fitting thresholds (results are also checked on held-out data).
Generated into a cache or temporary folder at benchmark time, never committed:

    python -m posestream.benchmarks.small_people_set OUT_DIR
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import av
import cv2
import numpy as np

from posestream.stream.core.config import load_config, shared_dir
from posestream.stream.core.errors import InputNotFoundError
from posestream.stream.mot import read_mot_file

CANVAS_HW = (1080, 1920)
GREY = 128
TUD_COPIES = ((3, (140, 640)), (4, (860, 420)), (5, (1480, 240)))  # shrink factor, (x, y) top-left
STILL_SHRINK = (3, 4, 5)
STILL_SETS = ("coco/person_keypoints.json", "crowdpose/crowdpose_keypoints.json",
              "posetrack/posetrack18_val_subset.json")
SEED = 21


def _write_sequence(folder: Path, frames: list[np.ndarray], rows: list[list[float]], fps: float) -> Path:
    (folder / "img1").mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(frames, 1):
        cv2.imwrite(str(folder / "img1" / f"{index:06d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
    (folder / "seqinfo.ini").write_text(
        f"[Sequence]\nname={folder.name}\nimDir=img1\nframeRate={fps:g}\nseqLength={len(frames)}\n"
        f"imWidth={CANVAS_HW[1]}\nimHeight={CANVAS_HW[0]}\nimExt=.jpg\n", encoding="utf-8")
    lines = [f"{int(r[0])},{int(r[1])},{r[2]:.2f},{r[3]:.2f},{r[4]:.2f},{r[5]:.2f},{int(r[6])},-1,-1,-1"
             for r in sorted(rows, key=lambda r: (r[0], r[1]))]
    (folder / "gt.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return folder


def _place(box: np.ndarray, shrink: int, origin: tuple[int, int], size_hw: tuple[int, int]) -> np.ndarray | None:
    """A source box (x, y, w, h) shrunk and moved onto the canvas, clipped to the pasted image."""
    x0, y0 = max(box[0], 0.0), max(box[1], 0.0)
    x1, y1 = min(box[0] + box[2], size_hw[1]), min(box[1] + box[3], size_hw[0])
    if x1 <= x0 or y1 <= y0:
        return None
    return np.array([origin[0] + x0 / shrink, origin[1] + y0 / shrink, (x1 - x0) / shrink, (y1 - y0) / shrink])


def _paste(canvas: np.ndarray, image: np.ndarray, shrink: int, origin: tuple[int, int]) -> None:
    height, width = image.shape[:2]
    small = cv2.resize(image, (round(width / shrink), round(height / shrink)), interpolation=cv2.INTER_AREA)
    canvas[origin[1]:origin[1] + small.shape[0], origin[0]:origin[0] + small.shape[1]] = small


def build_tud_far(shared: Path, out: Path) -> Path:
    tud = shared / "data/mot/TUD-Campus"
    if not (tud / "TUD-Campus.mp4").is_file():
        raise InputNotFoundError(f"the dev set is made from {tud}, which is missing")
    gt = read_mot_file(tud / "gt.txt", 71, "ground truth")
    frames, rows = [], []
    with av.open(str(tud / "TUD-Campus.mp4")) as container:
        for index, frame in enumerate(container.decode(video=0)):
            image = frame.to_ndarray(format="bgr24")
            canvas = np.full((*CANVAS_HW, 3), GREY, dtype=np.uint8)
            for copy, (shrink, origin) in enumerate(TUD_COPIES, 1):
                _paste(canvas, image, shrink, origin)
                for row in gt[gt[:, 0] == index + 1]:
                    box = _place(row[2:6], shrink, origin, image.shape[:2])
                    if box is not None:
                        rows.append([index + 1, 100 * copy + row[1], *box, row[6]])
            frames.append(canvas)
    return _write_sequence(out / "tud-far", frames, rows, 25.0)


def build_stills(shared: Path, out: Path) -> Path:
    rng = np.random.default_rng(SEED)
    frames, rows, person = [], [], 0
    for gt_name in STILL_SETS:
        gt_path = shared / "data" / gt_name
        gt = json.loads(gt_path.read_text(encoding="utf-8"))
        for image_info in sorted(gt["images"], key=lambda i: (i["file_name"], i["id"])):
            path = next((p for p in (gt_path.parent / image_info["file_name"],
                                     gt_path.parent / "images" / image_info["file_name"]) if p.is_file()), None)
            if path is None:
                raise InputNotFoundError(f"dev set: image {image_info['file_name']} of {gt_path} is missing")
            image = cv2.imread(str(path))
            shrink = STILL_SHRINK[len(frames) % len(STILL_SHRINK)]
            height, width = (np.array(image.shape[:2]) / shrink).round().astype(int)
            origin = (int(rng.integers(0, CANVAS_HW[1] - width)), int(rng.integers(0, CANVAS_HW[0] - height)))
            canvas = np.full((*CANVAS_HW, 3), GREY, dtype=np.uint8)
            _paste(canvas, image, shrink, origin)
            frames.append(canvas)
            for ann in gt["annotations"]:
                if ann["image_id"] != image_info["id"] or "bbox" not in ann:
                    continue
                box = _place(np.asarray(ann["bbox"], dtype=np.float64), shrink, origin, image.shape[:2])
                if box is not None:
                    person += 1
                    rows.append([len(frames), person, *box, 0 if ann.get("iscrowd") else 1])
    return _write_sequence(out / "stills", frames, rows, 1.0)


def build_dev_set(out: Path, shared: Path | None = None) -> dict[str, Path]:
    """Both parts under `out` (made again when present but incomplete)."""
    shared = shared or shared_dir(load_config())
    built = {}
    for name, build in (("tud-far", build_tud_far), ("stills", build_stills)):
        folder = out / name
        built[name] = folder if (folder / "gt.txt").is_file() and (folder / "seqinfo.ini").is_file() \
            else build(shared, out)
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write the dev set into")
    args = parser.parse_args(argv)
    for name, folder in build_dev_set(args.out).items():
        print(f"{name}: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
