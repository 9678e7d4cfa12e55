"""The one image lister: which files are images, and a folder's images in a reproducible order;
and the one set of video-file suffixes.

Image-folder sources, `posestream image`, INT8 calibration (`engines.quantize`) and TensorRT's
calibration set (`engines.backends.tensorrt_build`) all list images here, with one set of suffixes;
calibration data and MOT sequences (`stream.mot`) tell a video file by `VIDEO_SUFFIXES`.
"""
from __future__ import annotations

from pathlib import Path

from posestream.stream.core.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts")


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: Path) -> list[Path]:
    """The folder's image files (not recursive), sorted by name so runs are reproducible; none is an
    `InputError`."""
    paths = sorted(p for p in folder.iterdir() if p.is_file() and is_image_path(p))
    if not paths:
        raise InputError(f"image folder {folder} has no images ({', '.join(IMAGE_SUFFIXES)})")
    return paths
