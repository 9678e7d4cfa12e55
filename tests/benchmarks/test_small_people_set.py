"""The small-person dev set built from the shared data, and the benchmark's recall by height."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from posestream.benchmarks.small_people import BUCKETS, recall_by_height
from posestream.benchmarks.small_people_set import build_dev_set
from posestream.stream.mot import open_sequence, read_mot_file, score


def test_recall_by_height_matches_one_to_one() -> None:
    gt = np.array([[1, 1, 0, 0, 20, 50, 1], [1, 2, 100, 0, 40, 100, 1], [1, 3, 300, 0, 80, 200, 1],
                   [1, 4, 600, 0, 20, 50, 0],  # confidence 0: not scored
                   [2, 1, 0, 0, 20, 50, 1]], dtype=np.float64)
    found = {1: np.array([[1, 1, 20, 50], [2, 1, 20, 50], [100, 10, 40, 100], [600, 0, 20, 50]]),
             2: np.zeros((0, 4))}
    counts = recall_by_height(gt, found)
    assert counts == {"< 64 px": [1, 2], "64-128 px": [1, 1], "> 128 px": [0, 1]}
    assert [name for name, _, _ in BUCKETS] == list(counts)


@pytest.fixture(scope="module")
def dev_set(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_dev_set(tmp_path_factory.mktemp("dev"), shared)


def test_dev_set_is_two_mot_sequences_of_small_people(dev_set: dict[str, Path]) -> None:
    far, stills = open_sequence(dev_set["tud-far"]), open_sequence(dev_set["stills"])
    assert (far.length, stills.length) == (71, 13) and far.size == stills.size == (1920, 1080)
    assert not far.is_video and len(list(far.frames.iterdir())) == 71
    gt = read_mot_file(far.gt, far.length, "gt")
    assert len(gt) == 3 * 359 and len(np.unique(gt[:, 1])) == 3 * 8  # TUD-Campus three times
    assert 20 < gt[:, 5].min() and gt[:, 5].max() < 110  # 130-310 px people shrunk 3-5x
    still_gt = read_mot_file(stills.gt, stills.length, "gt")
    assert set(still_gt[:, 0].astype(int)) <= set(range(1, 14)) and (still_gt[:, 5] < 300).all()
    assert (still_gt[:, 5] < 64).sum() >= 20 and (still_gt[:, 5] > 128).sum() >= 4  # every height bucket
    assert score(far, far.gt)["IDF1"] == pytest.approx(1.0)  # its own GT is a valid MOT result


def test_dev_set_is_reused_when_complete(dev_set: dict[str, Path], shared: Path) -> None:
    stamp = (dev_set["tud-far"] / "gt.txt").stat().st_mtime_ns
    again = build_dev_set(dev_set["tud-far"].parent, shared)
    assert again == dev_set and (dev_set["tud-far"] / "gt.txt").stat().st_mtime_ns == stamp
