"""COCO keypoint evaluation (AP, AP50, AP75, APm, APl, AR, ...) through pycocotools.

Results are AlphaPose/COCO result entries (`image_id`, `keypoints` flat x, y, s, `score`); `image_id`
may be the GT's integer id or the image's file name. OKS uses the sigmas of the keypoint format that
matches the GT's keypoint count, so Halpe ground truth is scored with Halpe's constants.
pycocotools prints as it works; that text is captured and returned, never printed by this module.

Two other keypoint layouts in COCO JSON are scored on the joints they share with COCO-17, since the
models predict COCO points: CrowdPose (14 points; its head top and neck have no COCO counterpart)
on the 12 body joints, PoseTrack18 (17 points whose eye slots hold head bottom / head top and whose
ears are unlabelled) on the nose and the 12 body joints. Both use COCO's sigmas for those joints;
their GT has no `area`, so OKS takes 0.53 x the box area (xtcocotools' `use_area=False` rule, used
for CrowdPose); PoseTrack predictions lying in the frames' ignore regions (unannotated people) are
dropped before scoring. Likewise results in another posestream format than a COCO/Halpe GT (say
COCO-17 results on Halpe-26 GT) are scored on the joints both formats have, with the GT's sigmas.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from posestream.stream.core.errors import ConfigError, InputError, InputNotFoundError
from posestream.stream.core.keypoints import COCO17, FORMATS, HALPE26, HALPE136, format_for_keypoints

METRICS = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")

# Ground-truth layouts `coco_keypoint_summary` scores; "auto" picks one from the GT's keypoint names.
GT_FORMATS = ("auto", "coco", "crowdpose", "posetrack")

_BODY = COCO17.names[5:]  # shoulders, elbows, wrists, hips, knees, ankles
CROWDPOSE_NAMES = _BODY + ("head", "neck")
POSETRACK_NAMES = ("nose", "head_bottom", "head_top", "left_ear", "right_ear") + _BODY
# GT layout -> (its keypoint names, the COCO-17 joints it is scored on)
_SHARED_JOINTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "crowdpose": (CROWDPOSE_NAMES, _BODY),
    "posetrack": (POSETRACK_NAMES, ("nose",) + _BODY),
}
_BOX_AREA_FACTOR = 0.53  # person area / box area where the GT has no area (xtcocotools, CrowdPose eval)


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
    for key, fields in (("images", ("id", "file_name")), ("annotations", ("image_id",)), ("categories", ())):
        items = data[key]
        if (not isinstance(items, list) or (key == "categories" and not items)
                or not all(isinstance(i, dict) and all(f in i for f in fields) for i in items)):
            kind = "non-empty list" if key == "categories" else "list"
            with_fields = f" with {', '.join(fields)}" if fields else ""
            raise InputError(f"ground-truth file {path}: {key} must be a {kind} of objects{with_fields}")
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


def _person_keypoint_names(gt: dict[str, Any]) -> tuple[str, ...]:
    categories = gt["categories"] or [{}]
    category = next((c for c in categories if c.get("id") == 1), categories[0])
    return tuple(str(n).strip().lower() for n in category.get("keypoints") or ())


def detect_gt_format(gt: dict[str, Any], requested: str = "auto") -> str:
    """"coco" (COCO-17 / Halpe-26 / Halpe-136), "crowdpose" or "posetrack", from the person
    category's keypoint names (their count where the GT names none); `requested` overrides the names
    but must fit the count. A GT that is none of these is one `InputError`."""
    if requested not in GT_FORMATS:
        raise InputError(f"unknown ground-truth format {requested!r} (valid: {', '.join(GT_FORMATS)})")
    count = _num_keypoints(gt)
    names = _person_keypoint_names(gt)
    counts = {"coco": {COCO17.num_keypoints, HALPE26.num_keypoints, HALPE136.num_keypoints},
              "crowdpose": {len(CROWDPOSE_NAMES)}, "posetrack": {len(POSETRACK_NAMES)}}
    if requested != "auto":
        if count not in counts[requested]:
            raise InputError(f"ground truth has {count} keypoints per person, not the "
                             f"{' or '.join(map(str, sorted(counts[requested])))} of format {requested}")
        return requested
    by_names = {COCO17.names: "coco", HALPE26.names: "coco", HALPE136.names: "coco",
                CROWDPOSE_NAMES: "crowdpose", POSETRACK_NAMES: "posetrack"}
    if names and names in by_names and len(names) == count:
        return by_names[names]
    if not names and count in counts["coco"]:
        return "coco"
    if not names and count in counts["crowdpose"]:
        return "crowdpose"
    shown = f"named {', '.join(names[:6])}{', ...' if len(names) > 6 else ''}" if names else "unnamed"
    raise InputError(f"ground truth has {count} keypoints per person ({shown}): not COCO-17, Halpe-26/136, "
                     "CrowdPose-14 or PoseTrack18-17 (if it is one of them under other names, say which "
                     "with --format coco|crowdpose|posetrack)")


def _scoring_subset(gt: dict[str, Any], kind: str, result_count: int
                    ) -> tuple[tuple[str, ...], tuple[str, ...], np.ndarray, str] | None:
    """How to score results with `result_count` points per person on a GT of `kind`: None where both
    are one posestream format (every GT point is scored, as pycocotools does it), otherwise (the GT's
    keypoint names, the joints both have, their OKS sigmas, the GT's format name)."""
    if kind == "coco":
        gt_format = format_for_keypoints(_num_keypoints(gt))
        known = {f.num_keypoints for f in FORMATS.values()}
        if result_count in (0, gt_format.num_keypoints) or result_count not in known:
            return None
        result_names = format_for_keypoints(result_count).names
        # once each: Halpe-136 names the body's wrists and the hands' wrists alike
        scored = tuple(dict.fromkeys(n for n in gt_format.names if n in result_names))
        sigmas = np.asarray([gt_format.sigmas[gt_format.names.index(n)] for n in scored])
        return gt_format.names, scored, sigmas, gt_format.name
    names, scored = _SHARED_JOINTS[kind]
    return names, scored, np.asarray([COCO17.sigmas[COCO17.names.index(n)] for n in scored]), kind


def _shared_joint_ground_truth(gt: dict[str, Any], names: tuple[str, ...], scored: tuple[str, ...],
                               label: str) -> tuple[dict[str, Any], int]:
    """A copy of `gt` (keypoints in the order of `names`) cut to the `scored` joints, with integer
    `iscrowd`, `num_keypoints` recounted on those joints and `area` from the box where it is missing;
    also how many areas came from boxes."""
    index = [names.index(n) for n in scored]
    out = {key: value for key, value in gt.items() if key != "annotations"}
    out["categories"] = [dict(c, keypoints=list(scored), skeleton=[]) for c in gt["categories"]]
    annotations, box_areas = [], 0
    for number, ann in enumerate(gt["annotations"]):
        try:
            ann = dict(ann, iscrowd=int(ann.get("iscrowd", 0)))
            x, y, w, h = (float(v) for v in ann["bbox"])
            if ann.get("keypoints"):
                points = np.asarray(ann["keypoints"], dtype=np.float64).reshape(len(names), 3)[index]
                ann["keypoints"] = points.ravel().tolist()
                ann["num_keypoints"] = int(np.count_nonzero(points[:, 2] > 0))
            else:
                ann["num_keypoints"] = 0
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"ground-truth annotation {number} is not a {label} person "
                             f"(bbox [x, y, w, h] and {len(names)} x (x, y, v) keypoints): {exc!r}") from None
        if "area" not in ann:
            ann["area"] = _BOX_AREA_FACTOR * w * h
            box_areas += 1
        annotations.append(ann)
    out["annotations"] = annotations
    return out, box_areas


