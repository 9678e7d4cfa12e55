"""The small-people windows around the real default detector (`stream.small_people`), on real frames:
TUD-Campus shrunk onto a wide canvas, the 1080p two-person clip, and bad streams."""
from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from posestream.stream.chain import build_detector
from posestream.stream.core.settings import Settings
from posestream.stream.core.results import Poses
from posestream.stream.small_people import SmallPeopleDetector


def _video(path: Path, count: int) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="bgr24") for _, f in zip(range(count), container.decode(video=0))]


@pytest.fixture(scope="module")
def far_frames(shared: Path) -> list[np.ndarray]:
    """12 TUD-Campus frames shrunk 3x onto a grey 1280x720 canvas: people 43-103 px tall."""
    frames = []
    for image in _video(shared / "data/mot/TUD-Campus/TUD-Campus.mp4", 12):
        canvas = np.full((720, 1280, 3), 128, dtype=np.uint8)
        canvas[300:460, 700:913] = cv2.resize(image, (213, 160), interpolation=cv2.INTER_AREA)
        frames.append(canvas)
    return frames


def _stream(detector, frames: list[np.ndarray], stream: int = 0) -> list[Poses]:
    return [detector.detect_frames([frame], [(stream, index)])[0] for index, frame in enumerate(frames)]


def _overlapped(detector, frames: list[np.ndarray]) -> list[Poses]:
    """As the detect stage runs an overlapping detector: up to `in_flight` frames started."""
    started, out = [], []
    for index, frame in enumerate(frames):
        started.append(detector.start_frame(frame, (0, index)))
        while len(started) > detector.in_flight:
            out.append(detector.finish(started.pop(0)))
    return out + [detector.finish(handle) for handle in started]


def _same(a: list[Poses], b: list[Poses]) -> None:
    assert [len(p) for p in a] == [len(p) for p in b]
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.boxes, y.boxes, atol=0.05)
        np.testing.assert_allclose(x.box_scores, y.box_scores, atol=1e-3)


def test_windows_find_far_people_the_full_pass_misses(config: Settings, far_frames: list[np.ndarray]) -> None:
    config = config.with_overrides({"small_people.enabled": False})
    plain = build_detector(config)
    try:
        without = sum(len(p) for p in _stream(plain, far_frames))
    finally:
        plain.close()
    config = config.with_overrides({"small_people.enabled": True})
    detector = build_detector(config)
    assert isinstance(detector, SmallPeopleDetector)
    try:
        found = _stream(detector, far_frames)
    finally:
        detector.close()
    late = sum(len(p) for p in found[detector.lag:])  # windows follow what frames `lag` older showed
    assert late >= 2 * (len(far_frames) - detector.lag), [len(p) for p in found]
    assert sum(len(p) for p in found) > without + 10
    assert detector.mosaics >= 1 + len(far_frames) - detector.lag  # the first frame's scan, then windows
    heights = np.concatenate([p.boxes[:, 3] for p in found])
    assert heights.size and heights.max() < 130  # the far people, nothing larger


def test_overlapped_and_batched_frames_give_the_same_persons(config: Settings, far_frames: list[np.ndarray]) -> None:
    """Frame t's windows depend only on frames up to t - lag, so how frames overlap does not matter."""
    first, second = build_detector(config), build_detector(config)
    try:
        assert first.in_flight > 0  # the default OpenVINO detector overlaps frames
        _same(_stream(first, far_frames), _overlapped(second, far_frames))
    finally:
        first.close()
        second.close()


def test_large_people_cost_little_and_change_nothing(config: Settings, shared: Path) -> None:
    """The 1080p two-person clip (decoded at 1280x720 as the pipeline does): the same persons as
    without windows, and after the first frame's scan one mosaic per `scan_every` frames at most."""
    frames = [cv2.resize(f, (1280, 720), interpolation=cv2.INTER_AREA)
              for f in _video(shared / "data/video/two_person_interaction_72f.mp4", 12)]
    config = config.with_overrides({"small_people.enabled": False})
    plain = build_detector(config)
    config = config.with_overrides({"small_people.enabled": True})
    detector = build_detector(config)
    try:
        _same(_stream(plain, frames), _stream(detector, frames))
        grid_mosaics = detector.mosaics
        _stream(detector, frames, stream=1)
        assert detector.mosaics == 2 * grid_mosaics  # a new stream scans the whole frame once
    finally:
        plain.close()
        detector.close()
    assert grid_mosaics <= 7 + 2  # 25 windows in 7 mosaics, plus at most a hint look or a scan


def test_still_images_get_windows_from_their_own_hints(config: Settings, far_frames: list[np.ndarray],
                                                       shared: Path) -> None:
    detector = build_detector(config)
    try:
        found = detector.detect(far_frames[:2])
        assert all(len(p) >= 1 for p in found) and detector.mosaics >= 1
        small = cv2.imread(str(shared / "data/coco/images/000000000785.jpg"))  # no larger than the input
        before = detector.mosaics
        detector.detect([small])
        assert detector.mosaics == before  # frames no larger than detector.input_size: no windows
    finally:
        detector.close()


@pytest.mark.parametrize("shapes", [
    [(720, 1280)] * 3,                          # every window empty: a grey frame
    [(2000, 1)] * 3 + [(1, 2000)] * 2,          # 1-pixel-wide, then 1-pixel-high frames
    [(720, 1280), (1080, 1920), (480, 640), (720, 1280), (1080, 1920)],  # resolution changes
])
def test_bad_streams_give_one_result_per_frame(config: Settings, shapes: list[tuple[int, int]]) -> None:
    frames = [np.full((*shape, 3), 128, dtype=np.uint8) for shape in shapes]
    first, second = build_detector(config), build_detector(config)
    try:
        batched, overlapped = _stream(first, frames), _overlapped(second, frames)
    finally:
        first.close()
        second.close()
    assert len(batched) == len(overlapped) == len(frames)
    assert all(len(p) == 0 for p in batched + overlapped)


@pytest.mark.slow
def test_pipeline_on_a_stream_that_changes_size(config: Settings, shared: Path, tmp_path: Path) -> None:
    """An image folder is a stream whose resolution may change at every frame: far people at 1280x720,
    the same at 1920x1080, a grey frame, a 1-pixel-wide frame, large people: every frame comes out."""
    from posestream.stream.pipeline import Pipeline

    folder = tmp_path / "frames"
    folder.mkdir()
    tud = _video(shared / "data/mot/TUD-Campus/TUD-Campus.mp4", 1)[0]
    wide = np.full((1080, 1920, 3), 128, dtype=np.uint8)
    wide[500:660, 900:1113] = cv2.resize(tud, (213, 160), interpolation=cv2.INTER_AREA)
    big = _video(shared / "data/video/two_person_interaction_72f.mp4", 1)[0]
    images = [cv2.resize(wide, (1280, 720)), wide, np.full((720, 1280, 3), 128, np.uint8),
              np.full((1500, 1, 3), 128, np.uint8), big, wide]
    for index, image in enumerate(images):
        cv2.imwrite(str(folder / f"{index:03d}.png"), image)
    out = tmp_path / "out.json"
    with Pipeline(config, [str(folder)], [f"json:{out}"], policy="offline") as pipeline:
        report = pipeline.run()
    assert report.status == "completed"
    assert next(iter(report.streams.values()))["frames_out"] == len(images)
    entries = json.loads(out.read_text())
    per_frame = {name: sum(e["image_id"] == name for e in entries) for name in {e["image_id"] for e in entries}}
    assert per_frame.get("004.png") == 2  # the two men
    assert "002.png" not in per_frame and "003.png" not in per_frame
