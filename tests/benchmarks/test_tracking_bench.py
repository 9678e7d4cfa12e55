"""The tracking benchmark's own parts: the panning copy of a MOT sequence (its GT moves with the
picture), the no-GT identity counts, and one posestream row on TUD-Campus scored by TrackEval."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from posestream.benchmarks import tracking
from posestream.stream.core.config import load_config
from posestream.stream.core.errors import InputNotFoundError
from posestream.stream.mot import open_sequence, read_mot_file

TUD = "data/mot/TUD-Campus"


def test_identity_without_gt_counts_ids_fragments_and_coverage() -> None:
    def frames(lines: list[list[int]]):
        for index, ids in enumerate(lines):
            yield index, np.array(ids), np.zeros((len(ids), 4))

    # id 1 in all 4 frames, id 2 in frames 0 and 2 (one fragment), id 3 once, -1 never counts
    result = tracking.identity_without_gt(frames([[1, 2], [1, -1], [1, 2], [1, 3]]), people=2)
    assert result == {"ids": 3, "fragments": 1, "coverage": (4 + 2) / 8, "people": 2}


def test_panning_copy_moves_the_gt_with_the_picture(shared: Path, tmp_path: Path) -> None:
    import cv2

    original = open_sequence(shared / TUD)
    pan = open_sequence(tracking.panning_copy(shared / TUD, tmp_path / "pan"))
    assert pan.length == original.length and pan.rules == "MOT15" and not pan.is_video
    gt = read_mot_file(original.gt, original.length, "gt")
    moved = read_mot_file(pan.gt, pan.length, "gt")
    # frame 1: the window is at the top-left corner, so boxes are only scaled by the zoom 1.25
    first, first_moved = gt[gt[:, 0] == 1], moved[moved[:, 0] == 1]
    inside = ((first[:, 2] + first[:, 4]) * 1.25 <= 640) & ((first[:, 3] + first[:, 5]) * 1.25 <= 480)
    assert inside.sum() >= 2  # boxes the window does not cut
    kept = {int(i): row for i, row in zip(first_moved[:, 1], first_moved)}
    for row in first[inside]:
        np.testing.assert_allclose(kept[int(row[1])][2:6], row[2:6] * 1.25, atol=0.1)
    # and the picture moved with them: a frame-1 pixel of the copy is the original's at 1/1.25
    video = tracking.read_frames(tracking.Clip("TUD-Campus", shared / TUD, mot=True))[0]
    copy = cv2.imread(str(pan.frames / "000001.jpg"))
    patch = copy[200:260, 200:260].astype(float)
    source = cv2.resize(video[160:208, 160:208], (60, 60), interpolation=cv2.INTER_LINEAR)
    assert np.abs(patch - source).mean() < 12.0


@pytest.mark.slow
def test_posestream_row_on_tud_campus(prepared_home: Path, shared: Path, tmp_path: Path) -> None:
    """The default tracker on the default chain's detections: scores in the range measured (MOTA
    0.730, IDF1 0.724 with the INT8 default), the same as `posestream eval --mot` gives."""
    clip = tracking.Clip("TUD-Campus", shared / TUD, mot=True)
    rows = tracking.run([clip], [640], {"posestream": {}}, peer=False, cache=tmp_path)
    (row,) = rows
    assert 0.6 < row["MOTA"] < 0.9 and 0.6 < row["IDF1"] < 0.9 and row["gt_ids"] == 8
    assert len(row["timelines"]) == 8
    assert len(list(tmp_path.glob("TUD-Campus-640-*.npz"))) == 1  # the detections, cached


def test_cached_detections_are_keyed_by_the_model_files(prepared_home: Path, shared: Path, tmp_path: Path) -> None:
    """A rebuilt INT8 model (another recipe, another CPU: same settings, other bytes) must not be
    served the old model's cached detections: the key follows the card's file digests."""
    home = tmp_path / "home"
    shutil.copytree(prepared_home / "models" / "yolo11n-pose", home / "models" / "yolo11n-pose", symlinks=True)
    config = load_config(overrides={"paths.home": str(home)})
    clip = tracking.Clip("TUD-Campus", shared / TUD, mot=True)
    key = tracking.detections_key(clip, config)
    assert tracking.detections_key(clip, config) == key
    card_file = home / "models" / "yolo11n-pose" / "model.json"
    card = json.loads(card_file.read_text())
    card["extra"]["int8"]["sha256"] = "0" * 64  # as a rebuild would change it
    card_file.write_text(json.dumps(card))
    assert tracking.detections_key(clip, config) != key


def test_own_clips_are_named_with_their_people(shared: Path) -> None:
    video = shared / "data/video/street_walk_5f.mp4"
    clip = tracking.own_clip(f"street={video}:1")
    assert clip == tracking.Clip("street", video, people=1)
    for bad in ("street", f"street={video}", f"street={video}:one", f"={video}:1"):
        with pytest.raises(SystemExit, match="NAME=PATH:PEOPLE"):
            tracking.own_clip(bad)
    with pytest.raises(InputNotFoundError, match="not found"):
        tracking.own_clip("gone=/nonexistent/clip.mp4:2")
