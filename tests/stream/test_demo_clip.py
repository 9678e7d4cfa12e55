"""The demo clip: real H.264 MP4 made from scikit-image's astronaut photo, read back with PyAV."""
from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from posestream.stream.demo_clip import demo_frames, demo_photo, make_demo_clip
from posestream.stream.core.errors import InputError


def test_photo_is_the_shipped_astronaut() -> None:
    photo = demo_photo()
    assert photo.shape == (512, 512, 3)
    # orange suit in the lower left, BGR: red channel dominant
    b, g, r = photo[400:440, 60:120].reshape(-1, 3).mean(axis=0)
    assert r > 150 and r > g + 40 and r > b + 60


def test_clip_has_expected_frames_size_and_codec(tmp_path: Path) -> None:
    path = make_demo_clip(tmp_path / "demo.mp4", seconds=2.0, fps=10, size=(320, 180))
    assert path == tmp_path / "demo.mp4"
    expected = demo_frames(2.0, 10, (320, 180))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.codec_context.width, stream.codec_context.height) == (320, 180)
        decoded = [(f.to_ndarray(format="bgr24"), float(f.time)) for f in container.decode(stream)]
    assert len(decoded) == 20
    assert [t for _, t in decoded] == pytest.approx([i / 10 for i in range(20)], abs=1e-3)
    for (image, _), original in zip(decoded, expected):
        assert image.shape == (180, 320, 3)
        assert cv2.PSNR(image, original) > 30  # the encoded clip shows what was drawn


def test_camera_moves_and_zooms() -> None:
    frames = demo_frames(1.0, 8, (320, 180))
    assert len(frames) == 8
    for a, b in zip(frames, frames[1:]):
        assert np.abs(a.astype(int) - b.astype(int)).mean() > 1.0  # every frame differs: a moving camera
    background = np.all(frames[0] == (48, 48, 48), axis=2).mean()
    assert background > np.all(frames[-1] == (48, 48, 48), axis=2).mean()  # zoomed in at the end


@pytest.mark.parametrize("kwargs, match", [
    ({"seconds": 0}, "seconds > 0"),
    ({"fps": 0}, "fps > 0"),
    ({"size": (8, 8)}, "sides >= 16"),
])
def test_bad_arguments(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        make_demo_clip(tmp_path / "x.mp4", **kwargs)
    assert not (tmp_path / "x.mp4").exists()


def test_unwritable_target(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(InputError, match="cannot write video"):
        make_demo_clip(tmp_path / "file" / "demo.mp4", seconds=0.2)
