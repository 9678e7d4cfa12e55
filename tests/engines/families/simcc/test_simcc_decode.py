"""SimCC decoding on synthetic vectors whose true peaks are known to sub-pixel precision."""
import numpy as np
import pytest

from posestream.engines.families.simcc.decode import decode_simcc
from posestream.stream.core.errors import InputError


def gaussian_vectors(centres: np.ndarray, length: int, sigma: float) -> np.ndarray:
    bins = np.arange(length)
    return np.exp(-(bins[None, None] - centres[..., None]) ** 2 / (2 * sigma ** 2))


@pytest.mark.parametrize("split_ratio", [2.0, 1.5])
def test_simcc_decodes_within_a_tenth_of_a_pixel(split_ratio):
    rng = np.random.default_rng(3)
    truth = np.stack([rng.uniform(5, 187, (3, 17)), rng.uniform(5, 251, (3, 17))], axis=-1)
    simcc_x = gaussian_vectors(truth[..., 0] * split_ratio, int(192 * split_ratio), 4.9)
    simcc_y = gaussian_vectors(truth[..., 1] * split_ratio, int(256 * split_ratio), 5.66)
    coords, scores = decode_simcc(simcc_x, simcc_y, split_ratio, refine="dark")
    assert np.abs(coords - truth).max() < 0.1
    plain, _ = decode_simcc(simcc_x, simcc_y, split_ratio)
    assert np.abs(plain - truth).max() <= 0.5 / split_ratio + 1e-9
    assert np.all(scores > 0.98)


def test_simcc_score_is_the_weaker_axis():
    simcc_x = np.zeros((1, 1, 10)); simcc_x[0, 0, 4] = 0.9
    simcc_y = np.zeros((1, 1, 10)); simcc_y[0, 0, 6] = 0.3
    coords, scores = decode_simcc(simcc_x, simcc_y, 2.0)
    assert coords.tolist() == [[[2.0, 3.0]]] and scores[0, 0] == pytest.approx(0.3)


def test_bad_input_is_one_clear_error():
    with pytest.raises(InputError, match="disagree"):
        decode_simcc(np.zeros((1, 17, 8)), np.zeros((1, 16, 8)), 2.0)
