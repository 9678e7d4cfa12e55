"""Heatmap decoding (and the flip test's way back) on synthetic heatmaps whose true peaks are known
to sub-pixel precision."""
import numpy as np
import pytest

from posestream.engines.families.heatmap.decode import decode_heatmaps, heatmap_argmax
from posestream.engines.topdown_outputs import flip_back, flip_shift
from posestream.stream.core.errors import InputError
from posestream.stream.core.keypoints import COCO17


def gaussian_heatmaps(points: np.ndarray, hw=(64, 48), sigma=2.0) -> np.ndarray:
    """Heatmaps [N,K,H,W] with a unit Gaussian at each (x, y) of points [N,K,2]."""
    ys, xs = np.mgrid[0:hw[0], 0:hw[1]]
    dx = xs[None, None] - points[..., 0, None, None]
    dy = ys[None, None] - points[..., 1, None, None]
    return np.exp(-(dx ** 2 + dy ** 2) / (2 * sigma ** 2))


@pytest.fixture()
def truth() -> np.ndarray:
    """Peaks at least 4 px inside a 48x64 map: closer to the border the map truncates the Gaussian and
    DARK's modulation is biased (up to ~0.2 px at 2-3 px from the edge, measured)."""
    rng = np.random.default_rng(7)
    return np.stack([rng.uniform(4, 43, (8, 17)), rng.uniform(4, 59, (8, 17))], axis=-1)


def test_argmax_finds_integer_peak(truth):
    coords, scores = heatmap_argmax(gaussian_heatmaps(truth).astype(np.float32))
    assert np.abs(coords - truth).max() <= 0.5 + 1e-9
    assert np.all(scores > 0.88)  # a Gaussian of sigma 2 is still >0.88 half a pixel from its centre


def test_quarter_offset_beats_plain_argmax(truth):
    heatmaps = gaussian_heatmaps(truth)
    plain, _ = heatmap_argmax(heatmaps)
    shifted, _ = decode_heatmaps(heatmaps, refine="none")
    assert np.abs(shifted - truth).max() <= 0.5 + 1e-9
    assert np.abs(shifted - truth).mean() < 0.8 * np.abs(plain - truth).mean()


def test_dark_decodes_within_a_tenth_of_a_pixel(truth):
    coords, scores = decode_heatmaps(gaussian_heatmaps(truth).astype(np.float32), refine="dark")
    assert np.abs(coords - truth).max() < 0.1
    assert scores.shape == (8, 17) and np.all(scores > 0.88)


def test_dark_handles_flat_and_border_maps():
    heatmaps = np.zeros((1, 2, 64, 48))
    heatmaps[0, 1, 0, 0] = 1.0  # peak in the corner
    coords, scores = decode_heatmaps(heatmaps, refine="dark")
    assert np.all(np.isfinite(coords))
    assert scores[0, 0] == 0.0 and scores[0, 1] == 1.0
    assert np.abs(coords[0, 1]).max() <= 1.0


@pytest.mark.parametrize("call, match", [
    (lambda: decode_heatmaps(np.zeros((2, 64, 48))), "4-d"),
    (lambda: decode_heatmaps(np.zeros((1, 1, 8, 8)), refine="magic"), "unknown refinement"),
    (lambda: decode_heatmaps(np.ones((1, 1, 8, 8)), refine="dark", dark_kernel=4), "odd"),
])
def test_bad_input_is_one_clear_error(call, match):
    with pytest.raises(InputError, match=match):
        call()


def test_flip_back_realigns_mirrored_heatmaps(truth):
    """Heatmaps of a mirrored crop (stride 4, input width 192), flipped back, peak where the original
    joints are, with left/right swapped back."""
    stride, width = 4, 192
    mirrored = truth.copy()
    mirrored[..., 0] = ((width - 1) - truth[..., 0] * stride) / stride  # same joints, mirrored image
    mirrored = mirrored[:, COCO17.flip_index()]  # the model calls the mirrored left wrist "right"
    restored = flip_back(gaussian_heatmaps(mirrored), COCO17.flip_index(), flip_shift(1 / stride))
    coords, _ = decode_heatmaps(restored, refine="dark")
    assert np.abs(coords - truth).max() < 0.1


def test_flip_shift_values():
    assert flip_shift(0.25) == 0.75 and flip_shift(2.0) == -1 and flip_shift(1.0) == 0
    ramp = np.arange(6.0)[None, None]
    np.testing.assert_allclose(flip_back(ramp, np.array([0]), 0.75)[0, 0], [5, 4.75, 3.75, 2.75, 1.75, 0.75])
    np.testing.assert_allclose(flip_back(ramp, np.array([0]), -1)[0, 0], [4, 3, 2, 1, 0, 0])
