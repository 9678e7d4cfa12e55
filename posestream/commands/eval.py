"""`posestream eval --gt FILE [--images DIR]`: run on the GT's images and print COCO keypoint AP/AR;
`posestream eval --mot SEQ [--results FILE]`: track a MOTChallenge sequence (or score a results file)
and print MOTA, IDF1, HOTA and friends (`posestream.stream.mot`).

The GT may be COCO-17 or Halpe (scored on all its points), CrowdPose or PoseTrack18 (scored on the
joints they share with COCO-17; see `posestream.stream.evaluation`). Images are found by the GT's
`file_name` (which may hold sub-folders, as PoseTrack's do) under `--images`, by default under the
GT file's folder or its `images/` sub-folder.

Without `--detections` the whole configured chain runs (detector, pose, pose NMS). With
`--detections FILE` (COCO detection results, e.g. `person_detections_AP_H_56.json`) the pose stage
alone runs on those fixed boxes: the configured top-down plugin (`pose.plugin`), then pose NMS, so
the SPPE is measured apart from the detector.

With `--mot SEQ` the configured pipeline (every `--set`/`--config` applies: detector size, tracker,
...) runs offline on the sequence's frames with a JSON sink, and the boxes of the tracked persons
become MOTChallenge rows (persons without a track id are left out and counted). `--results FILE`
scores a MOTChallenge text file instead (a peer's output, or `--tracks` of an earlier run).
"""
from __future__ import annotations

import argparse
import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from posestream.commands.common import add_config_args, config_from_args
from posestream.stream.core.errors import InputError, InputNotFoundError
from posestream.stream.core.results import FrameResult, Poses
from posestream.stream.core.settings import Settings

if TYPE_CHECKING:
    from posestream.stream.mot import MotSequence

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from posestream.stream.evaluation import GT_FORMATS

    parser = subparsers.add_parser("eval", help="COCO keypoint AP/AR on annotated images, or MOTChallenge "
                                                "tracking metrics on a sequence (--mot)")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--gt", type=Path, metavar="FILE",
                      help="keypoint ground truth in COCO JSON: COCO-17, Halpe-26/136, CrowdPose or PoseTrack18")
    what.add_argument("--mot", type=Path, metavar="SEQ",
                      help="MOTChallenge sequence folder (seqinfo.ini, gt/gt.txt or gt.txt, img1/ or one video): "
                           "MOTA, IDF1, HOTA, recall, precision, ID switches from TrackEval")
    parser.add_argument("--results", type=Path, metavar="FILE",
                        help="--mot: score this MOTChallenge results file instead of running the pipeline")
    parser.add_argument("--tracks", type=Path, metavar="FILE",
                        help="--mot: also write the run's tracks as a MOTChallenge results file")
    parser.add_argument("--images", type=Path, metavar="DIR",
                        help="folder holding the GT's images by file_name (default: the GT file's folder, "
                             "then its images/ sub-folder)")
    parser.add_argument("--format", dest="gt_format", choices=GT_FORMATS, default="auto",
                        help="GT keypoint layout (default auto: from the GT's keypoint names); crowdpose and "
                             "posetrack are scored on the joints they share with COCO-17")
    parser.add_argument("--detections", type=Path, metavar="FILE",
                        help="COCO detection results: evaluate the pose stage on these boxes")
    parser.add_argument("--out", type=Path, metavar="FILE",
                        help="also write the results (AlphaPose JSON); with --mot the metrics (JSON)")
    add_config_args(parser)
    parser.set_defaults(func=run)


def _gt_images(gt: dict[str, Any], folder: Path, *alternatives: Path) -> list[tuple[Path, int]]:
    """(path, image id) of the GT images present in `folder` (or else in the first of `alternatives`
    that holds them); missing ones are reported, not fatal."""
    if not folder.is_dir():
        raise InputNotFoundError(f"image folder not found: {folder}")
    present, missing = [], []
    for image in sorted(gt["images"], key=lambda i: i["file_name"]):
        path = next((p for p in (f / image["file_name"] for f in (folder, *alternatives)) if p.is_file()),
                    folder / image["file_name"])
        (present if path.is_file() else missing).append((path, int(image["id"])))
    if not present:
        where = " or ".join(str(f) for f in (folder, *alternatives))
        raise InputError(f"none of the {len(gt['images'])} ground-truth images is in {where}")
    if missing:
        log.warning("%d ground-truth image(s) not in %s are left out of the evaluation: %s", len(missing),
                    folder, ", ".join(p.name for p, _ in missing[:5]) + (" ..." if len(missing) > 5 else ""))
    return present


def _load_detections(path: Path, image_ids: set[int]) -> dict[int, Poses]:
    """Person boxes per image id from COCO detection results (category 1 only), for the images of
    `image_ids` that the file covers."""
    if not path.is_file():
        raise InputNotFoundError(f"detections file not found: {path}")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for entry in entries:
            if int(entry.get("category_id", 1)) == 1:
                by_image[int(entry["image_id"])].append(entry)
        boxes = {i: (np.array([e["bbox"] for e in by_image[i]], dtype=np.float64).reshape(-1, 4),
                     np.array([e["score"] for e in by_image[i]], dtype=np.float64))
                 for i in image_ids if i in by_image}
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, KeyError, ValueError, AttributeError) as exc:
        raise InputError(f"detections file {path} is not COCO detection results "
                         f"(a list of {{image_id, category_id, bbox, score}}): {exc!r}") from None
    return {i: Poses(b, s, np.zeros((len(b), 0, 3)), s) for i, (b, s) in boxes.items()}


