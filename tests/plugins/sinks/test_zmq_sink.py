"""ZMQ sink over real loopback sockets (tcp and ipc), with real persons from the COCO annotations."""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from posestream.benchmarks.clips import looped_clip
from posestream.plugins.sinks.zmq_sink import ZmqSink
from posestream.stream.client import Subscriber
from posestream.stream.core.config import load_config
from posestream.stream.curve_keys import generate_key_pair
from posestream.stream.core.errors import ConfigError, InputError, InputNotFoundError, StageError
from posestream.stream.core.results import FrameResult, Poses
from posestream.stream.core.settings import Settings
from posestream.stream.core.wire import frame_message


def coco_frames(shared: Path, stream: str = "cam0", repeat: int = 1) -> list[FrameResult]:
    """One frame per annotated COCO image (its annotated persons as poses), `repeat` times over."""
    data = json.loads((shared / "data/coco/person_keypoints.json").read_text())
    frames = []
    for image in data["images"] * repeat:
        anns = [a for a in data["annotations"] if a["image_id"] == image["id"] and a["num_keypoints"]]
        poses = Poses(np.array([a["bbox"] for a in anns]), np.linspace(0.9, 0.5, len(anns)),
                      np.array([a["keypoints"] for a in anns]).reshape(len(anns), 17, 3),
                      np.linspace(0.8, 0.4, len(anns)), ids=np.arange(1, len(anns) + 1))
        frames.append(FrameResult(stream, len(frames), image["width"], image["height"], poses,
                                  pts=len(frames) / 30, capture_ts=time.time()))
    return frames


def receive_all(sub: Subscriber, count: int, timeout: float = 10.0) -> list[dict]:
    got = []
    while len(got) < count:
        message = sub.receive(timeout)
        if message is None:
            break
        got.append(message)
    return got


def without_publish_ts(message: dict) -> dict:
    return {k: v for k, v in message.items() if k != "publish_ts"}


@pytest.mark.parametrize("scheme", ["tcp", "ipc"])
def test_subscriber_connected_before_first_frame_gets_every_frame(shared: Path, tmp_path: Path,
                                                                   scheme: str) -> None:
    frames = coco_frames(shared, repeat=9)  # 72 frames
    target = "tcp://127.0.0.1:*" if scheme == "tcp" else f"ipc://{tmp_path}/pose.sock"
    with ZmqSink(load_config(), target) as sink:
        # No sleep: the sink's first write waits for this subscription (slow joiner).
        with Subscriber(sink.bound_endpoint) as sub:
            for result in frames:
                sink.write(result, None)
            got = receive_all(sub, len(frames))
    assert sink.sent == len(frames) and sink.dropped == 0
    assert [m["frame"] for m in got] == list(range(len(frames)))
    for result, message in zip(frames, got):
        assert without_publish_ts(message) == without_publish_ts(frame_message(result, 0.0))
        np.testing.assert_allclose(np.array([p["keypoints"] for p in message["persons"]]),
                                   result.poses.keypoints, atol=0.005)
        assert message["publish_ts"] >= result.capture_ts
    assert sub.stats.gaps == []


def test_topic_is_the_stream_name(shared: Path) -> None:
    a, b = coco_frames(shared, "cam1")[:3], coco_frames(shared, "cam10")[:3]
    with ZmqSink(load_config(), "tcp://127.0.0.1:*") as sink, \
            Subscriber(sink.bound_endpoint, topics=["cam1"]) as sub:
        for x, y in zip(a, b):
            sink.write(x, None)
            sink.write(y, None)
        got = receive_all(sub, 3)
        assert sub.receive(0.3) is None  # "cam10" starts with "cam1" but is another stream
    assert [(m["stream"], m["frame"]) for m in got] == [("cam1", 0), ("cam1", 1), ("cam1", 2)]


def test_without_subscriber_first_write_waits_at_most_the_configured_time(shared: Path) -> None:
    frames = coco_frames(shared)
    config = load_config(overrides={"zmq.wait_for_subscriber_s": 0.3})
    with ZmqSink(config, "tcp://127.0.0.1:*") as sink:
        start = time.monotonic()
        sink.write(frames[0], None)
        first = time.monotonic() - start
        for result in frames[1:]:
            sink.write(result, None)
        rest = time.monotonic() - start - first
    assert 0.2 <= first < 5.0
    assert rest < first  # the wait happens once, not per frame
    assert sink.sent == len(frames)


