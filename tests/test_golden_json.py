"""`posestream run` on the 72-frame clip writes the same JSON, byte for byte, as the committed
expected file (made before the renovation of issue #11): refactors change structure, not results.
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

EXPECTED = Path(__file__).parent / "data" / "two_person_interaction_72f.alphapose.json"
VIDEO = "data/video/two_person_interaction_72f.mp4"


def _first_difference(got: bytes, want: bytes) -> str:
    """The first record that differs, as text (the whole files can be 70 kB)."""
    try:
        got_records, want_records = json.loads(got), json.loads(want)
    except ValueError as exc:
        return f"output is not JSON: {exc}"
    for i, (g, w) in enumerate(zip(got_records, want_records)):
        if g != w:
            return f"record {i} differs:\n  got:      {json.dumps(g)}\n  expected: {json.dumps(w)}"
    if len(got_records) != len(want_records):
        return f"{len(got_records)} records, expected {len(want_records)}"
    return "same records, different bytes (formatting or number printing changed)"


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
    got, want = out.read_bytes(), EXPECTED.read_bytes()
    assert got == want, _first_difference(got, want)
