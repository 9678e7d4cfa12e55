"""Sources on real inputs: the shared videos and COCO images, FFmpeg lavfi, a real GStreamer RTSP
server (killed, restarted and frozen mid-stream), and every bad-input path with its one error."""
from __future__ import annotations

import logging
import shutil
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import av
import cv2
import numpy as np
import pytest
from PIL import Image

from posestream.stream.core.config import load_config, shared_dir
from posestream.stream.core.errors import ConfigError, InputError, InputNotFoundError, SourceTimeoutError
from posestream.stream.sources import Frame, Source, open_source
from posestream.stream.core.images import is_image_path

pytestmark = pytest.mark.timeout(60)

DATA = shared_dir() / "data"
VIDEOS = DATA / "video"
COCO_IMAGES = DATA / "coco" / "images"
# Short network timeouts keep the failure tests quick; the defaults are for real cameras.
LIVE_CONFIG = {"source.connect_timeout_s": 3.0, "source.read_timeout_s": 2.0,
               "source.reconnect_initial_s": 0.25, "source.reconnect_max_s": 1.0}


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_frames(frames: list[Frame], height: int, width: int) -> None:
    assert [f.index for f in frames] == list(range(len(frames)))
    for frame in frames:
        assert frame.image.shape == (height, width, 3)
        assert frame.image.dtype == np.uint8 and frame.image.flags["C_CONTIGUOUS"]
    assert all(a.capture_ts <= b.capture_ts for a, b in zip(frames, frames[1:]))


class Collector:
    """Consumes a live source on a thread, as the pipeline's source stage does."""

    def __init__(self, source: Source, pause_s: float = 0.0) -> None:
        self.source = source
        self.pause_s = pause_s  # a slow consumer, e.g. one waiting for a free ring slot
        self.frames: list[Frame] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for frame in self.source.frames():
                self.frames.append(frame)
                time.sleep(self.pause_s)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test
            self.error = exc

    def frames_after(self, ts: float) -> list[Frame]:
        return [f for f in list(self.frames) if f.capture_ts > ts]

    def stop(self) -> None:
        self.source.close()
        self.thread.join(10)
        assert not self.thread.is_alive(), "frames() did not end after close()"
        if self.error:
            raise self.error


def wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


# ---------------------------------------------------------------- video files

@pytest.mark.parametrize("file_name, count, width, height", [
    ("street_walk_5f.mp4", 5, 960, 540),
    ("soccer_posetrack_000001_5f.mp4", 5, 1280, 720),
    ("two_person_interaction_72f.mp4", 72, 1920, 1080),
])
def test_video_file_delivers_every_frame_as_bgr(file_name: str, count: int, width: int,
                                                height: int) -> None:
    path = VIDEOS / file_name
    reference = cv2.VideoCapture(str(path))  # an independent decode to compare pixels against
    differences = []
    with open_source(str(path), load_config()) as source:
        info = source.info
        frames = []
        for frame in source.frames():
            ok, theirs = reference.read()
            assert ok, f"our decode gave more frames than OpenCV's at index {frame.index}"
            differences.append(cv2.absdiff(frame.image, theirs).mean())
            frames.append(replace(frame, image=frame.image[:1, :1]))  # keep memory small
            assert frame.image.shape == (height, width, 3)
            assert frame.image.dtype == np.uint8 and frame.image.flags["C_CONTIGUOUS"]
    reference.release()
    assert (info.kind, info.live, info.name) == ("video", False, path.stem)
    assert (info.width, info.height, info.max_width, info.max_height) == (width, height, width, height)
    assert info.fps and info.fps > 0
    assert len(frames) == count
    assert [f.index for f in frames] == list(range(count))
    assert all(f.image_id is None for f in frames)
    pts = [f.pts for f in frames]
    assert pts[0] == pytest.approx(0.0) and pts == sorted(pts)
    # Same pixels up to the YUV->BGR rounding of two different converters.
    assert max(differences) < 2.0
    assert source.stats.frames_read == source.stats.frames_delivered == count


