"""The reference comparison itself: it forgives last-digit differences and nothing else."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from reference import Tolerance, first_output_difference, first_result_difference

EXPECTED = json.loads((Path(__file__).parent / "data" / "two_person_interaction_72f.alphapose.json").read_text())
WIRE = [{"v": 2, "type": "frame", "stream": "cam", "frame": 3, "pts": 0.1, "capture_ts": 5.0,
         "publish_ts": 5.1, "width": 640, "height": 480, "format": "coco17",
         "persons": [{"id": 7, "box": [10.0, 20.0, 30.0, 60.0], "box_score": 0.9, "score": 0.8,
                      "keypoints": [[12.5, 22.25, 0.75]] * 17}]}]


def _changed(records: list, path: tuple, value: object) -> list:
    out = copy.deepcopy(records)
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value(target[path[-1]]) if callable(value) else value
    return out


def test_identical_and_last_digit_differences_agree() -> None:
    assert first_result_difference(EXPECTED, copy.deepcopy(EXPECTED)) is None
    # 0.82372 vs 0.82373 (the AMD/Intel case) and a coordinate off by 0.01 px
    assert first_result_difference(_changed(EXPECTED, (11, "keypoints", 2), lambda s: s + 1e-5),
                                   EXPECTED) is None
    assert first_result_difference(_changed(EXPECTED, (0, "box", 0), lambda x: x + 0.01), EXPECTED) is None
    assert first_result_difference(_changed(WIRE, (0, "publish_ts"), 99.0), WIRE) is None  # wall clock


@pytest.mark.parametrize(("path", "value", "names"), [
    ((11, "keypoints", 2), lambda s: s + 2e-4, "results[11].keypoints[0].score"),
    ((5, "keypoints", 4), lambda y: y + 0.06, "results[5].keypoints[1].y"),
    ((0, "box", 3), lambda h: h - 0.1, "results[0].box[3]"),
    ((0, "score"), lambda s: s - 0.001, "results[0].score"),
    ((3, "idx"), 99, "results[3].idx"),
    ((2, "image_id"), "9.jpg", "results[2].image_id"),
])
def test_a_real_difference_is_named_with_both_values(path: tuple, value: object, names: str) -> None:
    got = _changed(EXPECTED, path, value)
    problem = first_result_difference(got, EXPECTED)
    assert problem is not None and problem.startswith(names), problem
    assert "expected" in problem


def test_order_count_and_wire_fields() -> None:
    swapped = copy.deepcopy(EXPECTED)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    assert first_result_difference(swapped, EXPECTED) is not None  # order is part of the result
    assert "records, expected" in first_result_difference(EXPECTED[:-1], EXPECTED)
    assert first_result_difference(_changed(WIRE, (0, "persons", 0, "id"), 8), WIRE).startswith(
        "results[0].persons[0].id")
    moved = _changed(WIRE, (0, "persons", 0, "keypoints"), [[12.5, 22.4, 0.75]] + [[12.5, 22.25, 0.75]] * 16)
    assert first_result_difference(moved, WIRE).startswith("results[0].persons[0].keypoints[0].y")
    loose = Tolerance(xy=1.0, score=0.1)
    assert first_result_difference(moved, WIRE, loose) is None


def test_raw_outputs_by_channel_group() -> None:
    want = np.zeros((1, 56, 10), np.float32)
    got = want.copy()
    got[0, 7, 3] = 0.04  # a coordinate within 0.05
    channels = {"coordinates": ([0, 1, 2, 3, 5, 6], 0.05), "scores": ([4, 7], 1e-3)}
    problem = first_output_difference(got, want, channels)
    assert problem is not None and problem.startswith("scores") and "(0, 1, 3)" in problem
    got[0, 7, 3] = 0.0005
    assert first_output_difference(got, want, channels) is None
    got[0, 1, 9] = np.nan
    assert first_output_difference(got, want, channels).startswith("coordinates")
