"""Calibration images of the INT8 model: the default set a fresh machine can make without a model hub,
and a user's own footage.

The default set (`default_calibration`): Ultralytics' sample photos `bus.jpg` and `zidane.jpg`, read
from the `ultralytics` wheel that pip downloads from PyPI (AGPL-3.0 like the weights; the package is
never installed or imported), plus frames of the built-in demo clip; each also mirrored; plus
mosaics of them (small, crowded people) and lighting variants (`varied`), because the INT8 model
calibrated without small people lowered their scores (docs/benchmarks.md). Users pass their own
images or video (`posestream models quantize --calibration`), which fits their cameras better.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from posestream.engines.preprocess import canvas_size, letterbox, to_input
from posestream.engines.wheels import fetch_wheel
from posestream.stream.core.config import home_dir
from posestream.stream.core.errors import InputError, InputNotFoundError
from posestream.stream.core.images import VIDEO_SUFFIXES, list_images
from posestream.stream.core.settings import Settings


# frames of the built-in demo clip, given by the caller (the clip is the runtime's, a layer above):
# `frames(count)` -> BGR images
DemoFrames = Callable[[int], list[np.ndarray]]


def _read_zip_image(archive: zipfile.ZipFile, member: str) -> np.ndarray:
    try:
        data = np.frombuffer(archive.read(member), np.uint8)
    except KeyError:
        raise InputError(f"{archive.filename} does not contain {member}") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"{member} in {archive.filename} is not a readable image")
    return image


def default_calibration(config: Settings, demo: DemoFrames | None = None) -> tuple[list[np.ndarray], str]:
    """Ultralytics' sample photos from its PyPI wheel plus demo-clip frames, each also mirrored, plus
    the mosaics and lighting variants `varied` makes of them (`[quantize] mosaics`, `lighting`).
    (Random crops of the photos were tried as extra samples in recipe v2 and measured worse.)"""
    cfg = config.quantize
    wheel = fetch_wheel(cfg.assets_wheel, home_dir(config) / "downloads")
    with zipfile.ZipFile(wheel) as archive:
        photos = [_read_zip_image(archive, member) for member in cfg.assets]
    clip = demo(cfg.demo_frames) if demo is not None and cfg.demo_frames else []
    base = photos + clip
    extra = varied(base, cfg.mosaics, cfg.lighting)
    names = ", ".join(Path(m).name for m in cfg.assets)
    source = f"{cfg.assets_wheel} ({names}) + {len(clip)} demo-clip frames, mirrored"
    if extra:
        source += f", + {len(extra)} made from them ({cfg.mosaics} mosaics" + (", lighting)" if cfg.lighting else ")")
    return base + [cv2.flip(image, 1) for image in base] + extra, source


def mosaic(images: list[np.ndarray], tiles: int, size: tuple[int, int] = (720, 1280), pad: int = 114) -> np.ndarray:
    """`tiles` x `tiles` images, each shrunk into its cell (aspect kept) of a `size` frame: people at
    1/`tiles` of their size, side by side, as a crowded scene or a far camera shows them."""
    height, width = size[0] // tiles, size[1] // tiles
    canvas = np.full((size[0], size[1], 3), pad, np.uint8)
    for k in range(tiles * tiles):
        image = images[k % len(images)]
        scale = min(height / image.shape[0], width / image.shape[1])
        small = cv2.resize(image, (max(1, int(image.shape[1] * scale)), max(1, int(image.shape[0] * scale))),
                           interpolation=cv2.INTER_AREA)
        y, x = (k // tiles) * height, (k % tiles) * width
        canvas[y:y + small.shape[0], x:x + small.shape[1]] = small
    return canvas


def _gamma(image: np.ndarray, gamma: float) -> np.ndarray:
    table = (255.0 * (np.arange(256) / 255.0) ** gamma).clip(0, 255).astype(np.uint8)
    return cv2.LUT(image, table)


def varied(images: list[np.ndarray], mosaics: int, lighting: bool) -> list[np.ndarray]:
    """Extra calibration images made from `images` (deterministic): `mosaics` tilings (half of
    them 2x2, half 3x3) of shuffled images for small and crowded people, and with `lighting` a
    darker and a brighter version (gamma 2 / 0.5) of every third image and a grey one of every fifth,
    for dim scenes, over-exposure and monochrome cameras."""
    rng = np.random.default_rng(0)
    extra = []
    for k in range(mosaics):
        tiles = 2 if k < (mosaics + 1) // 2 else 3
        order = rng.permutation(len(images))
        extra.append(mosaic([images[i] for i in np.resize(order, tiles * tiles)], tiles))
    if lighting:
        extra += [_gamma(image, gamma) for image, gamma in zip(images[::3], [0.5, 2.0] * len(images))]
        extra += [cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR) for image in images[1::5]]
    return extra


def video_frames(path: Path, picks: list[int]) -> list[np.ndarray]:
    """The frames of a video at the indices `picks` (decoded in one pass; indices past the end are
    left out)."""
    import av

    wanted = set(picks)
    frames: dict[int, np.ndarray] = {}
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"video {path} has no video stream")
            for index, frame in enumerate(container.decode(video=0)):
                if index in wanted:
                    frames[index] = frame.to_ndarray(format="bgr24")
                if index >= max(wanted, default=-1):
                    break
    except av.FFmpegError as exc:
        raise InputError(f"video {path} cannot be read: {exc}") from None
    return [frames[i] for i in picks if i in frames]


def _frame_count(path: Path) -> int:
    """Frames of a video: from its header, else by counting packets (no decoding)."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"calibration video {path} has no video stream")
            stream = container.streams.video[0]
            return stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
    except av.FFmpegError as exc:
        raise InputError(f"calibration video {path} cannot be read: {exc}") from None


def spread_frames(path: Path, count: int) -> list[np.ndarray]:
    """`count` frames spread evenly over a video."""
    total = _frame_count(path)
    if total == 0:
        raise InputError(f"calibration video {path} has no frames")
    picks = np.unique(np.linspace(0, total - 1, min(count, total)).round().astype(int))
    return video_frames(path, [int(i) for i in picks])


def user_calibration(path: Path, count: int) -> tuple[list[np.ndarray], str]:
    """Images of a folder (sorted, the first `count`) or `count` frames spread over a video."""
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"calibration data not found: {path}")
    if path.is_dir():
        files = list_images(path)[:count]
        images = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in files]
        unreadable = [p.name for p, image in zip(files, images) if image is None]
        if unreadable:
            raise InputError(f"calibration images not readable: {', '.join(unreadable[:5])}")
        return images, f"{path} ({len(images)} images)"
    if path.suffix.lower() in VIDEO_SUFFIXES:
        frames = spread_frames(path, count)
        return frames, f"{path} ({len(frames)} frames)"
    raise InputError(f"calibration data must be a folder of images or a video file, got {path}")


def network_inputs(images: list[np.ndarray], long_side: int, pad: int = 114) -> list[np.ndarray]:
    """Each image letterboxed as the detector feeds it (the frame's aspect, `long_side` pixels)."""
    return [to_input([letterbox(image, canvas_size(*image.shape[:2], long_side), pad)[0]])
            for image in images]
