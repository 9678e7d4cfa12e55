"""COCO keypoint evaluation against the shared GT: perfect results score 1, noisier results less."""
import json

import numpy as np
import pytest

from posestream.stream.core.errors import InputError, InputNotFoundError
from posestream.stream.evaluation import METRICS, coco_keypoint_eval, coco_keypoint_summary


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
