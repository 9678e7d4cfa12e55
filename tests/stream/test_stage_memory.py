"""Stage processes keep the frame-sized blocks they free (`stage_runtime.keep_freed_memory`): the
source decoding the 1080p clip at 1280x720 must not fault its buffers in again on every frame."""
from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from posestream.stream.stage_runtime import keep_freed_memory

DECODE = r"""
import json, resource, sys
from posestream.stream.core.config import load_config
from posestream.stream.sources import open_source
from posestream.stream.stage_runtime import keep_freed_memory
applied = keep_freed_memory() if sys.argv[2] == "keep" else None
frames = 0
with open_source(sys.argv[1], load_config()) as source:
    source.scale_down_to(1280)
    for frame in source.frames():
        frames += 1
        if frames == 10:  # past the decoder's and the scaler's first allocations
            start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(json.dumps({"applied": applied, "frames": frames,
                  "faults_per_frame": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / (frames - 10)}))
"""


def _decode(clip: Path, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", DECODE, str(clip), mode], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_keep_freed_memory_takes_effect_on_glibc() -> None:
    assert keep_freed_memory() is (platform.libc_ver()[0] == "glibc")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_source_at_1280_does_not_fault_its_frames_in_again(shared: Path) -> None:
    clip = shared / "data" / "video" / "two_person_interaction_72f.mp4"  # 1920x1080
    kept, default = _decode(clip, "keep"), _decode(clip, "default")
    assert kept["applied"] is True and kept["frames"] == 72
    pages_per_frame = 1280 * 720 * 3 / 4096  # 675: one frame's buffer faulted in whole
    assert kept["faults_per_frame"] < 0.1 * pages_per_frame, (kept, default)
