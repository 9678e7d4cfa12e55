"""`posestream image` end to end: finds the annotated people, reports bad input in one line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from posestream.stream.core.keypoints import COCO17


def _posestream(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "posestream", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


def _problems(stderr: str) -> list[str]:
    """stderr lines other than INFO progress logs: a bad input must produce exactly one."""
    return [line for line in stderr.strip().splitlines() if " INFO " not in line]


def _oks(gt: dict, keypoints: np.ndarray) -> float:
    g = np.asarray(gt["keypoints"], dtype=np.float64).reshape(-1, 3)
    visible = g[:, 2] > 0
    variances = (2 * COCO17.sigma_array) ** 2
    d2 = ((keypoints[:, :2] - g[:, :2]) ** 2).sum(axis=1)
    e = d2 / variances / (gt["area"] + np.spacing(1)) / 2
    return float(np.exp(-e[visible]).sum() / visible.sum())


@pytest.fixture(scope="module")
def coco_run(shared: Path, prepared_home: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out_dir = tmp_path_factory.mktemp("image-cli")
    result = _posestream("image", str(shared / "data/coco/images"), "--out", str(out_dir / "res.json"),
                         "--render", str(out_dir / "render"))
    assert result.returncode == 0, result.stderr
    return out_dir / "res.json", out_dir / "render"


def test_every_clearly_visible_person_is_found(shared: Path, coco_run: tuple[Path, Path]) -> None:
    gt = json.loads((shared / "data/coco/person_keypoints.json").read_text())
    names = {img["id"]: img["file_name"] for img in gt["images"]}
    results = json.loads(coco_run[0].read_text())
    by_image: dict[str, list[np.ndarray]] = {}
    for entry in results:
        by_image.setdefault(entry["image_id"], []).append(np.asarray(entry["keypoints"]).reshape(-1, 3))
    checked = 0
    for ann in gt["annotations"]:
        if ann.get("num_keypoints", 0) < 10:
            continue
        checked += 1
        best = max((_oks(ann, kp) for kp in by_image.get(names[ann["image_id"]], [])), default=0.0)
        # found = some result lies on this person (a missed one scores < 0.1 here). The hardest,
        # skier 467657 half hidden by another in 197388, scores 0.51 with FP32 and 0.48 with INT8:
        # the bound sits halfway between found and missed, not within a recalibration of it.
        assert best >= 0.3, f"GT person {ann['id']} in {names[ann['image_id']]}: best OKS {best:.2f}"
    assert checked >= 10


def test_results_are_alphapose_format_and_rendered(coco_run: tuple[Path, Path], shared: Path) -> None:
    results = json.loads(coco_run[0].read_text())
    entry = results[0]
    assert set(entry) == {"image_id", "category_id", "keypoints", "score", "box", "idx"}
    assert entry["category_id"] == 1 and len(entry["keypoints"]) == 51 and len(entry["box"]) == 4
    rendered = sorted(p.name for p in coco_run[1].iterdir())
    assert rendered == sorted(p.name for p in (shared / "data/coco/images").iterdir())


@pytest.mark.parametrize("make_input, message", [
    (lambda tmp: tmp / "missing.jpg", "no such file or folder"),
    (lambda tmp: (tmp / "notes.jpg").write_text("hello") and tmp / "notes.jpg", "not a readable image"),
    (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "no images"),
])
def test_bad_input_is_one_clear_line(tmp_path: Path, prepared_home: Path, make_input, message: str) -> None:
    result = _posestream("image", str(make_input(tmp_path)), "--out", str(tmp_path / "o.json"))
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(_problems(result.stderr)) == 1, result.stderr


def test_unreadable_model_file_is_one_clear_line(tmp_path: Path, prepared_home: Path, shared: Path) -> None:
    home = tmp_path / "home"
    source = prepared_home / "models" / "yolo11n-pose"
    (home / "models" / "yolo11n-pose").mkdir(parents=True)
    for item in source.iterdir():
        target = home / "models" / "yolo11n-pose" / item.name
        target.write_bytes(b"garbage" if item.suffix == ".onnx" else item.read_bytes())
    image = shared / "data/coco/images/000000000785.jpg"
    result = _posestream("image", str(image), "--out", str(tmp_path / "o.json"), env={"POSESTREAM_HOME": str(home)})
    assert result.returncode != 0
    assert "does not match the sha256 in its card" in result.stderr and "Traceback" not in result.stderr
    assert len(_problems(result.stderr)) == 1, result.stderr
