"""The built-in demo clip: a slow pan and zoom across a photo of a person, written as H.264 MP4.

The photo is `skimage/data/astronaut.png` from the scikit-image wheel (a dependency, so nothing is
downloaded at run time): astronaut Eileen Collins, a NASA portrait that scikit-image documents as
"No known copyright restrictions, released into the public domain". The camera motion gives the
detector and tracker a moving, growing person to follow, which a still photo would not.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np

from posestream.stream.core.errors import InputError, InputNotFoundError
from posestream.stream.video_writer import VideoWriter

BACKGROUND_BGR = (48, 48, 48)
# Camera path in photo pixels (the photo is 512 x 512): the point kept at the frame position below,
# and the photo's height as a fraction of the frame's height, at the start and at the end.
_ANCHOR = (240.0, 230.0)  # between the face and the shoulders
_START = {"x": 0.32, "y": 0.5, "zoom": 1.0}  # frame fractions / photo height over frame height
_END = {"x": 0.66, "y": 0.56, "zoom": 1.45}


def demo_photo() -> np.ndarray:
    """The astronaut photo (BGR), read from scikit-image's installed package data. The package is
    located without importing it: only the file is needed, not scikit-image's code."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise InputNotFoundError("the demo photo comes from scikit-image, which is not installed; "
                                 "run: pip install scikit-image")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "astronaut.png"
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputNotFoundError(f"demo photo missing or unreadable: {path}")
    return image


def _ease(t: float) -> float:
    """Smoothstep: the camera starts and stops gently instead of jerking."""
    return t * t * (3.0 - 2.0 * t)


def demo_frames(seconds: float, fps: int, size: tuple[int, int]) -> list[np.ndarray]:
    """The clip's frames, BGR, `size` = (width, height)."""
    width, height = size
    photo = demo_photo()
    count = round(seconds * fps)
    frames = []
    for i in range(count):
        t = _ease(i / max(1, count - 1))
        zoom = _START["zoom"] + t * (_END["zoom"] - _START["zoom"])
        scale = zoom * height / photo.shape[0]
        cx = (_START["x"] + t * (_END["x"] - _START["x"])) * width
        cy = (_START["y"] + t * (_END["y"] - _START["y"])) * height
        matrix = np.array([[scale, 0.0, cx - scale * _ANCHOR[0]],
                           [0.0, scale, cy - scale * _ANCHOR[1]]])
        frames.append(cv2.warpAffine(photo, matrix, (width, height), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_CONSTANT, borderValue=BACKGROUND_BGR))
    return frames


def make_demo_clip(path: Path, seconds: float = 4.0, fps: int = 15,
                   size: tuple[int, int] = (640, 360)) -> Path:
    """Write the demo clip to `path` (H.264 MP4; MPEG-4 if PyAV lacks x264) and return `path`."""
    if seconds <= 0 or fps <= 0 or min(size) < 16:
        raise InputError(f"demo clip needs seconds > 0, fps > 0 and sides >= 16 px; got seconds={seconds}, "
                         f"fps={fps}, size={size}")
    path = Path(path)
    with VideoWriter(path, size[0], size[1], fps=fps) as writer:
        for frame in demo_frames(seconds, fps, size):
            writer.write(frame)
    return path


def calibration_frames(count: int) -> list[np.ndarray]:
    """`count` frames of the built-in clip (1280x720, 10 fps): part of the default INT8 calibration
    data (`posestream models prepare|quantize` and the INT8 accuracy benchmark pass them on)."""
    return demo_frames(seconds=count / 10.0, fps=10, size=(1280, 720))