def test_damaged_packets_mid_file_are_skipped_and_counted(tmp_path: Path) -> None:
    original = VIDEOS / "street_walk_5f.mp4"
    with av.open(str(original)) as container:
        packets = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    data = bytearray(original.read_bytes())
    for position, size in packets[1:3]:
        data[position:position + size] = b"\xff" * size
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    with open_source(str(damaged), load_config()) as source:
        frames = list(source.frames())
    assert len(frames) == len(packets) - 2
    assert [f.index for f in frames] == list(range(len(frames)))
    assert source.stats.decode_errors == 2


def test_close_is_safe_twice_and_stops_iteration() -> None:
    source = open_source(str(VIDEOS / "two_person_interaction_72f.mp4"), load_config())
    frames = source.frames()
    next(frames)
    source.close()
    source.close()
    assert source.closed
    assert list(frames) == []


@pytest.mark.parametrize("spec", [str(VIDEOS / "two_person_interaction_72f.mp4"), str(COCO_IMAGES),
                                  "lavfi:testsrc=size=160x120:rate=20"], ids=["video", "folder", "lavfi"])
def test_close_from_another_thread_ends_a_running_frames(spec: str) -> None:
    """A pipeline's watchdog closes the source while the consumer is inside frames()."""
    source = open_source(spec, load_config())
    collector = Collector(source, pause_s=0.05)
    assert wait_for(lambda: len(collector.frames) >= 3, 10)
    collector.stop()
    assert 3 <= len(collector.frames) < 8
    source.close()


def _remux_to_mkv(tmp_path: Path) -> str:
    """The 72-frame clip without re-encoding in Matroska, which keeps no frame count."""
    target = tmp_path / "no_count.mkv"
    with av.open(str(VIDEOS / "two_person_interaction_72f.mp4")) as src, \
            av.open(str(target), "w") as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(video=0):
            if packet.dts is not None:
                packet.stream = out
                dst.mux(packet)
    return str(target)


@pytest.mark.parametrize("make_spec, expected, tolerance", [
    (lambda tmp: str(VIDEOS / "two_person_interaction_72f.mp4"), 72, 0),
    (lambda tmp: str(VIDEOS / "street_walk_5f.mp4"), 5, 0),
    (_remux_to_mkv, 72, 8),  # duration x rate: an estimate
    (lambda tmp: str(COCO_IMAGES), len([p for p in COCO_IMAGES.iterdir() if is_image_path(p)]), 0),
    (lambda tmp: f"{COCO_IMAGES / '000000000785.jpg'},{COCO_IMAGES / '000000000036.jpg'}", 2, 0),
    (lambda tmp: "lavfi:testsrc=size=160x120:rate=20:duration=2", None, 0),  # live: no end
], ids=["mp4", "mp4-short", "mkv-estimate", "folder", "image-list", "lavfi"])
def test_frame_count_for_the_progress_bar(tmp_path: Path, make_spec: Callable[[Path], str],
                                          expected: int | None, tolerance: int) -> None:
    with open_source(make_spec(tmp_path), load_config()) as source:
        count = source.info.frame_count
        delivered = len(list(source.frames())) if not source.info.live else None
    if expected is None:
        assert count is None
        return
    assert count is not None and abs(count - expected) <= tolerance, count
    assert abs(delivered - count) <= tolerance


# ---------------------------------------------------------------- images

def test_image_folder_in_name_order_with_file_names_and_max_size() -> None:
    with open_source(str(COCO_IMAGES), load_config()) as source:
        info = source.info
        frames = list(source.frames())
    names = sorted(p.name for p in COCO_IMAGES.glob("*.jpg"))
    assert [f.image_id for f in frames] == names
    assert [f.index for f in frames] == list(range(len(names)))
    assert (info.kind, info.live, info.fps) == ("image_folder", False, None)
    assert info.max_width == max(f.image.shape[1] for f in frames)
    assert info.max_height == max(f.image.shape[0] for f in frames)
    assert (info.height, info.width) == frames[0].image.shape[:2]
    for frame in frames:
        assert np.array_equal(frame.image, cv2.imread(str(COCO_IMAGES / frame.image_id)))
        assert frame.pts is None


@pytest.mark.parametrize("as_list", [False, True], ids=["comma-string", "python-list"])
def test_image_list_keeps_the_given_order(as_list: bool) -> None:
    paths = [COCO_IMAGES / "000000197388.jpg", COCO_IMAGES / "000000000036.jpg"]
    spec = [str(p) for p in paths] if as_list else ",".join(str(p) for p in paths)
    with open_source(spec, load_config(), name="pair") as source:
        frames = list(source.frames())
    assert source.info.kind == "image_list" and source.info.name == "pair"
    assert [f.image_id for f in frames] == [p.name for p in paths]