def test_subscriber_that_never_reads_does_not_block_publishing(shared: Path) -> None:
    frames = coco_frames(shared, repeat=250)  # 2000 frames, ~3.5 MB
    config = load_config(overrides={"zmq.hwm": 1, "zmq.sndbuf": 4096})
    with ZmqSink(config, "tcp://127.0.0.1:*") as sink, \
            Subscriber(sink.bound_endpoint, rcvhwm=1, rcvbuf=4096) as sub:
        for result in frames:
            sink.write(result, None)
        got = receive_all(sub, len(frames), timeout=1.0)
    assert sink.sent == len(frames) and sink.dropped == 0
    assert 0 < len(got) < len(frames)  # the subscriber lost frames, the publisher lost none
    assert sub.stats.missing > 0 and len(got) + sub.stats.missing == got[-1]["frame"] + 1


def test_close_is_safe_twice_and_write_after_close_is_an_error(shared: Path) -> None:
    sink = ZmqSink(load_config(overrides={"zmq.wait_for_subscriber_s": 0.0}), "tcp://127.0.0.1:*")
    sink.write(coco_frames(shared)[0], None)
    sink.close()
    sink.close()
    with pytest.raises(StageError, match="write after close"):
        sink.write(coco_frames(shared)[0], None)


def test_endpoint_in_use_is_one_clear_error() -> None:
    with ZmqSink(load_config(), "tcp://127.0.0.1:*") as first:
        with pytest.raises(ConfigError, match=f"cannot bind {first.bound_endpoint}"):
            ZmqSink(load_config(), first.bound_endpoint)


def test_numpy_scalars_in_a_result_are_published_as_numbers(shared: Path) -> None:
    result = coco_frames(shared)[0]
    result.pts = np.float32(1.5)
    result.capture_ts = np.float64(123.25)
    with ZmqSink(load_config(), "tcp://127.0.0.1:*") as sink, Subscriber(sink.bound_endpoint) as sub:
        sink.write(result, None)
        message = sub.receive(10.0)
    assert message["pts"] == 1.5 and message["capture_ts"] == 123.25


@pytest.mark.parametrize("target, overrides, error, match", [
    ("udp://127.0.0.1:5555", {}, ConfigError, "zmq sink target .* is not a ZMQ endpoint"),
    ("tcp://127.0.0.1", {}, ConfigError, "not a ZMQ endpoint"),
    ("tcp://127.0.0.1:70000", {}, ConfigError, "not a ZMQ endpoint"),
    ("ipc://", {}, ConfigError, "not a ZMQ endpoint"),
    ("", {"zmq.endpoint": "127.0.0.1:5555"}, ConfigError, "zmq.endpoint = '127.0.0.1:5555'"),
    ("tcp://127.0.0.1:*", {"zmq.hwm": 0}, ConfigError, r"zmq.hwm.*\[1, 1000000\]"),
    ("tcp://127.0.0.1:*", {"zmq.linger_ms": -1}, ConfigError, "zmq.linger_ms"),
    ("tcp://127.0.0.1:*", {"zmq.wait_for_subscriber_s": -0.5}, ConfigError, "wait_for_subscriber_s"),
    ("tcp://127.0.0.1:*", {"zmq.curve": True}, ConfigError, "needs zmq.server_secret_key"),
    ("tcp://127.0.0.1:*", {"zmq.curve": True, "zmq.server_secret_key": "/nonexistent/s.key_secret",
                           "zmq.allowed_clients": "/nonexistent"}, InputNotFoundError, "not found"),
    ("ipc:///nonexistent-dir/x/pose.sock", {}, ConfigError, "cannot bind"),
])
def test_bad_settings_are_one_clear_error(target: str, overrides: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        ZmqSink(load_config(overrides=overrides), target)


@pytest.mark.parametrize("target, warns", [
    ("tcp://127.0.0.1:*", False), ("tcp://localhost:*", False), ("ipc://{tmp}/s.sock", False),
    ("tcp://*:*", True), ("tcp://0.0.0.0:*", True),
])
def test_non_loopback_bind_without_curve_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                               target: str, warns: bool) -> None:
    with caplog.at_level(logging.WARNING, logger="posestream.plugins.sinks.zmq_sink"):
        ZmqSink(load_config(), target.format(tmp=tmp_path)).close()
    assert any("without CURVE" in r.getMessage() for r in caplog.records) == warns


@pytest.fixture
def curve_setup(tmp_path: Path) -> dict[str, Path]:
    generate_key_pair(tmp_path / "server", "server")
    generate_key_pair(tmp_path / "allowed", "alice")
    generate_key_pair(tmp_path / "allowed", "bob")
    generate_key_pair(tmp_path / "others", "mallory")
    return {"server_secret": tmp_path / "server/server.key_secret",
            "server_public": tmp_path / "server/server.key", "allowed": tmp_path / "allowed",
            "alice": tmp_path / "allowed/alice.key_secret", "bob": tmp_path / "allowed/bob.key_secret",
            "mallory": tmp_path / "others/mallory.key_secret"}


