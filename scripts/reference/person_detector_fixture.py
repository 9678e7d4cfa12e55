"""One-off: the MediaPipe person detector's raw outputs from the reference runtime (TensorFlow.js,
pure-JS CPU backend, run by Node: scripts/reference/tfjs_run.js) on the shared COCO images
letterboxed to 224x224 (engines.preprocess.letterbox, black padding, [-1, 1]); the 20 best-scoring
anchors' rows go to tests/data/mediapipe_person_reference.json for tests/engines/families/mediapipe_detector/test_person_detector.py.

    python scripts/reference/person_detector_fixture.py HUMAN_MODELS_DIR NODE_MODULES_PARENT
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

from posestream.engines.preprocess import letterbox
from posestream.stream.core.config import shared_dir

ROOT = Path(__file__).resolve().parents[2]


def main(models_dir: Path, node_dir: Path) -> None:
    coco = shared_dir() / "data" / "coco"
    names = sorted(p.name for p in (coco / "images").iterdir())[:4]
    inputs = [letterbox(cv2.imread(str(coco / "images" / n)), (224, 224), 0)[0][..., ::-1].astype(np.float32)
              / 127.5 - 1 for n in names]
    with tempfile.TemporaryDirectory() as tmp:
        feed, out = Path(tmp) / "in.json", Path(tmp) / "out.json"
        feed.write_text(json.dumps({"name": "input", "dtype": "float32", "shape": [1, 224, 224, 3],
                                    "cases": [x.ravel().tolist() for x in inputs]}))
        subprocess.run(["node", str(ROOT / "scripts/reference/tfjs_run.js"), str(models_dir / "models/blazepose-detector.json"),
                        str(feed), str(out)], check=True, env={**os.environ, "NODE_PATH": str(node_dir / "node_modules")})
        results = json.loads(out.read_text())
    cases = []
    for name, result in zip(names, results):
        rows = np.asarray(result[0]["values"], dtype=np.float64).reshape(-1, 13)
        best = np.argsort(-rows[:, 0])[:20]
        cases.append({"image": name, "anchors": best.tolist(), "rows": rows[best].round(5).tolist()})
    fixture = {"runtime": "@tensorflow/tfjs-core/-backend-cpu/-converter 4.22.0 (Node)",
               "input": "engines.preprocess.letterbox(BGR image, (224, 224), pad 0), RGB, x / 127.5 - 1",
               "columns": "score logit, then box cx, cy, w, h and 4 keypoints x, y (input pixels, relative to the anchor)",
               "cases": cases}
    (ROOT / "tests/data/mediapipe_person_reference.json").write_text(json.dumps(fixture, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
