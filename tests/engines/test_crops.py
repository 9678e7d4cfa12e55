"""Crops: geometry of box -> region, pixels actually land where the matrices say, and the way back."""
import numpy as np
import pytest

from posestream.engines.crops import (box_to_centre_scale, crop_to_frame, frame_to_crop, warp_crops)
from posestream.stream.core.errors import InputError


@pytest.mark.parametrize("box, aspect, expand, centre, size", [
    ([10, 20, 100, 100], 0.75, 1.0, [60, 70], [100, 400 / 3]),     # square box grows in height
    ([10, 20, 300, 100], 0.75, 1.0, [160, 70], [300, 400]),        # wide box grows in height
    ([0, 0, 30, 200], 0.75, 1.25, [15, 100], [187.5, 250]),        # tall box grows in width, then 1.25x
    ([5, 5, 0, 0], 1.0, 1.0, [5, 5], [1, 1]),                       # degenerate box: at least one pixel
])
def test_box_to_centre_scale(box, aspect, expand, centre, size):
    c, s = box_to_centre_scale(np.array([box]), aspect, expand)
    np.testing.assert_allclose(c[0], centre)
    np.testing.assert_allclose(s[0], size)


def test_bad_aspect_is_an_error():
    with pytest.raises(InputError, match="positive"):
        box_to_centre_scale(np.array([[0, 0, 10, 10]]), 0.0)


def test_points_survive_the_round_trip():
    rng = np.random.default_rng(0)
    frame = np.zeros((480, 640, 3), np.uint8)
    boxes = np.array([[100, 50, 80, 200], [300.5, 200.25, 150, 90], [-20, -10, 60, 60]])
    _, matrices = warp_crops(frame, boxes, (256, 192))
    points = rng.uniform(0, 400, (3, 17, 2))
    np.testing.assert_allclose(crop_to_frame(frame_to_crop(points, matrices), matrices), points, atol=1e-9)


def test_box_maps_to_the_crop_centre_and_fills_the_expanded_region():
    frame = np.zeros((480, 640, 3), np.uint8)
    box = np.array([[200, 100, 96, 128]])  # already 3:4, so only the 1.25 expansion applies
    _, m = warp_crops(frame, box, (256, 192), expand=1.25)
    corners = frame_to_crop(np.array([[[248, 164], [200, 100], [296, 228]]]), m)[0]
    np.testing.assert_allclose(corners[0], [96, 128])  # box centre -> crop centre
    np.testing.assert_allclose(corners[1], [96 - 96 / 1.25, 128 - 128 / 1.25], atol=1e-9)
    np.testing.assert_allclose(corners[2], [96 + 96 / 1.25, 128 + 128 / 1.25], atol=1e-9)


def test_crop_pixels_come_from_where_the_matrix_says():
    """A bright 3x3 dot drawn in the frame appears in each crop at the mapped position (within the
    half-pixel of bilinear resampling), and regions outside the frame are black."""
    frame = np.full((360, 480, 3), 40, np.uint8)
    dot = np.array([210.0, 150.0])
    frame[149:152, 209:212] = (0, 255, 255)
    boxes = np.array([[150, 80, 120, 160], [180, 120, 60, 60], [400, 300, 150, 150]])
    crops, matrices = warp_crops(frame, boxes, (256, 192))
    assert crops.shape == (3, 256, 192, 3) and crops.dtype == np.uint8
    expected = frame_to_crop(np.tile(dot, (3, 1, 1)), matrices)[:, 0]
    for crop, where in zip(crops[:2], expected[:2]):
        weights = crop[..., 2].astype(np.float64) - 40
        weights[weights < 20] = 0
        ys, xs = np.mgrid[0:256, 0:192]
        found = np.array([(xs * weights).sum(), (ys * weights).sum()]) / weights.sum()
        assert np.abs(found - where).max() < 0.75
    assert crops[2, -1, -1].tolist() == [0, 0, 0]  # bottom right of the third crop is off the frame


def test_warp_rejects_non_bgr_frames():
    with pytest.raises(InputError, match=r"\[H, W, 3\]"):
        warp_crops(np.zeros((10, 10), np.uint8), np.array([[0, 0, 5, 5]]), (8, 8))
