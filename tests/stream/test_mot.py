"""MOTChallenge sequences and their TrackEval scores (`posestream.stream.mot`), on the shared TUD-Campus
sequence and on small sequences made from its real frames and ground truth."""
from __future__ import annotations

import shutil
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from posestream.stream.core.errors import InputError, InputNotFoundError
from posestream.stream.mot import (format_scores, frame_number, gt_rules, open_sequence, read_mot_file,
                                   rows_from_alphapose, score, write_mot_file)


@pytest.fixture(scope="module")
def tud(shared: Path) -> Path:
    return shared / "data/mot/TUD-Campus"


def _copy_sequence(tud: Path, folder: Path, *, video: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(tud / "seqinfo.ini", folder)
    shutil.copy(tud / "gt.txt", folder)
    if video:
        shutil.copy(tud / "TUD-Campus.mp4", folder)
    return folder


def test_the_shared_sequence(tud: Path) -> None:
    sequence = open_sequence(tud)
    assert (sequence.name, sequence.length, sequence.rules) == ("TUD-Campus", 71, "MOT15")
    assert sequence.is_video and sequence.frames.name == "TUD-Campus.mp4"
    assert sequence.size == (640, 480) and sequence.frame_rate == 25.0
    rows = read_mot_file(sequence.gt, sequence.length, "ground truth")
    assert rows.shape == (359, 10) and len(np.unique(rows[:, 1])) == 8


def test_img1_layout_with_gt_folder(tud: Path, tmp_path: Path) -> None:
    """MOTChallenge's own layout: gt/gt.txt and img1/000001.jpg ... (here the video's first frames)."""
    folder = tmp_path / "TUD-img1"
    _copy_sequence(tud, folder, video=False)
    (folder / "gt").mkdir()
    shutil.move(folder / "gt.txt", folder / "gt" / "gt.txt")
    (folder / "img1").mkdir()
    with av.open(str(tud / "TUD-Campus.mp4")) as container:
        for index, frame in enumerate(container.decode(video=0)):
            cv2.imwrite(str(folder / "img1" / f"{index + 1:06d}.jpg"), frame.to_ndarray(format="bgr24"))
            if index == 2:
                break
    sequence = open_sequence(folder)
    assert sequence.frames == folder / "img1" and not sequence.is_video
    assert sequence.gt == folder / "gt" / "gt.txt"
    assert frame_number("000003.jpg", is_video=False) == 3
    assert frame_number("0.jpg", is_video=True) == 1  # video frame N is MOT frame N + 1


@pytest.mark.parametrize("damage, message", [
    ("no_ini", "seqinfo.ini is missing"),
    ("no_length", "seqinfo.ini has no \\[Sequence\\] seqLength"),
    ("no_gt", "ground truth is missing \\(neither gt/gt.txt nor gt.txt\\)"),
    ("no_frames", "frames are missing: no img1/ folder and not exactly one video file"),
    ("two_videos", "found TUD-Campus.mp4, copy.mp4"),
    ("unnumbered", "img1/ images must be named by frame number"),
    ("empty_img1", "img1/ holds no images"),
    ("frame_zero", "line 1: frame 0 is not in 1..71"),
    ("short_rows", "line 2: 5 columns, expected 10 like line 1"),
    ("words", "line 1: not numbers"),
])
def test_bad_sequence_folders_are_one_line(tud: Path, tmp_path: Path, damage: str, message: str) -> None:
    folder = _copy_sequence(tud, tmp_path / "seq")
    if damage == "no_ini":
        (folder / "seqinfo.ini").unlink()
    elif damage == "no_length":
        (folder / "seqinfo.ini").write_text("[Sequence]\nname=x\n")
    elif damage == "no_gt":
        (folder / "gt.txt").unlink()
    elif damage == "no_frames":
        (folder / "TUD-Campus.mp4").unlink()
    elif damage == "two_videos":
        shutil.copy(folder / "TUD-Campus.mp4", folder / "copy.mp4")
    elif damage in ("unnumbered", "empty_img1"):
        (folder / "img1").mkdir()
        if damage == "unnumbered":
            cv2.imwrite(str(folder / "img1" / "first.jpg"), np.zeros((8, 8, 3), np.uint8))
    elif damage == "frame_zero":
        (folder / "gt.txt").write_text("0,1,1,1,5,5,1,-1,-1,-1\n")
    elif damage == "short_rows":
        (folder / "gt.txt").write_text("1,1,1,1,5,5,1,-1,-1,-1\n1,2,3,4,5\n")
    elif damage == "words":
        (folder / "gt.txt").write_text("frame,id,x,y,w,h,conf\n")
    with pytest.raises((InputError, InputNotFoundError), match=message) as info:
        open_sequence(folder)
    assert "\n" not in str(info.value)


def test_missing_folder() -> None:
    with pytest.raises(InputNotFoundError, match="MOT sequence folder not found"):
        open_sequence("/nonexistent/seq")


def test_ground_truth_scores_perfectly(tud: Path) -> None:
    scores = score(open_sequence(tud), tud / "gt.txt")
    for key in ("MOTA", "IDF1", "HOTA", "recall", "precision"):
        assert scores[key] == pytest.approx(1.0)
    assert (scores["id_switches"], scores["ids"], scores["gt_ids"], scores["gt_boxes"]) == (0, 8, 8, 359)
    assert any(line.startswith("MOTA") and line.endswith("1.000") for line in format_scores(scores))


def test_swapped_ids_and_missing_frames_are_counted(tud: Path, tmp_path: Path) -> None:
    """Two people's ids (4 and 5, in every frame) swapped from frame 36 on: 2 ID switches, IDF1 below 1; frames 61..71 missing:
    their boxes are false negatives."""
    sequence = open_sequence(tud)
    rows = read_mot_file(sequence.gt, sequence.length, "gt")
    later = rows[:, 0] >= 36
    one, two = later & (rows[:, 1] == 4), later & (rows[:, 1] == 5)
    rows[one, 1], rows[two, 1] = 5, 4
    kept = rows[rows[:, 0] <= 60]
    results = tmp_path / "results.txt"
    write_mot_file(results, kept)
    scores = score(sequence, results)
    missing = len(rows) - len(kept)
    assert scores["id_switches"] == 2
    assert scores["fn"] == missing and scores["fp"] == 0
    assert scores["recall"] == pytest.approx(len(kept) / len(rows))
    assert scores["MOTA"] == pytest.approx(1 - (missing + 2) / len(rows))
    assert 0.6 < scores["IDF1"] < 0.95 and scores["HOTA"] < 0.95


def test_mot17_rules_ignore_distractors_and_zero_conf(tud: Path, tmp_path: Path) -> None:
    """A GT with class ids: a conf-0 pedestrian is not scored, and a result on a distractor (class 8)
    is removed rather than counted as a false positive."""
    folder = _copy_sequence(tud, tmp_path / "MOT17-like")
    gt = ["1,1,10,10,50,120,1,1,1.0", "1,2,200,10,50,120,0,1,1.0", "1,3,400,10,50,120,1,8,1.0",
          "2,1,12,10,50,120,1,1,1.0"]
    (folder / "gt.txt").write_text("\n".join(gt) + "\n")
    sequence = open_sequence(folder)
    assert sequence.rules == "MOT17"
    results = tmp_path / "results.txt"
    results.write_text("1,7,10,10,50,120,0.9,-1,-1,-1\n1,8,400,10,50,120,0.8,-1,-1,-1\n"
                       "2,7,12,10,50,120,0.9,-1,-1,-1\n")
    scores = score(sequence, results)
    assert (scores["gt_boxes"], scores["tp"], scores["fp"], scores["fn"]) == (2, 2, 0, 0)
    assert gt_rules(np.array([[1, 1, 0, 0, 5, 5, 1, -1, -1, -1]])) == "MOT15"


def test_results_trackeval_refuses_are_one_error(tud: Path, tmp_path: Path) -> None:
    results = tmp_path / "results.txt"
    results.write_text("1,1,2,3,4,5,1,-1,-1,-1\n1,1,9,9,4,5,1,-1,-1,-1\n")
    with pytest.raises(InputError, match="TrackEval refused .*same ID more than once"):
        score(open_sequence(tud), results)
    results.write_text("72,1,2,3,4,5,1,-1,-1,-1\n")
    with pytest.raises(InputError, match="frame 72 is not in 1..71"):
        score(open_sequence(tud), results)


def test_rows_from_alphapose_entries() -> None:
    entries = [{"image_id": "0.jpg", "box": [1, 2, 3, 4], "score": 0.9, "idx": 5},
               {"image_id": "0.jpg", "box": [9, 9, 3, 4], "score": 0.2, "idx": None},
               {"image_id": "70.jpg", "box": [1, 2, 3, 4], "score": 0.8, "idx": 5},
               {"image_id": "71.jpg", "box": [1, 2, 3, 4], "score": 0.8, "idx": 5}]
    rows, untracked, beyond = rows_from_alphapose(entries, is_video=True, length=71)
    assert (untracked, beyond) == (1, 1)
    np.testing.assert_allclose(rows, [[1, 5, 1, 2, 3, 4, 0.9, -1, -1, -1], [71, 5, 1, 2, 3, 4, 0.8, -1, -1, -1]])
