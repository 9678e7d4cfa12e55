"""COCO keypoint evaluation (AP, AP50, AP75, APm, APl, AR, ...) through pycocotools.

Results are AlphaPose/COCO result entries (`image_id`, `keypoints` flat x, y, s, `score`); `image_id`
may be the GT's integer id or the image's file name. OKS uses the sigmas of the keypoint format that
matches the GT's keypoint count, so Halpe ground truth is scored with Halpe's constants.
pycocotools prints as it works; that text is captured and returned, never printed by this module.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from posestream.stream.core.errors import InputError, InputNotFoundError
from posestream.stream.core.keypoints import format_for_keypoints

METRICS = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


def load_ground_truth(gt_json: Path) -> dict[str, Any]:
    """The GT file as a dict, with one clear error when it is missing or not COCO keypoint JSON."""
    path = Path(gt_json)
    if not path.is_file():
        raise InputNotFoundError(f"ground-truth file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"ground-truth file {path} is not JSON: {exc}") from None
    if not isinstance(data, dict) or not all(k in data for k in ("images", "annotations", "categories")):
        raise InputError(f"ground-truth file {path} is not COCO JSON (needs images, annotations, categories)")
    return data


def image_ids_by_file_name(gt: dict[str, Any]) -> dict[str, int]:
    return {image["file_name"]: int(image["id"]) for image in gt["images"]}


def _num_keypoints(gt: dict[str, Any]) -> int:
    for ann in gt["annotations"]:
        if ann.get("keypoints"):
            return len(ann["keypoints"]) // 3
    names = gt["categories"][0].get("keypoints") or []
    if names:
        return len(names)
    raise InputError("ground truth has no keypoints to evaluate")


def _normalised_results(results: Iterable[dict[str, Any]], gt: dict[str, Any],
                        num_keypoints: int) -> list[dict[str, Any]]:
    """Copies with integer image ids, checked against the GT (pycocotools would assert instead)."""
    by_name = image_ids_by_file_name(gt)
    known = set(by_name.values())
    out = []
    for index, result in enumerate(results):
        image_id = result.get("image_id")
        if isinstance(image_id, str) and image_id in by_name:
            image_id = by_name[image_id]
        if image_id not in known:
            raise InputError(f"result {index}: image_id {result.get('image_id')!r} is not an image of the "
                             "ground truth (use its id or file name)")
        keypoints = result.get("keypoints")
        if not isinstance(keypoints, Sequence) or len(keypoints) != 3 * num_keypoints:
            got = len(keypoints) if isinstance(keypoints, Sequence) else keypoints
            raise InputError(f"result {index}: expected {3 * num_keypoints} keypoint values "
                             f"({num_keypoints} x (x, y, score)), got {got}")
        out.append({"image_id": int(image_id), "category_id": int(result.get("category_id", 1)),
                    "keypoints": [float(v) for v in keypoints], "score": float(result["score"])})
    return out


def coco_keypoint_summary(gt_json: Path, results: Iterable[dict[str, Any]],
                          image_ids: Iterable[int] | None = None) -> tuple[dict[str, float], str]:
    """Metrics by name (see `METRICS`; -1 where pycocotools has nothing to measure, e.g. APm without
    medium-sized persons) and pycocotools' standard summary text.

    `image_ids` limits the evaluation to those GT images (e.g. the ones a run actually saw); by
    default every GT image counts, so a missed image costs recall.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = load_ground_truth(gt_json)
    num_keypoints = _num_keypoints(gt)
    sigmas = format_for_keypoints(num_keypoints).sigma_array
    entries = _normalised_results(results, gt, num_keypoints)
    ids = sorted(image_ids_by_file_name(gt).values()) if image_ids is None else sorted(set(image_ids))
    unknown = set(ids) - set(image_ids_by_file_name(gt).values())
    if unknown:
        raise InputError(f"image ids not in the ground truth: {sorted(unknown)}")
    entries = [e for e in entries if e["image_id"] in set(ids)]
    if not entries:
        return {name: 0.0 for name in METRICS}, "no results on the evaluated images: every metric is 0\n"
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(entries)
        evaluator = COCOeval(coco_gt, coco_dt, "keypoints")
        evaluator.params.imgIds = ids
        evaluator.params.kpt_oks_sigmas = np.asarray(sigmas)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    text = captured.getvalue()
    summary = "".join(line + "\n" for line in text.splitlines() if line.lstrip().startswith("Average"))
    metrics = {name: float(value) for name, value in zip(METRICS, evaluator.stats)}
    return metrics, summary


def coco_keypoint_eval(gt_json: Path, results: list[dict[str, Any]],
                       image_ids: Iterable[int] | None = None) -> dict[str, float]:
    """COCO keypoint metrics of `results` against `gt_json` (see `coco_keypoint_summary`)."""
    return coco_keypoint_summary(gt_json, results, image_ids)[0]