@pytest.mark.parametrize("allow", ["directory", "single file"])
def test_curve_admits_only_allowed_clients(shared: Path, curve_setup: dict[str, Path],
                                           caplog: pytest.LogCaptureFixture, allow: str) -> None:
    keys = curve_setup
    allowed = keys["allowed"] if allow == "directory" else keys["allowed"] / "alice.key"
    config = load_config(overrides={"zmq.curve": True, "zmq.server_secret_key": str(keys["server_secret"]),
                                    "zmq.allowed_clients": str(allowed)})
    frames = coco_frames(shared)
    with caplog.at_level(logging.WARNING), ZmqSink(config, "tcp://0.0.0.0:*") as sink:
        url = sink.bound_endpoint.replace("0.0.0.0", "127.0.0.1")
        alice = Subscriber(url, curve=(keys["alice"], keys["server_public"]))
        bob = Subscriber(url, curve=(keys["bob"], keys["server_public"]))
        mallory = Subscriber(url, curve=(keys["mallory"], keys["server_public"]))
        plain = Subscriber(url)
        try:
            time.sleep(0.5)  # let every client finish (or fail) its handshake
            for result in frames:
                sink.write(result, None)
            assert [m["frame"] for m in receive_all(alice, len(frames))] == list(range(len(frames)))
            bob_got = receive_all(bob, len(frames), timeout=1.0)
            assert mallory.receive(1.0) is None
            assert plain.receive(0.2) is None
        finally:
            for sub in (alice, bob, mallory, plain):
                sub.close()
    assert len(bob_got) == (len(frames) if allow == "directory" else 0)
    assert not any("without CURVE" in r.getMessage() for r in caplog.records)  # CURVE is on
    assert any("refused a client" in r.getMessage() for r in caplog.records)


def test_curve_key_files_are_checked(curve_setup: dict[str, Path], tmp_path: Path) -> None:
    keys = curve_setup
    public_only = {"zmq.curve": True, "zmq.server_secret_key": str(keys["server_public"]),
                   "zmq.allowed_clients": str(keys["allowed"])}
    with pytest.raises(InputError, match="holds only a public key"):
        ZmqSink(load_config(overrides=public_only), "tcp://127.0.0.1:*")
    (tmp_path / "empty").mkdir()
    no_clients = {**public_only, "zmq.server_secret_key": str(keys["server_secret"]),
                  "zmq.allowed_clients": str(tmp_path / "empty")}
    with pytest.raises(InputError, match=r"no \*.key files"):
        ZmqSink(load_config(overrides=no_clients), "tcp://127.0.0.1:*")
    (tmp_path / "junk.key").write_text("not a key\n")
    junk = {**no_clients, "zmq.allowed_clients": str(tmp_path / "junk.key")}
    with pytest.raises(InputError, match="not a CURVE key file"):
        ZmqSink(load_config(overrides=junk), "tcp://127.0.0.1:*")
    with pytest.raises(InputError, match="already exists"):
        generate_key_pair(tmp_path / "server", "server")
    assert (keys["server_secret"].stat().st_mode & 0o777) == 0o600


# --- through the real multi-process pipeline -----------------------------------------------------

VIDEO_72 = "data/video/two_person_interaction_72f.mp4"


def _free_tcp_endpoint() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


def _pipeline_config(config: Settings, **zmq: object) -> Settings:
    return config.with_overrides({"detector.input_size": 320,  # fast enough for a test on a shared CPU
                                  "zmq": zmq})


@pytest.mark.slow
def test_pipeline_publishes_every_frame_on_tcp_and_ipc_like_the_json_sink(
        shared: Path, config: Settings, tmp_path: Path) -> None:
    from posestream.plugins.sinks.json_sink import read_alphapose_json
    from posestream.stream.pipeline import Pipeline

    tcp, ipc = _free_tcp_endpoint(), f"ipc://{tmp_path}/pose.sock"
    with Subscriber(tcp) as over_tcp, Subscriber(ipc) as over_ipc:  # connected before frame 0
        with Pipeline(_pipeline_config(config), [str(shared / VIDEO_72)],
                      [f"zmq:{tcp}", f"zmq:{ipc}", f"json:{tmp_path / 'out.json'}"]) as pipeline:
            report = pipeline.run()
        assert report.status == "completed"
        received = {name: receive_all(sub, 72, timeout=5.0)
                    for name, sub in (("tcp", over_tcp), ("ipc", over_ipc))}
    by_frame: dict[int, list[dict]] = {}
    for entry in read_alphapose_json(tmp_path / "out.json"):
        by_frame.setdefault(int(entry["image_id"].split(".")[0]), []).append(entry)
    assert sum(len(v) for v in by_frame.values()) > 72  # two people in most frames
    for name, messages in received.items():
        assert [m["frame"] for m in messages] == list(range(72)), name
        for message in messages:
            from_json = [(e["idx"], e["keypoints"]) for e in by_frame.get(message["frame"], [])]
            from_zmq = [(p["id"], [v for kp in p["keypoints"] for v in kp])
                        for p in message["persons"]]
            assert from_zmq == from_json, (name, message["frame"])


