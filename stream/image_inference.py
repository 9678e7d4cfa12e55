"""Pose estimation on still images: expand paths, read images, run the chain, yield results."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

from posestream.stream.chain import PoseChain
from posestream.stream.core.errors import InputError, InputNotFoundError
from posestream.stream.core.results import FrameResult
from posestream.stream.core.settings import Settings
from posestream.stream.core.images import list_images

log = logging.getLogger(__name__)

def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, directories as their images (sorted); a missing path is an error."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out.extend(list_images(path))
        elif path.is_file():
            out.append(path)
        else:
            raise InputNotFoundError(f"no such file or folder: {path}")
    return out


def read_image(path: Path) -> np.ndarray:
    """BGR uint8 image; a file that does not decode as an image is an `InputError`."""
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise InputError(f"not a readable image: {path}")
    return image


def infer_images(paths: Iterable[str | Path], settings: Settings,
                 chain: PoseChain | None = None) -> Iterator[tuple[Path, np.ndarray, FrameResult]]:
    """Yield (path, image, result) per image, in order. Images are checked before the model loads."""
    files = expand_paths(paths)
    own = chain is None
    chain = chain or PoseChain(settings)
    try:
        for index, path in enumerate(files):
            image = read_image(path)
            poses = chain.process([image])[0]
            yield path, image, FrameResult(stream=path.parent.name or "images", frame=index,
                                           width=image.shape[1], height=image.shape[0], poses=poses,
                                           image_id=path.name)
    finally:
        if own:
            chain.close()
