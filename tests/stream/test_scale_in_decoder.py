"""Frames decoded at the detector's input size (`source.scale_in_decoder`): the sources deliver them
small, the results stay in the source's pixels and match full-size decoding, and a run whose other
stages read pixels (a video sink, top-down crops) still decodes at full size."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from posestream.stream.core.config import load_config
from posestream.stream.core.settings import Settings
from posestream.stream.core.results import Poses
from posestream.stream.pipeline import Pipeline
from posestream.stream.ring import FrameRef
from posestream.stream.sources import open_source
from posestream.stream.stage_graph import decode_long_side, plan

VIDEO_72 = "data/video/two_person_interaction_72f.mp4"  # 1920x1080


def test_poses_scaled_and_frame_size() -> None:
    poses = Poses(np.array([[10, 20, 30, 40]]), np.array([0.9]),
                  np.array([[[5, 6, 0.8], [7, 8, 0.1]]]), np.array([0.7]))
    assert poses.in_source_pixels((360, 640), None) is poses
    big = poses.in_source_pixels((360, 640), (720, 1920))  # x times 3, y times 2
    np.testing.assert_allclose(big.boxes, [[30, 40, 90, 80]])
    np.testing.assert_allclose(big.keypoints, [[[15, 12, 0.8], [21, 16, 0.1]]])  # scores unchanged
    np.testing.assert_allclose(poses.keypoints[0, 0], [5, 6, 0.8])  # the original is left alone
    ref = FrameRef(0, "s", 0, 0, (360, 640, 3), None, 0.0, "ring")
    assert ref.frame_size == (640, 360)
    assert FrameRef(0, "s", 0, 0, (360, 640, 3), None, 0.0, "ring", None, (1080, 1920)).frame_size == (1920, 1080)


def test_video_source_decodes_at_the_given_size(shared: Path) -> None:
    config = load_config()
    with open_source(str(shared / VIDEO_72), config) as source:
        source.scale_down_to(640)
        assert (source.info.width, source.info.height) == (1920, 1080)  # what the camera has
        assert (source.info.max_width, source.info.max_height) == (640, 360)  # what the ring holds
        frames = [f for _, f in zip(range(3), source.frames())]
    with open_source(str(shared / VIDEO_72), config) as source:
        full = [f for _, f in zip(range(3), source.frames())]
    for small, big in zip(frames, full):
        assert small.image.shape == (360, 640, 3) and small.source_hw == (1080, 1920)
        assert big.source_hw is None
        # the same picture: compare with the full frame shrunk by OpenCV
        shrunk = cv2.resize(big.image, (640, 360), interpolation=cv2.INTER_AREA)
        assert np.abs(small.image.astype(int) - shrunk).mean() < 3.0


def test_image_folder_of_mixed_sizes_fits_the_ring(shared: Path) -> None:
    folder = shared / "data" / "coco" / "images"
    with open_source(str(folder), load_config()) as source:
        source.scale_down_to(320)
        limit = (source.info.max_height, source.info.max_width)
        frames = list(source.frames())
    assert len(frames) == 8 and limit[0] <= 320 and limit[1] <= 320
    for frame in frames:
        height, width = frame.image.shape[:2]
        assert max(height, width) == 320 and height <= limit[0] and width <= limit[1]
        source_h, source_w = frame.source_hw
        assert abs(source_w / source_h - width / height) < 0.02  # aspect kept


@pytest.mark.parametrize("enabled, zoom, long_side", [(True, 2.0, 1280), (True, 3.0, 1920), (False, 2.0, 640)])
def test_decoded_size_follows_the_small_people_zoom(config: Settings, enabled: bool, zoom: float,
                                                    long_side: int) -> None:
    """The windows look at `zoom` times the full pass's detail, so frames are decoded that large."""
    config = config.with_overrides({"small_people": dict(enabled=enabled, zoom=zoom)})
    assert decode_long_side(config, plan(config, 1, False)) == long_side
    assert decode_long_side(config, plan(config, 1, True)) is None  # a sink draws: full size


def _run(config: Settings, video: Path, out: Path, sinks: list[str], scale: bool) -> str:
    config = config.with_overrides({"source.scale_in_decoder": scale})
    with Pipeline(config, [str(video)], [f"json:{out}", *sinks]) as pipeline:
        report = pipeline.run()
    assert report.status == "completed"
    return out.read_text()


@pytest.mark.slow
def test_results_match_full_size_decoding(config: Settings, shared: Path, tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="posestream.stream.pipeline")
    scaled = json.loads(_run(config, shared / VIDEO_72, tmp_path / "small.json", [], True))
    assert "1920x1080 (decoded at 1280x720)" in caplog.text  # input 640 x small-people zoom 2
    full = json.loads(_run(config, shared / VIDEO_72, tmp_path / "full.json", [], False))
    # the same two people in all 72 frames (the small-people windows, which look at other pixels at
    # each size, may add a low-scored far "person": a bag at 1561, 470 scores 0.10-0.19 at full size)
    scaled, full = ([p for p in persons if p["score"] >= 0.5] for persons in (scaled, full))
    assert len(scaled) == len(full) == 144
    a = np.array([p["keypoints"] for p in full]).reshape(-1, 17, 3)
    b = np.array([p["keypoints"] for p in scaled]).reshape(-1, 17, 3)
    assert b[..., 0].max() > 1000  # source pixels, not the 640-wide decoded frame's
    visible = a[..., 2] > 0.5
    error = np.linalg.norm(a[..., :2] - b[..., :2], axis=-1)[visible]
    assert np.median(error) < 6.0, np.median(error)  # pixels of a 1920x1080 frame
    boxes = np.abs(np.array([p["box"] for p in full]) - np.array([p["box"] for p in scaled]))
    assert np.median(boxes) < 6.0


@pytest.mark.slow
def test_a_sink_that_draws_gets_full_size_frames(config: Settings, shared: Path, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="posestream.stream.pipeline")
    clip = shared / "data" / "video" / "street_walk_5f.mp4"  # 960x540
    _run(config, clip, tmp_path / "out.json", [f"video:{tmp_path / 'out.mp4'}"], True)
    assert "960x540, offline" in caplog.text and "decoded at" not in caplog.text
    import av

    with av.open(str(tmp_path / "out.mp4")) as container:
        assert (container.streams.video[0].width, container.streams.video[0].height) == (960, 540)