def _shared_joint_results(entries: list[dict[str, Any]], scored: tuple[str, ...]) -> list[dict[str, Any]]:
    """`entries` (all in one posestream keypoint format) with only the `scored` joints, in that order."""
    if not entries:
        return entries
    num_keypoints = len(entries[0]["keypoints"]) // 3
    try:
        names = format_for_keypoints(num_keypoints).names
    except ConfigError as exc:
        raise InputError(f"results: {exc}") from None
    missing = [n for n in scored if n not in names]
    if missing:
        raise InputError(f"results in format {format_for_keypoints(num_keypoints).name} lack the scored "
                         f"joint(s) {', '.join(missing)}")
    index = [names.index(n) for n in scored]
    return [dict(e, keypoints=np.asarray(e["keypoints"]).reshape(-1, 3)[index].ravel().tolist())
            for e in entries]


def _ignore_masks(gt: dict[str, Any]) -> dict[int, np.ndarray]:
    """Per image id, the union of its PoseTrack ignore-region polygons as a boolean HxW mask."""
    from pycocotools import mask as mask_utils

    masks = {}
    for image in gt["images"]:
        xs, ys = image.get("ignore_regions_x") or [], image.get("ignore_regions_y") or []
        polygons = [[c for point in zip(px, py) for c in point] for px, py in zip(xs, ys) if len(px) >= 3]
        if polygons:
            height, width = int(image["height"]), int(image["width"])
            rles = mask_utils.frPyObjects(polygons, height, width)
            masks[int(image["id"])] = mask_utils.decode(mask_utils.merge(rles)).astype(bool)
    return masks


