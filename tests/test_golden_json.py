"""`posestream run` on the 72-frame clip writes the same results as the committed expected file
(made before the renovation of issue #11): refactors change structure, not results. Compared by
value (`reference.assert_same_results`: same frames, persons, order and track ids; coordinates
within 0.05 px, scores within 1e-4), not by bytes: the last digits move with the CPU's instruction
set (a keypoint score printed 0.82373 on one CPU is 0.82372 on another).
The backend is pinned, because the default backend is chosen by speed and may change, and so is
full-size decoding (`source.scale_in_decoder`, a speed setting made after the file: its results are
compared with full-size decoding's in tests/stream/test_scale_in_decoder.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reference import assert_same_results

EXPECTED = Path(__file__).parent / "data" / "two_person_interaction_72f.alphapose.json"
VIDEO = "data/video/two_person_interaction_72f.mp4"


@pytest.mark.slow
def test_run_writes_the_expected_json(prepared_home: Path, shared: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    env = dict(os.environ, POSESTREAM_HOME=str(prepared_home))
    done = subprocess.run(
        [sys.executable, "-m", "posestream", "run", "--quiet", "--source", str(shared / VIDEO),
         "--sink", f"json:{out}", "--set", "engine.backend=onnxruntime",
         "--set", "source.scale_in_decoder=false"],
        capture_output=True, text=True, env=env, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_results(json.loads(out.read_text()), json.loads(EXPECTED.read_text()))
