"""The vectorised constant-velocity box Kalman filter."""
from __future__ import annotations

import numpy as np
import pytest

from posestream.plugins.trackers.kalman import BoxKalman, cxcywh_to_xywh, xywh_to_cxcywh


def test_box_conversions_round_trip():
    boxes = np.array([[10.0, 20.0, 30.0, 60.0], [0.0, 0.0, 1.0, 2.0]])
    np.testing.assert_allclose(xywh_to_cxcywh(boxes), [[25, 50, 30, 60], [0.5, 1, 1, 2]])
    np.testing.assert_allclose(cxcywh_to_xywh(xywh_to_cxcywh(boxes)), boxes)


def test_learns_constant_velocity_and_predicts_ahead():
    kf = BoxKalman(0.05, 0.00625)
    velocity = np.array([[8.0, -3.0, 0.5, 1.0], [0.0, 0.0, 0.0, 0.0]])
    start = np.array([[100.0, 200.0, 80.0, 200.0], [400.0, 300.0, 40.0, 100.0]])
    mean, cov = kf.initiate(start)
    for t in range(1, 30):
        mean, cov = kf.predict(mean, cov)
        mean, cov = kf.update(mean, cov, start + t * velocity)
    mean, cov = kf.predict(mean, cov)
    np.testing.assert_allclose(BoxKalman.boxes(mean), start + 30 * velocity, atol=0.5)
    # the state moves the box centre: a growing box's centre moves by half its growth as well
    centre_velocity = np.concatenate([velocity[:, :2] + velocity[:, 2:] / 2, velocity[:, 2:]], 1)
    np.testing.assert_allclose(mean[:, 4:], centre_velocity, atol=0.05)


def test_vectorised_equals_one_track_at_a_time():
    kf = BoxKalman(0.05, 0.00625)
    rng = np.random.default_rng(3)
    boxes = rng.uniform(10, 200, (5, 4))
    together = kf.initiate(boxes)
    alone = [kf.initiate(boxes[i:i + 1]) for i in range(5)]
    for _ in range(4):
        boxes = boxes + rng.normal(0, 3, boxes.shape)
        together = kf.update(*kf.predict(*together), boxes)
        alone = [kf.update(*kf.predict(*state), boxes[i:i + 1]) for i, state in enumerate(alone)]
    np.testing.assert_allclose(together[0], np.concatenate([m for m, _ in alone]))
    np.testing.assert_allclose(together[1], np.concatenate([c for _, c in alone]))


def test_update_pulls_towards_measurement_and_shrinks_uncertainty():
    kf = BoxKalman(0.05, 0.00625)
    mean, cov = kf.predict(*kf.initiate(np.array([[0.0, 0.0, 100.0, 100.0]])))
    new_mean, new_cov = kf.update(mean, cov, np.array([[20.0, 0.0, 100.0, 100.0]]))
    assert mean[0, 0] < new_mean[0, 0] < 70.0
    assert np.all(np.diagonal(new_cov[0])[:4] < np.diagonal(cov[0])[:4])
    np.testing.assert_allclose(new_cov[0], new_cov[0].T, atol=1e-9)


def test_predicted_size_never_below_one_pixel():
    kf = BoxKalman(0.05, 0.00625)
    mean, cov = kf.initiate(np.array([[0.0, 0.0, 3.0, 3.0]]))
    mean[:, 6:] = -5.0  # shrinking fast
    for _ in range(3):
        mean, cov = kf.predict(mean, cov)
    assert BoxKalman.boxes(mean)[0, 2:] == pytest.approx([1.0, 1.0])
