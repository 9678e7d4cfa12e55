"""VideoWriter: real MP4 files written and read back with PyAV."""
from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from posestream.stream.core.config import shared_dir
from posestream.stream.core.errors import InputError
from posestream.stream.video_writer import VideoWriter, pick_codec

IMAGE = shared_dir() / "data" / "coco" / "images" / "000000000785.jpg"  # 640 x 425: odd height


def read_back(path: Path) -> tuple[str, list[np.ndarray], list[float]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        return (stream.codec_context.name, [f.to_ndarray(format="bgr24") for f in frames],
                [float(f.time) for f in frames])


def test_odd_sized_frames_are_padded_not_scaled(tmp_path: Path) -> None:
    image = cv2.imread(str(IMAGE))
    assert image.shape == (425, 640, 3)
    with VideoWriter(tmp_path / "odd.mp4", 640, 425, fps=10) as writer:
        for _ in range(3):
            writer.write(image)
    codec, frames, times = read_back(tmp_path / "odd.mp4")
    assert codec == "h264" and len(frames) == 3
    assert frames[0].shape == (426, 640, 3)
    assert cv2.PSNR(frames[0][:425], image) > 30
    assert frames[0][425].mean() < 20  # the added row is black
    assert times == pytest.approx([0.0, 0.1, 0.2], abs=1e-3)


def test_source_timestamps_are_kept(tmp_path: Path) -> None:
    image = cv2.imread(str(IMAGE))[:424]
    stamps = [100.0, 100.04, 100.2, 100.2, 101.0]  # a live source: gap, then a repeated stamp
    with VideoWriter(tmp_path / "vfr.mp4", 640, 424) as writer:
        for t in stamps:
            writer.write(image, t)
    _, frames, times = read_back(tmp_path / "vfr.mp4")
    assert len(frames) == 5
    assert times[:3] == pytest.approx([0.0, 0.04, 0.2], abs=1e-4)
    assert 0.2 < times[3] < 0.201  # nudged one tick forward, still strictly increasing
    assert times[4] == pytest.approx(1.0, abs=1e-4)


def test_close_twice_and_write_after_close(tmp_path: Path) -> None:
    writer = VideoWriter(tmp_path / "a.mp4", 64, 48)
    writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.close()
    writer.close()
    with pytest.raises(InputError, match="already closed"):
        writer.write(np.zeros((48, 64, 3), np.uint8))
    assert len(read_back(tmp_path / "a.mp4")[1]) == 1


@pytest.mark.parametrize("shape, dtype", [
    ((48, 65, 3), np.uint8), ((48, 64), np.uint8), ((48, 64, 4), np.uint8), ((48, 64, 3), np.float32),
])
def test_wrong_frame(tmp_path: Path, shape: tuple[int, ...], dtype: type) -> None:
    with VideoWriter(tmp_path / "b.mp4", 64, 48) as writer:
        with pytest.raises(InputError, match=r"64x48 BGR uint8; got a frame of shape"):
            writer.write(np.zeros(shape, dtype))


@pytest.mark.parametrize("width, height, fps, match", [
    (0, 48, 30.0, "size must be positive"),
    (64, 48, 0.0, "fps must be positive"),
])
def test_bad_settings(tmp_path: Path, width: int, height: int, fps: float, match: str) -> None:
    with pytest.raises(InputError, match=match):
        VideoWriter(tmp_path / "c.mp4", width, height, fps=fps)


def test_codec_choice() -> None:
    assert pick_codec("libx264") == "libx264"  # PyAV's wheel ships x264
    assert pick_codec("mpeg4") == "mpeg4"
    assert pick_codec("no-such-encoder") == "mpeg4"


def test_mpeg4_fallback_writes_a_readable_file(tmp_path: Path) -> None:
    image = cv2.imread(str(IMAGE))
    with VideoWriter(tmp_path / "m.mp4", 640, 425, codec="mpeg4", fps=15) as writer:
        writer.write(image)
        writer.write(image)
    codec, frames, _ = read_back(tmp_path / "m.mp4")
    assert codec == "mpeg4" and len(frames) == 2
    assert cv2.PSNR(frames[1][:425], image) > 25
