"""Draw poses on a frame: boxes, skeletons in any registered keypoint format, and track ids.

Each track keeps one colour for its whole life (derived from its id, not from its position in the
frame), so a viewer can follow a person and spot an id switch. Untracked persons (id -1) share a
neutral grey.
"""
from __future__ import annotations

import colorsys

import cv2
import numpy as np

from posestream.stream.core.errors import InputError
from posestream.stream.core.keypoints import KeypointFormat, get_format
from posestream.stream.core.results import Poses

NEUTRAL_BGR = (200, 200, 200)
_GOLDEN_RATIO = 0.6180339887498949


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A bright BGR colour for `track_id`; consecutive ids land far apart on the hue circle."""
    if track_id < 0:
        return NEUTRAL_BGR
    hue = (track_id * _GOLDEN_RATIO) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


def draw_poses(image_bgr: np.ndarray, poses: Poses, fmt: KeypointFormat | None = None, *,
               kpt_threshold: float = 0.3, show_boxes: bool = True, show_ids: bool = True) -> np.ndarray:
    """A copy of `image_bgr` with `poses` drawn on it (the input is left untouched: it may be a view
    into the shared frame ring that other stages still read). `fmt` defaults to `poses.format`.
    Keypoints scoring below `kpt_threshold` are hidden, and so is every limb that touches one."""
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise InputError(f"draw_poses: expected a BGR image [H, W, 3], got shape {list(image_bgr.shape)}")
    fmt = fmt or get_format(poses.format)
    if len(poses) and poses.keypoints.shape[1] != fmt.num_keypoints:
        raise InputError(f"draw_poses: format {fmt.name} has {fmt.num_keypoints} keypoints, poses have "
                         f"{poses.keypoints.shape[1]}")
    canvas = image_bgr.copy()
    scale = max(1, round(min(canvas.shape[:2]) / 360))  # line widths grow with the frame
    for i in range(len(poses)):
        colour = track_colour(int(poses.ids[i]))
        if show_boxes:
            x, y, w, h = poses.boxes[i]
            cv2.rectangle(canvas, (round(x), round(y)), (round(x + w), round(y + h)), colour, scale)
        _draw_skeleton(canvas, poses.keypoints[i], fmt, colour, kpt_threshold, scale)
        if show_ids and poses.ids[i] >= 0:
            _draw_label(canvas, str(int(poses.ids[i])), poses.boxes[i], colour, scale)
    return canvas


def _draw_skeleton(canvas: np.ndarray, keypoints: np.ndarray, fmt: KeypointFormat,
                   colour: tuple[int, int, int], threshold: float, scale: int) -> None:
    visible = keypoints[:, 2] >= threshold
    points = np.round(keypoints[:, :2]).astype(np.int32)
    fine = np.asarray(fmt.sigmas) < 0.02  # face and finger points (Halpe-136) are drawn thin
    for a, b in fmt.skeleton:
        if visible[a] and visible[b]:
            cv2.line(canvas, tuple(map(int, points[a])), tuple(map(int, points[b])), colour,
                     scale + 2 if fine[a] and fine[b] else 2 * scale + 1, cv2.LINE_AA)
    for k in np.flatnonzero(visible):
        centre = tuple(map(int, points[k]))
        cv2.circle(canvas, centre, scale if fine[k] else 2 * scale + 1, colour, -1, cv2.LINE_AA)


def _draw_label(canvas: np.ndarray, text: str, box: np.ndarray, colour: tuple[int, int, int],
                scale: int) -> None:
    font_scale = 0.5 * scale
    (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, scale)
    x = int(np.clip(round(box[0]), 0, max(0, canvas.shape[1] - tw - 4)))
    y = int(round(box[1]))
    top = y - th - baseline - 4 if y - th - baseline - 4 >= 0 else y  # inside the box at the top edge
    cv2.rectangle(canvas, (x, top), (x + tw + 4, top + th + baseline + 4), colour, -1)
    cv2.putText(canvas, text, (x + 2, top + th + 2), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0),
                scale, cv2.LINE_AA)
