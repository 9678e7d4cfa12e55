"""draw_poses on real COCO / Halpe ground-truth poses: pixels where keypoints, limbs, boxes and labels
must be, none where hidden keypoints are, input untouched, one colour per track id."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from posestream.stream.core.config import shared_dir
from posestream.stream.core.errors import InputError
from posestream.stream.core.keypoints import FORMATS, get_format
from posestream.stream.render import NEUTRAL_BGR, draw_poses, track_colour
from posestream.stream.core.results import Poses

DATA = shared_dir() / "data"
GT_FILES = {"coco17": DATA / "coco" / "person_keypoints.json",
            "halpe26": DATA / "halpe" / "halpe26_keypoints.json",
            "halpe136": DATA / "halpe" / "halpe136_keypoints.json"}


def gt_poses(fmt: str, file_name: str) -> tuple[np.ndarray, Poses]:
    """The image and its annotated persons (GT visibility 1/2 -> score 1.0, 0 -> 0.0), ids 1..N."""
    gt = json.loads(GT_FILES[fmt].read_text())
    image_id = next(im["id"] for im in gt["images"] if im["file_name"] == file_name)
    anns = [a for a in gt["annotations"] if a["image_id"] == image_id and a["num_keypoints"] > 0]
    kpts = np.array([a["keypoints"] for a in anns], dtype=np.float32).reshape(len(anns), -1, 3)
    kpts[:, :, 2] = (kpts[:, :, 2] > 0).astype(np.float32)
    poses = Poses(np.array([a["bbox"] for a in anns]), np.ones(len(anns)), kpts, np.ones(len(anns)),
                  np.arange(1, len(anns) + 1), format=fmt)
    image = cv2.imread(str(DATA / "coco" / "images" / file_name))
    return image, poses


def pixel(image: np.ndarray, xy: np.ndarray) -> tuple[int, ...]:
    return tuple(int(v) for v in image[int(round(xy[1])), int(round(xy[0]))])


@pytest.mark.parametrize("fmt", ["coco17", "halpe26", "halpe136"])
def test_keypoints_and_limbs_drawn_in_track_colour(fmt: str) -> None:
    image, poses = gt_poses(fmt, "000000000785.jpg")
    blank = np.zeros_like(image)
    drawn = draw_poses(blank, poses, kpt_threshold=0.5, show_boxes=False, show_ids=False)
    colour = track_colour(1)
    kpts = poses.keypoints[0]
    visible = kpts[:, 2] > 0.5
    assert visible.sum() >= 17
    for k in np.flatnonzero(visible):
        assert pixel(drawn, kpts[k]) == colour, get_format(fmt).names[k]
    limbs = [(a, b) for a, b in get_format(fmt).skeleton if visible[a] and visible[b]]
    assert limbs
    for a, b in limbs:
        assert pixel(drawn, (kpts[a, :2] + kpts[b, :2]) / 2) == colour
    assert not blank.any(), "the input image must not be drawn on"


def test_hidden_keypoints_and_their_limbs_are_not_drawn() -> None:
    image, poses = gt_poses("coco17", "000000000785.jpg")
    poses.keypoints[0, 9, 2] = 0.2  # left wrist below threshold
    fmt = get_format("coco17")
    drawn = draw_poses(np.zeros_like(image), poses, kpt_threshold=0.3, show_boxes=False, show_ids=False)
    elbow, wrist = poses.keypoints[0, 7, :2], poses.keypoints[0, 9, :2]
    # the far end of the elbow-wrist limb: no other limb of this skier passes there
    assert pixel(drawn, elbow + 0.8 * (wrist - elbow)) == (0, 0, 0)
    assert pixel(drawn, wrist) == (0, 0, 0)
    assert (7, 9) in fmt.skeleton


def test_boxes_and_labels_follow_flags() -> None:
    image, poses = gt_poses("coco17", "000000000785.jpg")
    x, y, w, h = poses.boxes[0]
    top_middle = np.array([x + w / 2, y])
    label_spot = np.array([x + 1, y - 1])  # in the filled label above the box, below its text
    plain = draw_poses(np.zeros_like(image), poses, show_boxes=False, show_ids=False)
    full = draw_poses(np.zeros_like(image), poses, show_boxes=True, show_ids=True)
    assert pixel(plain, top_middle) == (0, 0, 0) and pixel(plain, label_spot) == (0, 0, 0)
    assert pixel(full, top_middle) == track_colour(1)
    assert pixel(full, label_spot) == track_colour(1)


def test_untracked_persons_are_neutral_and_unlabelled() -> None:
    image, poses = gt_poses("coco17", "000000196141.jpg")
    poses.ids[:] = -1
    x, y, w, h = poses.boxes[0]
    drawn = draw_poses(np.zeros_like(image), poses.select([0]), show_boxes=True, show_ids=True)
    assert pixel(drawn, np.array([x + w / 2, y])) == NEUTRAL_BGR
    assert pixel(drawn, np.array([x + 1, y - 1])) == (0, 0, 0)


def test_real_image_multi_person() -> None:
    image, poses = gt_poses("coco17", "000000196141.jpg")
    original = image.copy()
    drawn = draw_poses(image, poses)
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    np.testing.assert_array_equal(image, original)
    for i in range(len(poses)):  # each person alone: its visible keypoints carry its own colour
        alone = draw_poses(image, poses.select([i]), show_boxes=False, show_ids=False)
        for kp in poses.keypoints[i][poses.keypoints[i, :, 2] > 0]:
            assert pixel(alone, kp) == track_colour(int(poses.ids[i]))
    assert (drawn != image).any(axis=2).sum() > 2000


def test_track_colours_are_stable_and_distinct() -> None:
    colours = [track_colour(i) for i in range(1, 31)]
    assert colours == [track_colour(i) for i in range(1, 31)]
    assert len(set(colours)) == 30
    assert NEUTRAL_BGR not in colours
    assert track_colour(-1) == NEUTRAL_BGR
    # neighbouring ids differ clearly (sum of channel differences)
    assert min(sum(abs(a - b) for a, b in zip(c1, c2)) for c1, c2 in zip(colours, colours[1:])) > 150


def test_empty_poses_return_an_unchanged_copy() -> None:
    image, _ = gt_poses("coco17", "000000000036.jpg")
    drawn = draw_poses(image, Poses.empty())
    np.testing.assert_array_equal(drawn, image)
    assert drawn is not image


@pytest.mark.parametrize("image_shape, fmt_name, match", [
    ((64, 64), "coco17", "BGR image"),
    ((64, 64, 4), "coco17", "BGR image"),
    ((64, 64, 3), "halpe26", "halpe26 has 26 keypoints, poses have 17"),
])
def test_bad_input_is_one_clear_error(image_shape: tuple[int, ...], fmt_name: str, match: str) -> None:
    _, poses = gt_poses("coco17", "000000000785.jpg")
    with pytest.raises(InputError, match=match):
        draw_poses(np.zeros(image_shape, np.uint8), poses, FORMATS[fmt_name])
