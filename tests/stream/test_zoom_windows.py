"""Zoom-window geometry, mosaics and merging (`stream.zoom_windows`): plain numpy, no model."""
from __future__ import annotations

import numpy as np
import pytest

from posestream.stream.core.results import Poses
from posestream.stream.zoom_windows import (MOSAIC_GAP, MOSAIC_PAD, build_mosaic, canvas_hw, cover,
                                            from_mosaic, inside_fraction, merge, mosaic_slots, scan_grid,
                                            used_height, window_size)


def _poses(boxes: list[list[float]], scores: list[float], k: int = 2) -> Poses:
    boxes_a = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    centres = boxes_a[:, :2] + boxes_a[:, 2:] / 2
    keypoints = np.repeat(np.concatenate([centres, np.ones((len(boxes_a), 1))], axis=1)[:, None], k, axis=1)
    return Poses(boxes_a, scores, keypoints, scores)


@pytest.mark.parametrize("frame_hw, long_side, rectangular, expected", [
    ((1080, 1920), 640, True, (384, 640)),
    ((720, 1280), 640, True, (384, 640)),
    ((1920, 1080), 640, True, (640, 384)),
    ((1080, 1920), 640, False, (640, 640)),
    ((2000, 1), 640, True, (640, 32)),  # a 1-pixel-wide stream: at least one stride
])
def test_canvas_size(frame_hw, long_side, rectangular, expected) -> None:
    assert canvas_hw(frame_hw, long_side, rectangular) == expected


def test_mosaic_slots_tile_the_mosaic_with_gaps() -> None:
    slots = mosaic_slots((384, 640), 2, 2)
    assert slots.tolist() == [[0, 0, 312, 184], [328, 0, 312, 184], [0, 200, 312, 184], [328, 200, 312, 184]]
    assert slots[1, 0] - (slots[0, 0] + slots[0, 2]) == MOSAIC_GAP
    assert (slots[:, 0] + slots[:, 2]).max() <= 640 and (slots[:, 1] + slots[:, 3]).max() <= 384
    assert mosaic_slots((384, 640), 1, 1).tolist() == [[0, 0, 640, 384]]
    wide = mosaic_slots((384, 640), 3, 2)
    assert wide[:, 2].tolist() == [202] * 6 and wide[:, 3].tolist() == [184] * 6
    assert [used_height(wide, n, 384) for n in (0, 1, 3, 4, 6)] == [32, 192, 192, 384, 384]


def test_window_size_is_the_slot_over_the_scale_within_the_frame() -> None:
    assert window_size((312, 184), 1.0, (720, 1280)) == (312, 184)
    assert window_size((312, 184), 2 / 3, (1080, 1920)) == pytest.approx((468, 276))
    assert window_size((312, 184), 1.0, (2000, 1)) == (1, 184)  # never wider than the frame


@pytest.mark.parametrize("frame_hw, window_wh", [((720, 1280), (312, 184)), ((1080, 1920), (468, 276)),
                                                  ((100, 100), (100, 100)), ((2000, 1), (1, 184))])
def test_scan_grid_covers_the_frame_with_overlap(frame_hw, window_wh) -> None:
    overlap = 0.25 * min(window_wh)
    grid = scan_grid(frame_hw, window_wh, overlap)
    height, width = frame_hw
    assert (grid[:, 0] >= 0).all() and (grid[:, 0] + grid[:, 2] <= width + 1e-6).all()
    assert (grid[:, 1] >= 0).all() and (grid[:, 1] + grid[:, 3] <= height + 1e-6).all()
    mask = np.zeros((height, width), dtype=bool)  # every pixel lies in some window
    for x, y, w, h in grid:
        mask[int(y):int(np.ceil(y + h)), int(x):int(np.ceil(x + w))] = True
    assert mask.all()
    xs = np.unique(grid[:, 0])
    if len(xs) > 1:  # neighbours overlap by at least `overlap`
        assert (xs[:-1] + window_wh[0] - xs[1:] >= overlap - 1e-6).all()