def test_single_image_file_is_a_one_image_list() -> None:
    with open_source(str(COCO_IMAGES / "000000000785.jpg"), load_config()) as source:
        frames = list(source.frames())
    assert source.info.kind == "image_list" and len(frames) == 1


def test_unreadable_image_in_a_folder_is_skipped_and_counted(tmp_path: Path) -> None:
    for name in ("a.jpg", "c.jpg"):
        shutil.copy(COCO_IMAGES / "000000000785.jpg", tmp_path / name)
    (tmp_path / "b.jpg").write_bytes(b"this is not a jpeg")
    with open_source(str(tmp_path), load_config()) as source:
        frames = list(source.frames())
    assert [(f.index, f.image_id) for f in frames] == [(0, "a.jpg"), (1, "c.jpg")]
    assert source.stats.decode_errors == 1


def test_max_size_follows_exif_rotation(tmp_path: Path) -> None:
    """cv2 turns an EXIF-rotated photo upright, so the ring must be sized for the rotated shape."""
    Image.new("RGB", (64, 32), "red").save(tmp_path / "wide.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.new("RGB", (96, 40), "blue").save(tmp_path / "rotated.jpg", exif=exif)
    with open_source(str(tmp_path), load_config()) as source:
        frames = list(source.frames())
    shapes = {f.image_id: f.image.shape[:2] for f in frames}
    assert shapes == {"rotated.jpg": (96, 40), "wide.jpg": (32, 64)}
    assert (source.info.max_width, source.info.max_height) == (64, 96)


# ---------------------------------------------------------------- lavfi

def test_lavfi_test_source_is_live_and_paced() -> None:
    started = time.monotonic()
    with open_source("lavfi:testsrc=size=160x120:rate=20:duration=0.5", load_config()) as source:
        frames = list(source.frames())
    elapsed = time.monotonic() - started
    assert (source.info.kind, source.info.live, source.info.fps) == ("lavfi", True, 20.0)
    assert len(frames) == 10
    check_frames(frames, 120, 160)
    assert elapsed >= 0.4  # the realtime filter paces it like a camera
    assert frames[0].image.std() > 10  # the test pattern, not a blank frame


# ---------------------------------------------------------------- bad input

def _corrupt_file(tmp_path: Path) -> str:
    path = tmp_path / "corrupt.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    return str(path)


def _truncated_file(tmp_path: Path) -> str:
    data = (VIDEOS / "street_walk_5f.mp4").read_bytes()
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[: len(data) // 2])
    return str(path)


def _text_file(tmp_path: Path) -> str:
    path = tmp_path / "notes.txt"
    path.write_text("not a video\n")
    return str(path)


def _empty_folder(tmp_path: Path) -> str:
    (tmp_path / "empty").mkdir()
    return str(tmp_path / "empty")


ERROR_CASES: list[tuple[str, Callable[[Path], str], type[Exception], str]] = [
    ("missing-file", lambda t: str(t / "nope.mp4"), InputNotFoundError, "nope.mp4"),
    ("corrupt-file", _corrupt_file, InputError, "corrupt.mp4"),
    ("truncated-file", _truncated_file, InputError, "truncated.mp4"),
    ("not-a-video", _text_file, InputError, "notes.txt"),
    ("empty-folder", _empty_folder, InputError, "no images"),
    ("image-list-missing-item",
     lambda t: f"{COCO_IMAGES / '000000000036.jpg'},{t / 'gone.jpg'}", InputNotFoundError, "gone.jpg"),
    ("unreachable-rtsp", lambda t: f"rtsp://127.0.0.1:{free_port()}/live", InputError, "refused"),
    ("unreachable-http", lambda t: f"http://127.0.0.1:{free_port()}/video.mjpg", InputError,
     "refused"),
    ("unsupported-scheme", lambda t: "ftp://127.0.0.1/video.mp4", InputError, "ftp"),
    ("missing-webcam-index", lambda t: "9", InputNotFoundError, "/dev/video9"),
    ("missing-webcam-device", lambda t: "/dev/video7", InputNotFoundError, "/dev/video7"),
    ("bad-lavfi-graph", lambda t: "lavfi:nosuchfilter=1", InputError, "nosuchfilter"),
    ("empty-spec", lambda t: "  ", InputError, "empty source"),
]


@pytest.mark.parametrize("make_spec, expected, fragment",
                         [case[1:] for case in ERROR_CASES], ids=[case[0] for case in ERROR_CASES])
def test_bad_input_is_one_clear_error(tmp_path: Path, make_spec: Callable[[Path], str],
                                      expected: type[Exception], fragment: str) -> None:
    started = time.monotonic()
    with pytest.raises(expected) as caught:
        with open_source(make_spec(tmp_path), load_config(overrides=LIVE_CONFIG)) as source:
            list(source.frames())
    assert fragment in str(caught.value)
    assert "\n" not in str(caught.value)
    assert time.monotonic() - started < 5.0


@pytest.mark.parametrize("overrides, key", [
    ({"source.rtsp_transport": "carrier-pigeon"}, "source.rtsp_transport"),
    ({"source.reconnect_initial_s": 2.0, "source.reconnect_max_s": 1.0}, "source.reconnect_max_s"),
    ({"source.read_timeout_s": 0.0}, "source.read_timeout_s"),
    ({"source.webcam_fourcc": "MJPEG"}, "source.webcam_fourcc"),
])
def test_bad_source_settings_name_the_key(overrides: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        open_source(str(VIDEOS / "street_walk_5f.mp4"), load_config(overrides=overrides))


# ---------------------------------------------------------------- RTSP

def source_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("posestream.stream.sources")]


@pytest.mark.slow
def test_rtsp_frames_arrive(rtsp_server) -> None:
    with open_source(rtsp_server.url, load_config(overrides=LIVE_CONFIG), name="cam") as source:
        assert (source.info.kind, source.info.live, source.info.name) == ("network", True, "cam")
        assert (source.info.width, source.info.height) == (320, 180)
        assert source.info.fps == pytest.approx(10.0)
        collector = Collector(source)
        assert wait_for(lambda: len(collector.frames) >= 15, 10), "fewer than 15 frames in 10 s"
        collector.stop()
    check_frames(collector.frames, 180, 320)
    pts = [f.pts for f in collector.frames if f.pts is not None]
    assert pts == sorted(pts) and pts[-1] > pts[0]
    assert collector.frames[-1].image.std() > 10  # real picture content
    assert source.stats.frames_read >= source.stats.frames_delivered >= 15


@pytest.mark.slow
def test_rtsp_server_killed_and_restarted(rtsp_server,
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="posestream.stream.sources")
    source = open_source(rtsp_server.url, load_config(overrides=LIVE_CONFIG), name="cam")
    collector = Collector(source)
    try:
        assert wait_for(lambda: len(collector.frames) >= 5, 10)
        killed_at = time.time()
        rtsp_server.kill()
        assert wait_for(lambda: source.stats.lost == 1, 5), "loss not detected within 5 s"
        time.sleep(max(0.0, killed_at + 3.0 - time.time()))
        restarted_at = time.time()
        rtsp_server.start()
        assert wait_for(lambda: source.stats.restored == 1, 15), "not restored within 15 s"
        assert wait_for(lambda: len(collector.frames_after(restarted_at)) >= 5, 10)
        assert collector.thread.is_alive()  # the consumer never saw an error or an end
    finally:
        collector.stop()
    messages = source_messages(caplog)
    lost = [i for i, m in enumerate(messages) if m.startswith("source cam: lost")]
    restored = [i for i, m in enumerate(messages) if m.startswith("source cam: restored")]
    assert len(lost) == 1 and len(restored) == 1 and lost[0] < restored[0], messages
    assert source.stats.reconnect_attempts >= 1
    assert [f.index for f in collector.frames] == list(range(len(collector.frames)))


@pytest.mark.slow
def test_rtsp_frozen_server_is_lost_within_timeout(rtsp_server,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="posestream.stream.sources")
    config = load_config(overrides=LIVE_CONFIG)
    read_timeout = config.source.read_timeout_s
    source = open_source(rtsp_server.url, config, name="cam")
    collector = Collector(source)
    try:
        assert wait_for(lambda: len(collector.frames) >= 5, 10)
        rtsp_server.freeze()
        frozen_at = time.monotonic()
        assert wait_for(lambda: source.stats.lost == 1, read_timeout + 3.0), "no loss reported"
        assert time.monotonic() - frozen_at <= read_timeout + 1.0
        assert any(m.startswith("source cam: lost (no data") for m in source_messages(caplog))
        rtsp_server.thaw()
        thawed_at = time.time()
        assert wait_for(lambda: len(collector.frames_after(thawed_at)) >= 3, 20), "no frames after thaw"
        assert source.stats.restored == 1
    finally:
        collector.stop()


@pytest.mark.slow
def test_rtsp_close_does_not_hang_on_a_frozen_server(rtsp_server) -> None:
    config = load_config(overrides=LIVE_CONFIG)
    source = open_source(rtsp_server.url, config)
    collector = Collector(source)
    assert wait_for(lambda: len(collector.frames) >= 3, 10)
    rtsp_server.freeze()
    time.sleep(0.5)
    started = time.monotonic()
    collector.stop()
    limit = config.source.connect_timeout_s + config.source.read_timeout_s + 1.5
    assert time.monotonic() - started < limit


@pytest.mark.slow
def test_rtsp_frozen_at_first_connect_is_a_timeout(rtsp_server) -> None:
    config = load_config(overrides=LIVE_CONFIG)
    rtsp_server.freeze()
    started = time.monotonic()
    with pytest.raises(SourceTimeoutError, match="no answer within"):
        open_source(rtsp_server.url, config)
    assert time.monotonic() - started < config.source.connect_timeout_s + 2.0


# ---------------------------------------------------------------- HTTP camera

@pytest.mark.slow
def test_http_mjpeg_camera_frames_arrive(mjpeg_server) -> None:
    with open_source(mjpeg_server.url, load_config(overrides=LIVE_CONFIG)) as source:
        assert (source.info.kind, source.info.live) == ("network", True)
        assert (source.info.width, source.info.height) == (320, 240)
        collector = Collector(source)
        assert wait_for(lambda: len(collector.frames) >= 6, 10), "fewer than 6 frames in 10 s"
        collector.stop()
    check_frames(collector.frames, 240, 320)
    expected = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in mjpeg_server.jpegs]
    for frame in collector.frames:
        # Each frame is one of the two served pictures, up to two JPEG decoders' rounding.
        assert min(cv2.absdiff(frame.image, e).mean() for e in expected) < 3.0


@pytest.mark.slow
@pytest.mark.parametrize("mjpeg_server", [{"frames_per_connection": 5}], indirect=True)
def test_http_camera_that_drops_the_connection_is_reconnected(mjpeg_server,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="posestream.stream.sources")
    source = open_source(mjpeg_server.url, load_config(overrides=LIVE_CONFIG), name="ipcam")
    collector = Collector(source)
    try:
        assert wait_for(lambda: source.stats.restored >= 2, 15), source.stats
        assert wait_for(lambda: len(collector.frames) >= 12, 10)
    finally:
        collector.stop()
    assert mjpeg_server.connections >= 3
    messages = source_messages(caplog)
    assert any(m.startswith("source ipcam: lost (") for m in messages)  # FFmpeg: EOF or I/O error
    assert any(m.startswith("source ipcam: restored") for m in messages)
    assert [f.index for f in collector.frames] == list(range(len(collector.frames)))


def test_image_cli_and_image_sources_list_a_folder_alike(tmp_path: Path) -> None:
    """One image listing: `posestream image DIR` and an image-folder source see the same files."""
    from posestream.stream.image_inference import expand_paths
    from posestream.stream.core.images import list_images
    from posestream.stream.sources.images import open_image_folder

    src = next(p for p in sorted(COCO_IMAGES.iterdir()) if is_image_path(p))
    for name in ("b.JPG", "a.png", "c.webp"):
        (tmp_path / name).write_bytes(src.read_bytes())
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "d.jpg").mkdir()  # a folder with an image-like name is not an image
    expected = [tmp_path / n for n in ("a.png", "b.JPG", "c.webp")]
    assert list_images(tmp_path) == expected
    assert expand_paths([tmp_path]) == expected
    with open_image_folder(tmp_path, None) as source:
        assert source.info.frame_count == len(expected)
