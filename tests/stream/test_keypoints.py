"""Keypoint formats: internally consistent, and named as the Halpe/COCO ground truth names them."""
import json

import numpy as np
import pytest

from posestream.stream.core.errors import ConfigError
from posestream.stream.core.keypoints import FORMATS, format_for_keypoints, get_format


@pytest.mark.parametrize("name, count, pairs, links", [
    ("coco17", 17, 8, 19), ("halpe26", 26, 11, 27), ("halpe136", 136, 61, 67)])
def test_format_sizes(name, count, pairs, links):
    fmt = get_format(name)
    assert (fmt.num_keypoints, len(fmt.flip_pairs), len(fmt.skeleton)) == (count, pairs, links)
    assert len(fmt.sigma_array) == count and np.all(fmt.sigma_array > 0)
    assert format_for_keypoints(count) is fmt


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=list(FORMATS))
def test_flip_index_swaps_left_and_right(fmt):
    index = fmt.flip_index()
    np.testing.assert_array_equal(index[index], np.arange(fmt.num_keypoints))  # an involution
    for i, j in enumerate(index):
        a, b = fmt.names[i], fmt.names[j]
        if a.startswith("left_"):
            assert b == "right_" + a[5:]
        elif a.startswith("right_"):
            assert b == "left_" + a[6:]
        elif not a.startswith("face-"):
            assert i == j, f"{a} is not lateral but flips to {b}"


def test_face_flip_mirrors_the_68_point_layout():
    fmt = get_format("halpe136")
    index = fmt.flip_index()
    face = {fmt.names[i]: fmt.names[index[i]] for i in range(26, 94)}
    assert face["face-0"] == "face-16" and face["face-8"] == "face-8"  # jaw line
    assert face["face-36"] == "face-45" and face["face-30"] == "face-30"  # eye corners, nose tip
    assert face["face-48"] == "face-54" and face["face-66"] == "face-66"  # mouth


def test_halpe26_names_match_the_ground_truth(shared):
    gt = json.loads((shared / "data/halpe/halpe26_keypoints.json").read_text())
    assert tuple(gt["categories"][0]["keypoints"]) == get_format("halpe26").names
    coco = json.loads((shared / "data/coco/person_keypoints.json").read_text())
    assert tuple(coco["categories"][0]["keypoints"]) == get_format("coco17").names


def test_halpe_formats_share_the_coco_body():
    coco, h26, h136 = (get_format(n) for n in ("coco17", "halpe26", "halpe136"))
    assert h26.names[:17] == coco.names and h136.names[:26] == h26.names
    assert h26.sigmas[:17] == coco.sigmas and h136.sigmas[:17] == coco.sigmas
    assert set(coco.skeleton) <= set(h26.skeleton) | {(5, 6), (11, 12), (5, 11), (6, 12)}


@pytest.mark.parametrize("call, match", [
    (lambda: get_format("mpii"), "valid: coco17, halpe26, halpe136"),
    (lambda: format_for_keypoints(14), "no keypoint format has 14"),
])
def test_unknown_format_is_one_clear_error(call, match):
    with pytest.raises(ConfigError, match=match):
        call()
