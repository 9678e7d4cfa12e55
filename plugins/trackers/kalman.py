"""A constant-velocity Kalman filter on box centre and size, vectorised over tracks.

State per track: `cx, cy, w, h, vcx, vcy, vw, vh`; measurement: `cx, cy, w, h`. Noise scales with the
box's width and height, so a far (small) person and a near (large) one are equally easy to follow.
All methods take and return stacked arrays (`mean [T, 8]`, `cov [T, 8, 8]`), so one call predicts or
corrects every track at once instead of looping over per-track objects.
"""
from __future__ import annotations

import numpy as np

_DIM = 4
_TRANSITION = np.eye(2 * _DIM)
_TRANSITION[:_DIM, _DIM:] = np.eye(_DIM)  # position += velocity, one frame per step


def xywh_to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2] + boxes[:, 2:] / 2, boxes[:, 2:]], axis=1)


def cxcywh_to_xywh(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, 2:]], axis=1)


class BoxKalman:
    """Constant-velocity model; `position_std` and `velocity_std` are fractions of the box size
    (one standard deviation of the measurement/position noise and of the per-frame velocity noise)."""

    def __init__(self, position_std: float, velocity_std: float) -> None:
        self.position_std = position_std
        self.velocity_std = velocity_std

    def _size(self, mean: np.ndarray) -> np.ndarray:
        """[T, 4] = (w, h, w, h), kept positive so noise never collapses to zero."""
        wh = np.maximum(mean[:, 2:4], 1.0)
        return np.concatenate([wh, wh], axis=1)

    def initiate(self, boxes_xywh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """New tracks at the measured boxes, at rest, with a wide velocity uncertainty."""
        measured = xywh_to_cxcywh(boxes_xywh)
        mean = np.concatenate([measured, np.zeros_like(measured)], axis=1)
        size = self._size(mean)
        std = np.concatenate([2 * self.position_std * size, 10 * self.velocity_std * size], axis=1)
        cov = np.zeros((len(mean), 2 * _DIM, 2 * _DIM))
        diagonal = np.arange(2 * _DIM)
        cov[:, diagonal, diagonal] = std ** 2
        return mean, cov

    def predict(self, mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One frame ahead for every track."""
        size = self._size(mean)
        noise = np.concatenate([self.position_std * size, self.velocity_std * size], axis=1) ** 2
        mean = mean @ _TRANSITION.T
        cov = _TRANSITION @ cov @ _TRANSITION.T
        diagonal = np.arange(2 * _DIM)
        cov[:, diagonal, diagonal] += noise
        return mean, cov

    def update(self, mean: np.ndarray, cov: np.ndarray, boxes_xywh: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """Correct each track with its measured box (rows of `boxes_xywh` pair with rows of `mean`)."""
        measured = xywh_to_cxcywh(boxes_xywh)
        size = self._size(mean)
        innovation_cov = cov[:, :_DIM, :_DIM].copy()
        diagonal = np.arange(_DIM)
        innovation_cov[:, diagonal, diagonal] += (self.position_std * size) ** 2
        # gain = P H^T S^-1; with H = [I 0] and S, P symmetric this is solve(S, H P) transposed.
        gain = np.linalg.solve(innovation_cov, cov[:, :_DIM, :]).transpose(0, 2, 1)
        mean = mean + (gain @ (measured - mean[:, :_DIM])[:, :, None])[:, :, 0]
        cov = cov - gain @ cov[:, :_DIM, :]
        return mean, cov

    @staticmethod
    def boxes(mean: np.ndarray) -> np.ndarray:
        """The state's boxes as `[T, 4]` x, y, w, h (size clamped to at least one pixel)."""
        state = mean[:, :_DIM].copy()
        state[:, 2:] = np.maximum(state[:, 2:], 1.0)
        return cxcywh_to_xywh(state)
