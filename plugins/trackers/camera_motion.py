"""Camera motion between consecutive frames as one 2x3 affine, and the track state moved by it.

A panning or shaking camera moves everyone in the picture at once; a constant-velocity filter then
predicts each person where the camera no longer looks, and association breaks. As BoT-SORT does,
the global motion is estimated from sparse optical flow: corners of a small grey copy of the frame
(long side `WORK_SIDE`; the persons' boxes masked out, so walkers do not pull the estimate), tracked
into the next frame with pyramidal Lucas-Kanade, then a rotation + scale + translation fitted with
RANSAC (OpenCV). The Kalman predictions (centre, velocity, size), the last seen boxes and poses are
then moved by it. A camera found still `STILL_RUN` times in a row is checked only every
`CHECK_EVERY` frames (against the last frame it was checked on, so a pan that starts in between is
caught whole), which makes the cue nearly free on fixed cameras. Plain functions on numpy arrays
and `CameraFollower`, which keeps the reference frame.
"""
from __future__ import annotations

import cv2
import numpy as np

WORK_SIDE = 320          # long side of the grey copy the flow runs on, pixels
_MAX_CORNERS = 200
_MIN_POINTS = 12         # fewer tracked corners than this: no estimate (identity)
STILL = 0.5              # motion below this many working pixels everywhere counts as a still camera (fixed cameras: 0.13-0.15 median, 0.46 p99 on the shared clips)
STILL_RUN = 8            # after this many still estimates in a row the camera counts as fixed,
CHECK_EVERY = 5          # and is only checked every this many frames (until it moves again)


def grey_small(image: np.ndarray) -> tuple[np.ndarray, float]:
    """The frame as grey, shrunk to `WORK_SIDE` on its long side; and the factor used
    (working pixels per image pixel)."""
    factor = min(1.0, WORK_SIDE / max(image.shape[:2]))
    if factor < 1.0:
        size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    return grey, factor


def estimate(previous: np.ndarray, current: np.ndarray, boxes: np.ndarray | None = None) -> np.ndarray:
    """The 2x3 affine that maps `previous` pixels onto `current` (grey, same size); identity when
    the flow gives too little to fit. `boxes` [N, 4] (x, y, w, h, in these pixels) are left out of
    the corner search."""
    identity = np.eye(2, 3)
    if previous.shape != current.shape:
        return identity
    mask = np.full(previous.shape, 255, dtype=np.uint8)
    for x, y, w, h in np.asarray(boxes if boxes is not None else [], dtype=np.float64).reshape(-1, 4):
        mask[max(int(y), 0):max(int(y + h + 1), 0), max(int(x), 0):max(int(x + w + 1), 0)] = 0
    corners = cv2.goodFeaturesToTrack(previous, _MAX_CORNERS, 0.01, 8, mask=mask, blockSize=3)
    if corners is None or len(corners) < _MIN_POINTS:
        return identity
    moved, status, _ = cv2.calcOpticalFlowPyrLK(previous, current, corners, None,
                                                winSize=(15, 15), maxLevel=3)
    good = status.reshape(-1) == 1
    if good.sum() < _MIN_POINTS:
        return identity
    affine, _ = cv2.estimateAffinePartial2D(corners[good], moved[good], method=cv2.RANSAC,
                                            ransacReprojThreshold=1.0)
    if affine is None:
        return identity
    return affine


def rescale(affine: np.ndarray, factor: float) -> np.ndarray:
    """The affine of working pixels (`factor` per pose pixel) in pose pixels."""
    out = affine.astype(np.float64).copy()
    out[:, 2] /= factor
    return out


def is_still(affine: np.ndarray, size: float) -> bool:
    """Whether the affine moves no point of an image `size` pixels across by `STILL` or more
    (working pixels)."""
    linear = affine[:, :2] - np.eye(2)
    return float(np.abs(affine[:, 2]).max() + np.abs(linear).max() * size) < STILL


def warp_points(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Points [..., 2] moved by the affine."""
    return points @ affine[:, :2].T + affine[:, 2]


def warp_state(mean: np.ndarray, cov: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kalman states (`cx, cy, w, h` and velocities, [T, 8] and [T, 8, 8]) seen from the moved
    camera: centres moved, velocities turned and scaled, sizes scaled by the affine's scale."""
    linear = affine[:, :2]
    scale = float(np.sqrt(abs(np.linalg.det(linear))))
    transform = np.eye(8)
    transform[0:2, 0:2] = linear
    transform[4:6, 4:6] = linear
    transform[2:4, 2:4] *= scale
    transform[6:8, 6:8] *= scale
    mean = mean @ transform.T
    mean[:, :2] += affine[:, 2]
    cov = transform @ cov @ transform.T
    return mean, cov


def warp_boxes(boxes: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Boxes [N, 4] (x, y, w, h): centre moved, size scaled by the affine's scale."""
    scale = float(np.sqrt(abs(np.linalg.det(affine[:, :2]))))
    centre = warp_points(boxes[:, :2] + boxes[:, 2:] / 2, affine)
    size = boxes[:, 2:] * scale
    return np.concatenate([centre - size / 2, size], axis=1)


class CameraFollower:
    """Per stream: `motion(image, boxes)` is the camera's motion since the last frame it looked at,
    as an affine in the pixels of `image` (None: not looked at this frame, or no motion)."""

    def __init__(self) -> None:
        self._reference: np.ndarray | None = None
        self._still = 0     # still estimates in a row
        self._waited = 0    # frames not looked at since the last check

    def reset(self) -> None:
        """Forget the reference (after a gap the old picture says nothing)."""
        self._reference, self._still, self._waited = None, 0, 0

    def motion(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray | None:
        if self._reference is not None and self._still >= STILL_RUN and self._waited + 1 < CHECK_EVERY:
            self._waited += 1
            return None
        self._waited = 0
        grey, factor = grey_small(image)
        reference, self._reference = self._reference, grey
        if reference is None:
            return None
        affine = estimate(reference, grey, boxes * factor)
        if is_still(affine, max(grey.shape)):
            self._still += 1
            return None
        self._still = 0
        return rescale(affine, factor)
