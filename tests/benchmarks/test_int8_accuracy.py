"""The INT8 benchmark's agreement measure: identical persons agree fully, a moved, lost or extra
person is counted as such, and recipes parse into `[quantize]` overrides."""
from __future__ import annotations

import numpy as np
import pytest

from posestream.benchmarks.int8_accuracy import agreement, parse_recipe
from posestream.stream.core.errors import InputError


def _persons(boxes: list[list[float]], scores: list[float], shift: float = 0.0) -> tuple:
    keypoints = np.zeros((len(boxes), 17, 3), np.float32)
    for i, (x, y, w, h) in enumerate(boxes):
        keypoints[i, :, 0] = np.linspace(x, x + w, 17) + shift
        keypoints[i, :, 1] = np.linspace(y, y + h, 17)
        keypoints[i, :, 2] = 0.9
    return np.asarray(boxes, np.float32), np.asarray(scores, np.float32), keypoints


def test_agreement_counts_moved_missed_and_extra_persons() -> None:
    truth = [_persons([[10, 10, 50, 150], [200, 20, 40, 120]], [0.9, 0.6])]
    same = agreement(truth, truth)
    assert same == {"persons": 2, "mean_oks": 1.0, "p10_oks": 1.0, "missed": 0, "extra": 0, "score_diff": 0.0}
    moved = agreement(truth, [_persons([[10, 10, 50, 150], [200, 20, 40, 120]], [0.8, 0.6], shift=4.0)])
    assert 0.5 < moved["mean_oks"] < 0.99 and moved["missed"] == 0 and moved["score_diff"] == pytest.approx(0.05)
    lost = agreement(truth, [_persons([[10, 10, 50, 150], [400, 300, 40, 120]], [0.9, 0.5])])
    assert lost["missed"] == 1 and lost["extra"] == 1 and lost["mean_oks"] == pytest.approx(0.5)


def test_recipes_parse_into_quantize_overrides() -> None:
    assert parse_recipe("v2=attention_in_float=false,mosaics=0,detector.input_size=320") == (
        "v2", ["quantize.attention_in_float=false", "quantize.mosaics=0", "detector.input_size=320"])
    with pytest.raises(InputError, match="NAME=KEY=VALUE"):
        parse_recipe("no-settings")