def _drop_in_ignore_regions(gt: dict[str, Any], entries: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """`entries` without the persons most of whose scored joints lie in their image's ignore regions
    (PoseTrack leaves the people there unannotated, so they would count as false positives)."""
    masks = _ignore_masks(gt)
    kept = []
    for entry in entries:
        mask = masks.get(entry["image_id"])
        if mask is not None:
            points = np.asarray(entry["keypoints"]).reshape(-1, 3)[:, :2].round().astype(int)
            inside = [0 <= x < mask.shape[1] and 0 <= y < mask.shape[0] and bool(mask[y, x]) for x, y in points]
            if sum(inside) * 2 > len(inside):
                continue
        kept.append(entry)
    return kept, len(entries) - len(kept)


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


def _scored(gt_json: Path, results: Iterable[dict[str, Any]], image_ids: Iterable[int] | None,
            gt_format: str) -> tuple[dict[str, Any], list[dict[str, Any]], np.ndarray, list[int], str]:
    """The ground truth and results as scored (shared joints, box areas, ignore regions), their
    OKS sigmas, the image ids and the notes that say how (see `coco_keypoint_summary`)."""
    gt = load_ground_truth(gt_json)
    kind = detect_gt_format(gt, gt_format)
    results = list(results)
    result_count = len(results[0].get("keypoints") or ()) // 3 if results else 0
    subset = _scoring_subset(gt, kind, result_count)
    notes = ""
    if subset is None:
        num_keypoints = _num_keypoints(gt)
        sigmas = format_for_keypoints(num_keypoints).sigma_array
        entries = _normalised_results(results, gt, num_keypoints)
    else:
        names, scored, sigmas, label = subset
        gt, box_areas = _shared_joint_ground_truth(gt, names, scored, label)
        entries = _shared_joint_results(_normalised_results(results, gt, result_count), scored)
        results_as = f", {format_for_keypoints(result_count).name} results" if results else ""
        notes = (f"{label} ground truth{results_as}: scored on the {len(scored)} joints both have "
                 f"({', '.join(scored)}), with {'COCO' if kind != 'coco' else label}'s OKS sigmas\n")
        if box_areas:
            notes += (f"{box_areas} of {len(gt['annotations'])} annotations have no area: "
                      f"{_BOX_AREA_FACTOR} x box area used\n")
    ids = sorted(image_ids_by_file_name(gt).values()) if image_ids is None else sorted(set(image_ids))
    unknown = set(ids) - set(image_ids_by_file_name(gt).values())
    if unknown:
        raise InputError(f"image ids not in the ground truth: {sorted(unknown)}")
    entries = [e for e in entries if e["image_id"] in set(ids)]
    if kind == "posetrack":
        entries, dropped = _drop_in_ignore_regions(gt, entries)
        notes += f"{dropped} predicted person(s) in ignore regions (unannotated people) left out\n"
    return gt, entries, np.asarray(sigmas), ids, notes


def _evaluated(gt: dict[str, Any], entries: list[dict[str, Any]], sigmas: np.ndarray,
               ids: list[int]) -> tuple[Any, str]:
    """pycocotools' keypoint COCOeval, evaluated, accumulated and summarised, and its printed text."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(entries)
        evaluator = COCOeval(coco_gt, coco_dt, "keypoints")
        evaluator.params.imgIds = ids
        evaluator.params.kpt_oks_sigmas = sigmas
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator, captured.getvalue()


def coco_keypoint_summary(gt_json: Path, results: Iterable[dict[str, Any]],
                          image_ids: Iterable[int] | None = None,
                          gt_format: str = "auto") -> tuple[dict[str, float], str]:
    """Metrics by name (see `METRICS`; -1 where pycocotools has nothing to measure, e.g. APm without
    medium-sized persons) and pycocotools' standard summary text. Where not every GT point is scored
    (CrowdPose, PoseTrack, other-format results) the text starts with lines saying which joints were
    scored and how (see the module docstring).

    `image_ids` limits the evaluation to those GT images (e.g. the ones a run actually saw); by
    default every GT image counts, so a missed image costs recall. `gt_format` is one of
    `GT_FORMATS`.
    """
    gt, entries, sigmas, ids, notes = _scored(gt_json, results, image_ids, gt_format)
    if not entries:
        return {name: 0.0 for name in METRICS}, notes + "no results on the evaluated images: every metric is 0\n"
    evaluator, text = _evaluated(gt, entries, sigmas, ids)
    summary = "".join(line + "\n" for line in text.splitlines() if line.lstrip().startswith("Average"))
    metrics = {name: float(value) for name, value in zip(METRICS, evaluator.stats)}
    return metrics, notes + summary


def person_oks(gt_json: Path, results: Iterable[dict[str, Any]], image_ids: Iterable[int] | None = None,
               gt_format: str = "auto") -> list[float]:
    """Per annotated person (not crowd, with keypoints), the OKS of the best-matching result (0 when
    none): a finer view than AP on small sets, where one person moves AP in large steps."""
    gt, entries, sigmas, ids, _ = _scored(gt_json, results, image_ids, gt_format)
    annotated = [a for a in gt["annotations"] if a["image_id"] in set(ids) and not a.get("iscrowd")
                 and a.get("num_keypoints", sum(v > 0 for v in a["keypoints"][2::3])) > 0]
    if not entries:
        return [0.0] * len(annotated)
    evaluator, _ = _evaluated(gt, entries, sigmas, ids)
    best = []
    for image_id in sorted({a["image_id"] for a in annotated}):
        ious = evaluator.ious.get((image_id, 1))
        gts = evaluator._gts[image_id, 1]  # pycocotools' per-image GT list, the columns of `ious`
        for column, ann in enumerate(gts):
            if ann.get("iscrowd") or ann.get("num_keypoints", 1) == 0:
                continue
            has = ious is not None and len(ious) > 0
            best.append(float(np.max(np.asarray(ious)[:, column])) if has else 0.0)
    return best


def coco_keypoint_eval(gt_json: Path, results: list[dict[str, Any]],
                       image_ids: Iterable[int] | None = None, gt_format: str = "auto") -> dict[str, float]:
    """COCO keypoint metrics of `results` against `gt_json` (see `coco_keypoint_summary`)."""
    return coco_keypoint_summary(gt_json, results, image_ids, gt_format)[0]
