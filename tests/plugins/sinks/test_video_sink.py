"""VideoSink: annotated COCO frames encoded to MP4 and read back with PyAV."""
from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from coco_frames import image_results, video_results
from posestream.plugins.sinks.video import VideoSink
from posestream.stream.core.config import load_config
from posestream.stream.core.errors import ConfigError, InputError, StageError
from posestream.stream.render import draw_poses


def read_back(path: Path) -> tuple[str, list[np.ndarray], list[float]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        return (stream.codec_context.name, [f.to_ndarray(format="bgr24") for f in frames],
                [float(f.time) for f in frames])


def test_frames_are_annotated_and_timed(tmp_path: Path) -> None:
    frames = video_results(10, fps=15.0)
    with VideoSink(load_config(), str(tmp_path / "out.mp4")) as sink:
        for result, pixels in frames:
            sink.write(result, pixels)
    codec, decoded, times = read_back(tmp_path / "out.mp4")
    assert codec == "h264" and len(decoded) == 10
    assert all(image.shape == (480, 640, 3) for image in decoded)
    assert times == pytest.approx([n / 15 for n in range(10)], abs=1e-3)
    for image, (result, pixels) in zip(decoded, frames):
        rendered = draw_poses(pixels, result.poses, kpt_threshold=0.3)
        # the video shows the drawing, not the bare frame
        assert cv2.PSNR(image, rendered) > 24  # x264 at CRF 23 on busy photos: 26-33 dB
        assert cv2.PSNR(image, rendered) > cv2.PSNR(image, pixels) + 5


def test_one_file_per_stream(tmp_path: Path) -> None:
    streams = ["cam0", "rtsp://10.0.0.5/live"]
    with VideoSink(load_config(), str(tmp_path / "run.mp4"), streams=streams) as sink:
        for (a, pa), (b, pb) in zip(video_results(3, "cam0"), video_results(5, streams[1])):
            sink.write(a, pa)
            sink.write(b, pb)
        sink.write(*video_results(5, streams[1])[3])
        sink.write(*video_results(5, streams[1])[4])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run_cam0.mp4", "run_rtsp_10.0.0.5_live.mp4"]
    assert len(read_back(tmp_path / "run_cam0.mp4")[1]) == 3
    assert len(read_back(tmp_path / "run_rtsp_10.0.0.5_live.mp4")[1]) == 5


def test_end_stream_finishes_that_streams_file(tmp_path: Path) -> None:
    """A stream that ends is readable at once (its MP4 index written), while another goes on."""
    streams = ["cam0", "cam1"]
    with VideoSink(load_config(), str(tmp_path / "run.mp4"), streams) as sink:
        for (a, pa), (b, pb) in zip(video_results(3, "cam0"), video_results(3, "cam1")):
            sink.write(a, pa)
            sink.write(b, pb)
        sink.end_stream("cam0", 2)
        assert len(read_back(tmp_path / "run_cam0.mp4")[1]) == 3
        sink.end_stream("cam0", 2)  # a repeated end is harmless
        sink.write(*video_results(4, "cam1")[3])
    assert len(read_back(tmp_path / "run_cam1.mp4")[1]) == 4


@pytest.mark.parametrize("video_fps, pts, expected_step", [
    (10.0, True, 0.1),          # a fixed rate overrides the source's timestamps
    (0.0, False, 1 / 30),       # no timestamps: 30 fps
])
def test_frame_rate_without_source_timing(tmp_path: Path, video_fps: float, pts: bool,
                                          expected_step: float) -> None:
    config = load_config(overrides={"sinks.video_fps": video_fps})
    with VideoSink(config, str(tmp_path / "r.mp4")) as sink:
        for result, pixels in video_results(4, fps=15.0):
            result.pts = result.pts if pts else None
            sink.write(result, pixels)
    assert read_back(tmp_path / "r.mp4")[2] == pytest.approx([n * expected_step for n in range(4)],
                                                              abs=1e-3)


def test_odd_sized_image_source(tmp_path: Path) -> None:
    result, pixels = image_results()[4]  # 000000000785.jpg, 640 x 425
    assert pixels.shape == (425, 640, 3)
    with VideoSink(load_config(), str(tmp_path / "one.mkv")) as sink:
        sink.write(result, pixels)
    _, decoded, _ = read_back(tmp_path / "one.mkv")
    assert len(decoded) == 1 and decoded[0].shape == (426, 640, 3)


def test_wiring_errors_and_close(tmp_path: Path) -> None:
    sink = VideoSink(load_config(), str(tmp_path / "w.mp4"))
    (result, pixels), = video_results(1)
    with pytest.raises(StageError, match="got no pixels"):
        sink.write(result, None)
    sink.write(result, pixels)
    with pytest.raises(InputError, match="640x480 BGR uint8; got a frame of shape"):
        sink.write(result, pixels[:100])  # the stream changed size mid-run
    sink.close()
    sink.close()
    with pytest.raises(StageError, match="write after close"):
        sink.write(result, pixels)
    assert len(read_back(tmp_path / "w.mp4")[1]) == 1


@pytest.mark.parametrize("target, overrides, error, match", [
    ("", {}, ConfigError, "needs an output file"),
    ("{tmp}/out.avi", {}, ConfigError, "must end in one of: .mp4, .mkv, .mov"),
    ("{tmp}/dir.mp4", {}, InputError, "is a directory"),
    ("{tmp}/file/out.mp4", {}, InputError, "is a file, not a directory"),
    ("{tmp}/o.mp4", {"sinks.video_codec": "h265"}, ConfigError, "not one of: libx264, mpeg4"),
    ("{tmp}/o.mp4", {"sinks.video_crf": 60}, ConfigError, r"video_crf.*\[0, 51\]"),
    ("{tmp}/o.mp4", {"sinks.video_preset": "quick"}, ConfigError, "video_preset"),
    ("{tmp}/o.mp4", {"sinks.render_kpt_threshold": 2.0}, ConfigError, "render_kpt_threshold"),
])
def test_bad_settings(tmp_path: Path, target: str, overrides: dict, error: type, match: str) -> None:
    (tmp_path / "dir.mp4").mkdir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(error, match=match):
        VideoSink(load_config(overrides=overrides), target.format(tmp=tmp_path))