@pytest.mark.slow
def test_pipeline_with_slow_subscribers_loses_their_frames_not_its_own(
        shared: Path, config: Settings, tmp_path: Path) -> None:
    from posestream.stream.pipeline import Pipeline

    endpoint = f"ipc://{tmp_path}/pose.sock"
    video, total = looped_clip(shared / VIDEO_72, 216, tmp_path / "long.mp4")  # 3x the clip
    results: dict[str, list[int]] = {"queued": [], "latest": []}
    # Only `queued` is connected when the run starts, so the sink's slow-joiner wait (for a first
    # subscription) guarantees it frame 0; `latest` joins once frames flow.
    subs = {"queued": Subscriber(endpoint, rcvhwm=1, rcvbuf=4096)}
    done, flowing = threading.Event(), threading.Event()

    def stall_until_published(frame: int) -> None:
        """Stop reading until the publisher has sent `frame` (watched through a subscriber that
        keeps up): far more messages than a one-message queue and small buffers hold are lost."""
        with Subscriber(endpoint) as observer:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not done.is_set():
                seen = observer.receive(0.5)
                if seen is not None and seen["frame"] >= frame:
                    return

    def read(name: str) -> None:
        """`queued` stalls after its first frame for 100 frames of the run, then catches up, so the
        frames after its loss reach it while the run goes on and reveal the gap, however fast or
        loaded the machine is. `latest` needs 0.5 s per frame throughout. After the run both drain
        what is still queued."""
        if name == "latest":
            while not flowing.wait(0.2):
                if done.is_set():
                    return
            subs[name] = Subscriber(endpoint, conflate=True)
        while True:
            message = subs[name].receive(0.5)
            if message is None:
                if done.is_set():
                    return
                continue
            results[name].append(message["frame"])
            if name == "latest":
                time.sleep(0.5)
            elif len(results[name]) == 1:
                flowing.set()
                stall_until_published(message["frame"] + 100)

    readers = [threading.Thread(target=read, args=(name,)) for name in ("queued", "latest")]
    try:
        for reader in readers:
            reader.start()
        with Pipeline(_pipeline_config(config, hwm=1, sndbuf=4096), [str(video)],
                      [f"zmq:{endpoint}"]) as pipeline:
            report = pipeline.run()
    finally:
        done.set()
        for reader in readers:
            reader.join()
        for sub in subs.values():
            sub.close()
    assert report.status == "completed"
    assert report.streams["long"]["frames_out"] == total
    queued, latest = subs["queued"].stats, subs["latest"].stats
    assert queued.missing > 0 and queued.gaps  # the slow consumer is told what it lost
    assert len(results["queued"]) + queued.missing == results["queued"][-1] + 1
    # `latest` stays current to the end: with the publisher's one-message queue (hwm=1) the very
    # last frames may be dropped for it as for anyone slow, so "current" is within a few frames.
    assert results["latest"] == sorted(results["latest"]) and results["latest"][-1] >= total - 4
    assert latest.skipped > 0 and latest.gaps == []


@pytest.mark.parametrize("scheme", ["tcp", "ipc"])
def test_heartbeats_interleave_with_a_flood_of_frames(shared: Path, tmp_path: Path,
                                                      scheme: str) -> None:
    """The heartbeat thread and the writer share one socket (under a lock): with a heartbeat every
    10 ms during 1000 writes, every frame and every heartbeat arrives whole and in order."""
    frames = coco_frames(shared, repeat=125)  # 1000 frames
    target = "tcp://127.0.0.1:*" if scheme == "tcp" else f"ipc://{tmp_path}/pose.sock"
    config = load_config(overrides={"zmq.heartbeat_s": 0.01, "zmq.hwm": 100_000})
    with ZmqSink(config, target, streams=["cam0"]) as sink, \
            Subscriber(sink.bound_endpoint, rcvhwm=100_000, control=True) as sub:
        for result in frames:
            sink.write(result, None)
            if result.frame % 100 == 0:
                time.sleep(0.02)  # let heartbeats fall between frames
        sink.end_stream("cam0", len(frames) - 1)
        got = []
        while not sub.all_ended:
            message = sub.receive(10.0)
            assert message is not None
            got.append(message)
    beats = [m["seq"] for m in got if m["type"] == "heartbeat"]
    assert [m["frame"] for m in got if m["type"] == "frame"] == list(range(len(frames)))
    assert len(beats) >= 10 and beats == sorted(beats)
    assert sub.stats.malformed == 0 and sub.stats.missing == 0 and sub.stats.ended == {"cam0": 999}