def test_cover_places_windows_on_the_best_boxes_first() -> None:
    boxes = np.array([[100, 100, 20, 50], [120, 110, 20, 50], [1000, 600, 20, 50], [5, 5, 20, 50]])
    scores = np.array([0.9, 0.3, 0.5, 0.2])
    windows = cover(boxes, scores, (312, 184), (720, 1280), limit=8)
    # best first; boxes 1 and 3 fit in one window with box 0, centred on the three, moved into the frame
    np.testing.assert_allclose(windows, [[0, 0, 312, 184], [854, 533, 312, 184]])
    smaller = cover(boxes, scores, (100, 60), (720, 1280), limit=8)  # only boxes 0 and 1 fit together
    np.testing.assert_allclose(smaller, [[70, 100, 100, 60], [960, 595, 100, 60], [0, 0, 100, 60]])
    assert cover(boxes, scores, (312, 184), (720, 1280), limit=1).shape == (1, 4)
    assert cover(np.zeros((0, 4)), np.zeros(0), (312, 184), (720, 1280), limit=4).shape == (0, 4)


def test_mosaic_round_trip_maps_persons_back_to_the_frame() -> None:
    """A person drawn in a frame, packed at scale 2 into slot 1: found there, it comes back at its place."""
    frame = np.zeros((720, 1280, 3), dtype=np.uint8)
    windows = np.array([[0, 0, 156, 92], [400, 300, 156, 92]], dtype=np.float64)
    slots = mosaic_slots((384, 640), 2, 2)
    mosaic, placements = build_mosaic(frame, windows, slots, 2.0, (384, 640))
    assert mosaic.shape == (384, 640, 3) and (mosaic[:, 312:328] == MOSAIC_PAD).all()  # the gap
    assert placements[1].window == (400, 300, 556, 392) and placements[1].scale_x == 2.0
    # in slot 1 (x from 328): a person at window (420, 320, 20, 40) appears at (328 + 40, 0 + 40, 40, 80)
    found = _poses([[368, 40, 40, 80], [0, 0, 20, 30], [625, 150, 20, 30]], [0.9, 0.8, 0.7])
    mapped, whole = from_mosaic(found, placements, (720, 1280))
    np.testing.assert_allclose(mapped.boxes[0], [420, 320, 20, 40])
    np.testing.assert_allclose(mapped.keypoints[0, :, :2], [[430, 340]] * 2)
    assert whole.tolist() == [True, True, False]  # window 0 sits at the frame corner; the last is cut
    np.testing.assert_allclose(mapped.boxes[2], [400 + (625 - 328) / 2, 300 + 75, 10, 15])


def test_person_cut_by_an_inner_window_side_is_not_whole() -> None:
    frame = np.zeros((720, 1280, 3), dtype=np.uint8)
    slots = mosaic_slots((384, 640), 2, 2)
    _, placements = build_mosaic(frame, np.array([[400, 300, 312, 184]]), slots, 1.0, (384, 640))
    found = _poses([[0, 50, 30, 60], [100, 50, 30, 60], [290, 100, 22, 60], [100, 500, 5, 5]], [0.9] * 4)
    mapped, whole = from_mosaic(found, placements, (720, 1280))
    assert whole.tolist() == [False, True, False]  # left and right sides are inside the frame
    assert len(mapped) == 3  # the last lies in no slot


def test_empty_mosaic_and_tiny_frames() -> None:
    slots = mosaic_slots((640, 32), 2, 2)
    frame = np.full((2000, 1, 3), 200, dtype=np.uint8)  # a 1-pixel-wide stream
    windows = scan_grid((2000, 1), window_size((int(slots[0, 2]), int(slots[0, 3])), 0.64, (2000, 1)), 20.0)
    mosaic, placements = build_mosaic(frame, windows[:4], slots, 0.64, (640, 32))
    assert mosaic.shape == (640, 32, 3) and len(placements) == 4
    mapped, whole = from_mosaic(Poses.empty(), placements, (2000, 1))
    assert len(mapped) == 0 and whole.shape == (0,)


def test_inside_fraction() -> None:
    share = inside_fraction(np.array([[0, 0, 10, 10], [5, 5, 10, 10], [0, 0, 0, 5]]), np.array([[0, 0, 10, 20]]))
    np.testing.assert_allclose(share[:, 0], [1.0, 0.5, 0.0])
    assert inside_fraction(np.zeros((2, 4)), np.zeros((0, 4))).shape == (2, 0)


def test_merge_keeps_the_best_of_each_person() -> None:
    full = _poses([[100, 100, 20, 50], [500, 100, 200, 400]], [0.3, 0.9])
    window = _poses([[101, 101, 20, 49], [800, 100, 20, 50]], [0.6, 0.4])
    merged = merge([full, window], iou_threshold=0.6, max_persons=100)
    np.testing.assert_allclose(merged.box_scores, [0.9, 0.6, 0.4])
    assert len(merge([full, window], 0.6, max_persons=2)) == 2
    assert len(merge([Poses.empty(), Poses.empty()], 0.6, 100)) == 0