def _run_on_boxes(images: list[tuple[Path, int]], detections: dict[int, Poses],
                  config: Settings) -> Iterator[tuple[int, FrameResult]]:
    from posestream.stream.image_inference import read_image
    from posestream.stream.links import build_estimator
    from posestream.stream.pose_nms import make_pose_nms

    estimator = build_estimator(config)
    nms = make_pose_nms(config)
    try:
        for index, (path, image_id) in enumerate(images):
            image = read_image(path)
            poses = nms(estimator.estimate([image], [detections[image_id]])[0])
            yield image_id, FrameResult(stream="eval", frame=index, width=image.shape[1],
                                        height=image.shape[0], poses=poses, image_id=path.name)
    finally:
        estimator.close()


def _run_chain(images: list[tuple[Path, int]], config: Settings, ran: list[str]) -> Iterator[tuple[int, FrameResult]]:
    """The whole chain on the images; `ran` receives what its models ran as."""
    from posestream.stream.chain import PoseChain
    from posestream.stream.image_inference import infer_images

    ids = {str(path): image_id for path, image_id in images}  # by path: PoseTrack's file names repeat
    with PoseChain(config) as chain:
        ran.extend(chain.models())
        for path, _, result in infer_images([p for p, _ in images], config, chain):
            yield ids[str(path)], result


def track_sequence(config: Settings, sequence: "MotSequence", scratch: Path) -> tuple[Path, str]:
    """Run the configured pipeline (offline, JSON sink) on the sequence's frames; the MOTChallenge
    results file it gives and a line saying what was left out."""
    from posestream.plugins.sinks.json_sink import read_alphapose_json
    from posestream.stream.mot import rows_from_alphapose, write_mot_file
    from posestream.stream.pipeline import Pipeline

    out = scratch / "alphapose-results.json"
    with Pipeline(config, [str(sequence.frames)], [f"json:{out}"], policy="offline") as pipeline:
        pipeline.run()
    entries = read_alphapose_json(out) if out.is_file() else []
    rows, untracked, beyond = rows_from_alphapose(entries, sequence.is_video, sequence.length)
    results = scratch / f"{sequence.name}.txt"
    write_mot_file(results, rows)
    note = f"{len(rows)} tracked person boxes; {untracked} persons without a track id left out"
    if beyond:
        note += f"; {beyond} on frames after seqLength {sequence.length} left out"
    return results, note


def run_mot(args: argparse.Namespace, config: Settings) -> int:
    import shutil
    import tempfile

    from posestream.stream.mot import RULES, format_scores, open_sequence, score

    sequence = open_sequence(args.mot)
    with tempfile.TemporaryDirectory(prefix="posestream-eval-mot-") as tmp:
        if args.results is not None:
            results, what = args.results, f"results file {args.results}"
        else:
            results, note = track_sequence(config, sequence, Path(tmp))
            what = f"pipeline on {sequence.frames.name} ({note})"
            if args.tracks:
                args.tracks.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(results, args.tracks)
        scores = score(sequence, results)
    print(f"MOT sequence {sequence.name}: {sequence.length} frames; {what}")
    print(RULES[sequence.rules])
    for line in format_scores(scores):
        print(line)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        report = {"sequence": str(sequence.folder), "frames": sequence.length, "rules": sequence.rules,
                  "scored": what, "metrics": scores}
        args.out.write_text(json.dumps(report, indent=1), encoding="utf-8")
    return 0


def run(args: argparse.Namespace) -> int:
    from posestream.stream.evaluation import coco_keypoint_summary, detect_gt_format, load_ground_truth

    config = config_from_args(args)
    if args.mot is not None:
        for flag in ("images", "detections"):
            if getattr(args, flag) is not None:
                raise InputError(f"--{flag} goes with --gt FILE, not with --mot")
        return run_mot(args, config)
    for flag in ("results", "tracks"):
        if getattr(args, flag) is not None:
            raise InputError(f"--{flag} goes with --mot SEQ, not with --gt")
    gt = load_ground_truth(args.gt)
    detect_gt_format(gt, args.gt_format)  # an unusable GT fails here, before the model loads
    if args.images is None:
        images = _gt_images(gt, args.gt.parent, args.gt.parent / "images")
    else:
        images = _gt_images(gt, args.images)
    ran: list[str] = []  # what the models ran as (file, backend, precision), printed with the metrics
    if args.detections:
        detections = _load_detections(args.detections, {i for _, i in images})
        if not detections:
            raise InputError(f"{args.detections} has no person boxes for the ground-truth images found")
        uncovered = [p.name for p, i in images if i not in detections]
        if uncovered:
            log.warning("%d image(s) have no boxes in %s and are left out: %s", len(uncovered),
                        args.detections.name, ", ".join(uncovered))
        images = [(p, i) for p, i in images if i in detections]
        frames = _run_on_boxes(images, detections, config)
        what = f"pose stage on the boxes of {args.detections.name} ({config.pose.plugin})"
    else:
        frames = _run_chain(images, config, ran)
        what = f"pipeline (pose mode {config.pose.mode})"
    results: list[dict[str, Any]] = []
    for image_id, frame in frames:
        results.extend(frame.to_alphapose(image_id))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results), encoding="utf-8")
    _, summary = coco_keypoint_summary(args.gt, results, [i for _, i in images], args.gt_format)
    print(f"{what}: {len(images)} images, {len(results)} persons")
    for line in ran:
        print(line)
    print(summary, end="")
    return 0
