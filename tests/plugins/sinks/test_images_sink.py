"""ImagesSink: annotated COCO frames written as JPEGs, named like the JSON image_ids."""
from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from coco_frames import image_results, video_results
from posestream.plugins.sinks.images import ImagesSink
from posestream.stream.core.config import load_config
from posestream.stream.core.errors import ConfigError, InputError, StageError
from posestream.stream.render import draw_poses


def test_image_source_keeps_file_names(tmp_path: Path) -> None:
    frames = image_results()
    with ImagesSink(load_config(), str(tmp_path / "vis")) as sink:  # created when missing
        for result, pixels in frames:
            sink.write(result, pixels)
    assert sorted(p.name for p in (tmp_path / "vis").iterdir()) == sorted(r.image_id for r, _ in frames)
    for result, pixels in frames:
        written = cv2.imread(str(tmp_path / "vis" / result.image_id))
        assert written.shape == pixels.shape
        rendered = draw_poses(pixels, result.poses, kpt_threshold=0.3)
        assert cv2.PSNR(written, rendered) > 24  # JPEG q90 of thin coloured lines on photos: 26-35 dB
        assert cv2.PSNR(written, rendered) > cv2.PSNR(written, pixels) + 3
    assert sink.written == 8


def test_video_frames_and_quality(tmp_path: Path) -> None:
    frames = video_results(3)
    low = load_config(overrides={"sinks.images_quality": 20})
    for config, folder in ((load_config(), "q90"), (low, "q20")):
        with ImagesSink(config, str(tmp_path / folder)) as sink:
            for result, pixels in frames:
                sink.write(result, pixels)
    assert sorted(p.name for p in (tmp_path / "q90").iterdir()) == ["0.jpg", "1.jpg", "2.jpg"]
    assert (tmp_path / "q20" / "2.jpg").stat().st_size < 0.5 * (tmp_path / "q90" / "2.jpg").stat().st_size


def test_several_streams_get_sub_folders(tmp_path: Path) -> None:
    streams = ["cam0", "file:///videos/a b.mp4"]
    with ImagesSink(load_config(), str(tmp_path), streams=streams) as sink:
        for stream in streams:
            for result, pixels in video_results(2, stream):
                sink.write(result, pixels)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.jpg")) == [
        "cam0/0.jpg", "cam0/1.jpg", "file_videos_a_b.mp4/0.jpg", "file_videos_a_b.mp4/1.jpg"]


def test_image_ids_cannot_escape_the_folder(tmp_path: Path) -> None:
    (result, pixels), = video_results(1)
    result.image_id = "../../escape.png"
    with ImagesSink(load_config(), str(tmp_path / "out")) as sink:
        sink.write(result, pixels)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["escape.jpg"]


def test_wiring_errors_and_close(tmp_path: Path) -> None:
    sink = ImagesSink(load_config(), str(tmp_path))
    (result, pixels), = video_results(1)
    with pytest.raises(StageError, match="got no pixels"):
        sink.write(result, None)
    sink.close()
    sink.close()
    with pytest.raises(StageError, match="write after close"):
        sink.write(result, pixels)


@pytest.mark.parametrize("target, overrides, error, match", [
    ("", {}, ConfigError, "needs an output folder"),
    ("{tmp}/file", {}, InputError, "is a file, not a directory"),
    ("/proc/posestream-no-such-dir", {}, InputError, "cannot be created"),
    ("{tmp}/ok", {"sinks.images_quality": 0}, ConfigError, r"images_quality.*\[1, 100\]"),
])
def test_bad_settings(tmp_path: Path, target: str, overrides: dict, error: type, match: str) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(error, match=match):
        ImagesSink(load_config(overrides=overrides), target.format(tmp=tmp_path))
