"""OksByteTracker on real footage: the default YOLO11n-pose chain (detect + pose NMS, in one process,
frame by frame) feeds the tracker, as the track stage sees it in the pipeline."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from plugins.contracts import IdAllocator
from plugins.trackers.oks_byte import OksByteTracker
from stream.chain import PoseChain
from stream.config import load_config
from stream.results import Poses


def track(frames, chain_overrides: dict) -> list[Poses]:
    config = load_config(overrides={"detector.threads": 2, **chain_overrides})
    tracker = OksByteTracker(config, IdAllocator())
    with PoseChain(config) as chain:
        return [tracker.update(chain.process([frame])[0]) for frame in frames]


def centres(poses: Poses) -> np.ndarray:
    return poses.boxes[:, :2] + poses.boxes[:, 2:] / 2


@pytest.fixture(scope="module")
def hug(prepared_home: Path, shared: Path) -> list[Poses]:
    """two_person_interaction_72f.mp4: two men walk up to each other and hug (1920x1080, 72 frames).
    Detector input 320 keeps the test to seconds; the men are 600+ px tall, ~180 px at that size."""
    with av.open(str(shared / "data/video/two_person_interaction_72f.mp4")) as container:
        frames = [frame.to_ndarray(format="bgr24") for frame in container.decode(video=0)]
    assert len(frames) == 72
    return track(frames, {"detector.input_size": 320})


@pytest.fixture(scope="module")
def soccer(prepared_home: Path, shared: Path) -> list[Poses]:
    """PoseTrack 000001_mpiinew_test, 10 frames at 1280x720: white #3 running on the left, a blue
    player hurdling a sliding tackle (the detector first sees the two as one box, then apart), and
    the goalkeeper entering on the right from frame 4. Default detector input (640)."""
    paths = sorted((shared / "data/posetrack/sequences/000001_mpiinew_test").glob("*.jpg"))
    assert len(paths) == 10
    return track([cv2.imread(str(p)) for p in paths], {})


def confirmed_ids(frames: list[Poses]) -> set[int]:
    return {int(i) for poses in frames for i in poses.ids if i >= 0}


def test_hug_has_at_most_three_ids(hug):
    # Bound 3: two people are in view the whole clip, so a perfect tracker mints exactly 2 ids.
    # Ids are never reused, so each identity lost in the hug's full occlusion would add one; we
    # tolerate one such break, not a stream of fresh ids.
    assert 2 <= len(confirmed_ids(hug)) <= 3
    for poses in hug:  # an id is never on two persons of one frame
        ids = poses.ids[poses.ids >= 0]
        assert len(ids) == len(set(ids.tolist()))


def test_hug_shows_two_persistent_ids_in_most_frames(hug):
    counts = Counter(int(i) for poses in hug for i in poses.ids if i >= 0)
    (first, n_first), (second, n_second) = counts.most_common(2)
    # min_hits = 3: the first two frames are unconfirmed; "most" = at least 90 % of the frames.
    assert n_first >= 0.9 * len(hug) and n_second >= 0.9 * len(hug)
    # The men never pass each other: whoever starts on the left stays left of the other (through
    # the hug), so the two ids never swapped.
    order = [np.sign(centres(p)[p.ids == first][0, 0] - centres(p)[p.ids == second][0, 0])
             for p in hug if first in p.ids and second in p.ids]
    assert len(set(order)) == 1


def test_soccer_players_keep_their_ids(soccer):
    # White #3 is the leftmost person in every frame; from frame 2 (min_hits = 3) he has one id.
    leftmost = [int(p.ids[np.argmin(centres(p)[:, 0])]) for p in soccer]
    assert leftmost[:2] == [-1, -1]
    assert len(set(leftmost[2:])) == 1 and leftmost[2] >= 0
    # The tackle: at frame 2 the blue player and the sliding player are one detection, the other
    # person in the frame; its id must stay with the blue player through the split, in every frame.
    tackle = [int(i) for i in soccer[2].ids if i not in (-1, leftmost[2])]
    assert len(tackle) == 1
    blue = tackle[0]
    assert all(np.count_nonzero(p.ids == blue) == 1 for p in soccer[2:])
    # At frame 9 the blue player stands at about (515, 383); the slider lies at about (576, 501)
    # (box centres read off the frame by eye).
    at_nine = centres(soccer[9])[soccer[9].ids == blue][0]
    assert np.hypot(*(at_nine - (515, 383))) < 40
    # The goalkeeper (right half) gets his own id once confirmed and keeps it.
    keeper = [int(p.ids[np.argmax(centres(p)[:, 0])]) for p in soccer[7:]]
    assert all(c[0] > 1000 for p in soccer[7:] for c in centres(p)[[np.argmax(centres(p)[:, 0])]])
    assert len(set(keeper)) == 1 and keeper[0] not in (-1, blue, leftmost[2])
    # Four people appear (three players and the keeper); the slider is detected with a pose score
    # >= new_track_score only in the last frame, so it is still unconfirmed.
    assert confirmed_ids(soccer) == {leftmost[2], blue, keeper[0]}
