"""COCO keypoint evaluation against the shared GT: perfect results score 1, noisier results less;
CrowdPose and PoseTrack GT on the joints they share with COCO-17."""
import json

import numpy as np
import pytest

from posestream.stream.core.errors import InputError, InputNotFoundError
from posestream.stream.core.keypoints import COCO17
from posestream.stream.evaluation import (CROWDPOSE_NAMES, METRICS, POSETRACK_NAMES, coco_keypoint_eval,
                                          coco_keypoint_summary, detect_gt_format, load_ground_truth)


def results_from_gt(path, jitter=0.0, seed=0, by_name=False):
    """One result per annotated person: the GT keypoints (plus Gaussian noise on x, y), score 1."""
    gt = json.loads(path.read_text())
    names = {i["id"]: i["file_name"] for i in gt["images"]}
    rng = np.random.default_rng(seed)
    out = []
    for ann in gt["annotations"]:
        if ann.get("num_keypoints", 0) == 0:
            continue
        kp = np.array(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
        kp[:, :2] += rng.normal(0, jitter, kp[:, :2].shape)
        kp[:, 2] = 1.0
        out.append({"image_id": names[ann["image_id"]] if by_name else ann["image_id"],
                    "category_id": 1, "keypoints": kp.ravel().tolist(), "score": 1.0})
    return out


@pytest.fixture(scope="module")
def coco_gt(shared):
    return shared / "data/coco/person_keypoints.json"


def test_perfect_results_score_one(coco_gt):
    metrics, summary = coco_keypoint_summary(coco_gt, results_from_gt(coco_gt))
    assert set(metrics) == set(METRICS)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AR"] == pytest.approx(1.0)
    assert metrics["AP50"] == pytest.approx(1.0) and metrics["APl"] == pytest.approx(1.0)
    lines = summary.splitlines()
    assert len(lines) == 10 and lines[0].startswith(" Average Precision  (AP) @[ IoU=0.50:0.95")


def test_noise_lowers_ap_monotonically(coco_gt):
    aps = [coco_keypoint_eval(coco_gt, results_from_gt(coco_gt, jitter))["AP"] for jitter in (0, 3, 8, 20)]
    assert aps[0] == pytest.approx(1.0)
    assert aps[0] > aps[1] > aps[2] > aps[3]
    assert aps[3] < 0.3


def test_file_names_work_as_image_ids(coco_gt):
    a = coco_keypoint_eval(coco_gt, results_from_gt(coco_gt, 5.0, by_name=True))
    b = coco_keypoint_eval(coco_gt, results_from_gt(coco_gt, 5.0))
    assert a == b


def test_missing_images_cost_recall_unless_excluded(coco_gt):
    only_skiers = [r for r in results_from_gt(coco_gt) if r["image_id"] == 197388]
    everything = coco_keypoint_eval(coco_gt, only_skiers)
    assert everything["AR"] == pytest.approx(5 / 19, abs=0.01)
    assert coco_keypoint_eval(coco_gt, only_skiers, image_ids=[197388])["AP"] == pytest.approx(1.0)


def test_halpe_gt_uses_halpe_sigmas(shared):
    """26 keypoints per person: pycocotools' built-in 17 COCO sigmas would not even broadcast."""
    gt = shared / "data/halpe/halpe26_keypoints.json"
    assert coco_keypoint_eval(gt, results_from_gt(gt))["AP"] == pytest.approx(1.0)
    assert coco_keypoint_eval(gt, results_from_gt(gt, 6.0))["AP"] < 0.95


def test_no_results_is_zero(coco_gt):
    metrics, summary = coco_keypoint_summary(coco_gt, [])
    assert all(v == 0.0 for v in metrics.values()) and "no results" in summary


@pytest.mark.parametrize("make, error, match", [
    (lambda r: [dict(r[0], image_id=123)], InputError, "image_id 123 is not an image"),
    (lambda r: [dict(r[0], image_id="nope.jpg")], InputError, "'nope.jpg' is not an image"),
    (lambda r: [dict(r[0], keypoints=r[0]["keypoints"][:-3])], InputError, "expected 51 keypoint values"),
])
def test_bad_results_are_one_clear_error(coco_gt, make, error, match):
    with pytest.raises(error, match=match):
        coco_keypoint_eval(coco_gt, make(results_from_gt(coco_gt)))


def test_bad_ground_truth(tmp_path):
    with pytest.raises(InputNotFoundError):
        coco_keypoint_eval(tmp_path / "missing.json", [])
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(InputError, match="not COCO JSON"):
        coco_keypoint_eval(tmp_path / "list.json", [])


# --- CrowdPose and PoseTrack18 GT: scored on the joints they share with COCO-17 -------------------

def as_coco17(path, layout, jitter=0.0, seed=0):
    """The GT persons of a CrowdPose/PoseTrack file as COCO-17 results (what the models predict): the
    shared joints copied (plus noise), every other COCO point at (0, 0)."""
    names = COCO17.names
    out = []
    for result in results_from_gt(path, jitter, seed):
        points = np.asarray(result["keypoints"]).reshape(-1, 3)
        coco = np.zeros((17, 3))
        for index, name in enumerate(layout):
            if name in names:
                coco[names.index(name)] = points[index]
        out.append(dict(result, keypoints=coco.ravel().tolist()))
    return out


@pytest.fixture(scope="module")
def crowdpose_gt(shared):
    return shared / "data/crowdpose/crowdpose_keypoints.json"


@pytest.fixture(scope="module")
def posetrack_gt(shared):
    return shared / "data/posetrack/posetrack18_val_subset.json"


def test_formats_are_detected_from_keypoint_names(shared, coco_gt, crowdpose_gt, posetrack_gt):
    found = {path.parent.name + "/" + path.name: detect_gt_format(load_ground_truth(path))
             for path in (coco_gt, crowdpose_gt, posetrack_gt, shared / "data/halpe/halpe26_keypoints.json",
                          shared / "data/halpe/halpe136_keypoints.json")}
    assert found == {"coco/person_keypoints.json": "coco", "crowdpose/crowdpose_keypoints.json": "crowdpose",
                     "posetrack/posetrack18_val_subset.json": "posetrack",
                     "halpe/halpe26_keypoints.json": "coco", "halpe/halpe136_keypoints.json": "coco"}


def test_crowdpose_scored_on_the_12_body_joints(crowdpose_gt):
    metrics, summary = coco_keypoint_summary(crowdpose_gt, as_coco17(crowdpose_gt, CROWDPOSE_NAMES))
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AR"] == pytest.approx(1.0)
    assert "crowdpose ground truth, coco17 results: scored on the 12 joints both have (left_shoulder," in summary
    assert "5 of 5 annotations have no area: 0.53 x box area used" in summary
    noisy = [coco_keypoint_eval(crowdpose_gt, as_coco17(crowdpose_gt, CROWDPOSE_NAMES, j))["AP"] for j in (4, 12)]
    assert 1.0 > noisy[0] > noisy[1]


def test_crowdpose_head_and_neck_do_not_count(crowdpose_gt):
    """Moving the COCO eyes and ears (PoseTrack/CrowdPose have no such points) changes nothing."""
    results = as_coco17(crowdpose_gt, CROWDPOSE_NAMES, 3.0)
    moved = [dict(r, keypoints=[v + 500 if i < 15 else v for i, v in enumerate(r["keypoints"])]) for r in results]
    assert coco_keypoint_eval(crowdpose_gt, moved) == coco_keypoint_eval(crowdpose_gt, results)


def test_posetrack_scored_on_nose_and_body(posetrack_gt):
    results = as_coco17(posetrack_gt, POSETRACK_NAMES)
    metrics, summary = coco_keypoint_summary(posetrack_gt, results)
    assert metrics["AP"] == pytest.approx(1.0)
    assert "scored on the 13 joints both have (nose, left_shoulder," in summary
    assert "14 of 14 annotations have no area" in summary


def test_posetrack_people_in_ignore_regions_are_left_out(posetrack_gt):
    """A confident extra person in the plaza's ignore region (bottom left spectators) is not a false
    positive; the same person on the open floor (right of the dancers) is."""
    results = as_coco17(posetrack_gt, POSETRACK_NAMES)
    plaza = 10128340000
    def extra(x, y):
        points = np.array([[x + dx, y + dy, 1.0] for dx, dy in
                           [(0, 0)] * 5 + [(-20, 40), (20, 40), (-25, 80), (25, 80), (-25, 120), (25, 120),
                                          (-15, 130), (15, 130), (-15, 190), (15, 190), (-15, 250), (15, 250)]])
        return {"image_id": plaza, "keypoints": points.ravel().tolist(), "score": 2.0}
    inside, summary = coco_keypoint_summary(posetrack_gt, results + [extra(300, 780)])
    assert inside["AP"] == pytest.approx(1.0) and "1 predicted person(s) in ignore regions" in summary
    outside, summary = coco_keypoint_summary(posetrack_gt, results + [extra(1200, 480)])
    assert outside["AP"] < 0.99 and "0 predicted person(s) in ignore regions" in summary


def test_coco17_results_on_halpe_gt_use_the_17_shared_joints(shared, coco_gt):
    """COCO-17 results on Halpe-26/136 GT of the same images: the shared body joints, Halpe's sigmas."""
    results = [r for r in results_from_gt(coco_gt, 2.0) if r["image_id"] in {785, 40083, 196141, 197388}]
    for name in ("halpe26", "halpe136"):
        metrics, summary = coco_keypoint_summary(shared / f"data/halpe/{name}_keypoints.json", results)
        assert f"{name} ground truth, coco17 results: scored on the 17 joints both have" in summary
        assert 0.8 < metrics["AP"] <= 1.0


@pytest.mark.parametrize("edit, gt_format, match", [
    (lambda gt: gt["categories"][0].update(keypoints=[f"p{i}" for i in range(17)]), "auto",
     r"17 keypoints per person \(named p0, p1, .*not COCO-17, Halpe-26/136, CrowdPose-14 or PoseTrack18-17"),
    (lambda gt: [a.update(keypoints=a["keypoints"][:-3]) for a in gt["annotations"]], "auto",
     "16 keypoints per person"),
    (lambda gt: None, "crowdpose", "17 keypoints per person, not the 14 of format crowdpose"),
    (lambda gt: None, "mpii", "unknown ground-truth format 'mpii'"),
    (lambda gt: gt["annotations"][0].pop("bbox"), "auto", "annotation 0 is not a posetrack person"),
    (lambda gt: gt["annotations"][2].update(keypoints=[1, 2, 3]), "auto", "annotation 2 is not a posetrack person"),
    (lambda gt: gt.update(annotations=[1, 2]), "auto", "annotations must be a list of objects with image_id"),
    (lambda gt: gt["images"][1].pop("file_name"), "auto", "images must be a list of objects with id, file_name"),
    (lambda gt: gt.update(categories=[]), "auto", "categories must be a non-empty list of objects"),
])
def test_unknown_or_malformed_gt_is_one_clear_error(posetrack_gt, tmp_path, edit, gt_format, match):
    gt = json.loads(posetrack_gt.read_text())
    if edit is not None:
        edit(gt)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    with pytest.raises(InputError, match=match):
        coco_keypoint_eval(path, as_coco17(posetrack_gt, POSETRACK_NAMES), gt_format=gt_format)


def test_explicit_format_overrides_names(posetrack_gt, tmp_path):
    """A PoseTrack file whose category names are lost is read as COCO by default, as PoseTrack on request."""
    gt = json.loads(posetrack_gt.read_text())
    gt["categories"][0]["keypoints"] = []
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    assert detect_gt_format(gt) == "coco"
    results = as_coco17(posetrack_gt, POSETRACK_NAMES)
    assert coco_keypoint_eval(path, results, gt_format="posetrack")["AP"] == pytest.approx(1.0)
