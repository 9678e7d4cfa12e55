"""`stream.client`: schema validation, gaps, restarts, malformed input and `latest` mode, driven
through real loopback sockets (a `ZmqSink`, or a raw PUB socket where the test needs bad bytes)."""
from __future__ import annotations

import copy
import json
import logging
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq

from posestream.plugins.sinks.zmq_sink import ZmqSink
from posestream.stream.client import Gap, Subscriber, to_poses
from posestream.stream.core.config import load_config
from posestream.stream.core.errors import ConfigError, InputError
from posestream.stream.core.results import FrameResult, Poses
from posestream.stream.core.wire import decode as decode_message, frame_message
from posestream.stream.core.wire import validate as validate_message

from message_edits import edited


@pytest.fixture(scope="module")
def persons(shared: Path) -> Poses:
    """The annotated persons of one real COCO image."""
    data = json.loads((shared / "data/coco/person_keypoints.json").read_text())
    anns = [a for a in data["annotations"] if a["image_id"] == 197388 and a["num_keypoints"]]
    return Poses(np.array([a["bbox"] for a in anns]), np.full(len(anns), 0.9),
                 np.array([a["keypoints"] for a in anns]).reshape(len(anns), 17, 3),
                 np.full(len(anns), 0.7), ids=np.arange(len(anns)))


def frame(persons: Poses, number: int, stream: str = "cam0") -> FrameResult:
    return FrameResult(stream, number, 640, 480, persons, pts=number / 25, capture_ts=time.time())


def sink(**overrides: object) -> ZmqSink:
    return ZmqSink(load_config(overrides={f"zmq.{k}": v for k, v in overrides.items()}),
                   "tcp://127.0.0.1:*")


# --- validation ---------------------------------------------------------------------------------

def _valid(persons: Poses) -> dict:
    return frame_message(frame(persons, 3), publish_ts=time.time())


def _set(path: tuple, value: object):
    return lambda message: edited(message, path, value)


@pytest.mark.parametrize("change, match", [
    (lambda m: m, None),
    (_set(("pts",), None), None),
    (_set(("persons",), []), None),
    (_set(("persons", 0, "id"), None), None),
    (lambda m: [m], "expected a map"),
    (_set(("v",), 3), "schema version 3 is not supported"),
    (_set(("type",), KeyError), None),  # a frame message may omit its type (all of v1 does)
    (_set(("type",), "frames"), "unknown message type 'frames'"),
    (_set(("v",), KeyError), "schema version None"),
    (_set(("stream",), ""), "'stream' must be a non-empty string"),
    (_set(("frame",), -1), "'frame' must be a non-negative integer"),
    (_set(("frame",), 1.0), "'frame' must be a non-negative integer"),
    (_set(("frame",), True), "'frame' must be a non-negative integer"),
    (_set(("capture_ts",), KeyError), "field 'capture_ts' is missing"),
    (_set(("publish_ts",), float("nan")), "'publish_ts' must be a number"),
    (_set(("width",), 0), "'width' must be a positive integer"),
    (_set(("format",), "coco18"), "'format' must be one of"),
    (_set(("persons",), {}), "'persons' must be a list"),
    (_set(("persons", 0), "x"), r"persons\[0\] must be a map"),
    (_set(("persons", 1, "score"), KeyError), r"persons\[1\] has no 'score'"),
    (_set(("persons", 0, "id"), -2), r"persons\[0\].id must be null or a non-negative integer"),
    (_set(("persons", 0, "box"), [1, 2, 3]), r"persons\[0\].box must be \[x, y, w, h\]"),
    (_set(("persons", 0, "box_score"), "high"), r"persons\[0\].box_score must be a number"),
    (_set(("persons", 0, "keypoints"), [[0, 0, 0]] * 16), "must hold 17"),
    (_set(("persons", 0, "keypoints", 5), [1, 2]), "not \\[x, y, score\\]"),
])
def test_validate_message(persons: Poses, change, match: str | None) -> None:
    message = change(copy.deepcopy(_valid(persons)))
    if match is None:
        assert validate_message(message) is message
    else:
        with pytest.raises(InputError, match=match):
            validate_message(message)


@pytest.mark.parametrize("topic, payload, match", [
    (b"cam0", b"\xc1garbage", "not msgpack"),
    (b"cam0", b"", "not msgpack"),
    (b"cam0", msgpack.packb({"v": 1}) + b"\x00", "not msgpack"),
    (b"cam0", msgpack.packb({1: 2}), "not msgpack"),
    (b"cam0", msgpack.packb(7), "expected a map"),
    (b"cam9", None, "topic b'cam9' differs"),
    (b"\x00heartbeat", None, "differs from the message's own b'cam0'"),
])
def test_decode_message_rejects(persons: Poses, topic: bytes, payload: bytes | None, match: str) -> None:
    payload = msgpack.packb(_valid(persons)) if payload is None else payload
    with pytest.raises(InputError, match=match):
        decode_message(topic, payload)


def test_decoded_message_round_trips_to_poses(persons: Poses) -> None:
    message = decode_message(b"cam0", msgpack.packb(_valid(persons)))
    poses = to_poses(message)
    np.testing.assert_allclose(poses.keypoints, persons.keypoints, atol=0.005)
    np.testing.assert_array_equal(poses.ids, persons.ids)


def test_bad_url_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="subscriber URL = 'http://x' is not a ZMQ endpoint"):
        Subscriber("http://x")


# --- over sockets -------------------------------------------------------------------------------

def test_garbage_on_the_topic_is_skipped_with_a_warning(persons: Poses,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    try:
        port = pub.bind_to_random_port("tcp://127.0.0.1")
        with Subscriber(f"tcp://127.0.0.1:{port}") as sub, caplog.at_level(logging.WARNING):
            good = msgpack.packb(_valid(persons))
            deadline = time.monotonic() + 10  # PUB has no subscription notices: probe until heard
            while sub.receive(0.05) is None and time.monotonic() < deadline:
                pub.send_multipart([b"cam0", good])
            while sub.receive(0.2) is not None:
                pass
            before = sub.stats.received
            for parts in ([b"cam0", b"\x00\xff garbage \x93"], [b"cam0", msgpack.packb({"v": 1})],
                          [b"cam0"], [b"cam0", good, b"extra"], [b"cam0", np.random.default_rng(0)
                                                                  .bytes(500)], [b"cam0", good]):
                pub.send_multipart(parts)
            message = sub.receive(5.0)
        assert message is not None and message["frame"] == 3
        assert sub.stats.malformed == 5 and sub.stats.received == before + 1
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert sum("skipped" in w for w in warnings) == 5
    finally:
        pub.close(linger=0)
        context.term()


def test_gaps_are_reported(persons: Poses, caplog: pytest.LogCaptureFixture) -> None:
    gaps: list[Gap] = []
    with sink() as pub, Subscriber(pub.bound_endpoint, on_gap=gaps.append) as sub, \
            caplog.at_level(logging.WARNING, logger="posestream.stream.client"):
        for number in (0, 1, 2, 5, 6, 9):
            pub.write(frame(persons, number), None)
            pub.write(frame(persons, number // 3, "other"), None)  # 0 0 0 1 2 3: no gap
        got = [(m["stream"], m["frame"]) for m in iter(lambda: sub.receive(2.0), None)]
    assert [f for s, f in got if s == "cam0"] == [0, 1, 2, 5, 6, 9]
    assert gaps == [Gap("cam0", 3, 4), Gap("cam0", 7, 8)] == sub.stats.gaps
    assert sub.stats.missing == 4 and sub.stats.restarts == 2  # "other" sends frame 0 three times
    assert "'cam0': 2 frame(s) missing (3..4)" in caplog.text


def test_a_new_epoch_is_a_restart_not_a_gap(persons: Poses) -> None:
    """A fleet camera that moved starts a new epoch; its numbers may continue above the old ones
    (frames lost before the subscriber saw them), which is still a restart, not a gap."""
    config = {"zmq.wait_for_subscriber_s": 10.0}
    first = ZmqSink(load_config(overrides={**config, "zmq.epoch": 7}), "tcp://127.0.0.1:*")
    endpoint = first.bound_endpoint
    with Subscriber(endpoint) as sub:
        with first:
            for number in (0, 1):
                first.write(frame(persons, number), None)
            got = [(m["epoch"], m["frame"]) for m in (sub.receive(5.0), sub.receive(5.0))]
        assert sub.receive(0.3) is None
        with ZmqSink(load_config(overrides={**config, "zmq.epoch": 8}), endpoint) as second:
            second.write(frame(persons, 4), None)
            got.append((lambda m: (m["epoch"], m["frame"]))(sub.receive(10.0)))
    assert got == [(7, 0), (7, 1), (8, 4)]
    assert sub.stats.restarts == 1 and sub.stats.gaps == []


@pytest.mark.parametrize("scheme", ["tcp", "ipc"])
def test_publisher_restart_reconnects_and_is_not_a_gap(persons: Poses, tmp_path: Path,
                                                       scheme: str) -> None:
    config = load_config(overrides={"zmq.wait_for_subscriber_s": 10.0})
    first = ZmqSink(config, "tcp://127.0.0.1:*" if scheme == "tcp" else f"ipc://{tmp_path}/s")
    endpoint = first.bound_endpoint
    with Subscriber(endpoint) as sub:
        with first:
            for number in range(5):
                first.write(frame(persons, number), None)
            got = [sub.receive(5.0)["frame"] for _ in range(5)]
        assert sub.receive(0.3) is None
        with ZmqSink(config, endpoint) as second:  # same endpoint, frame numbers start again
            for number in range(5):
                second.write(frame(persons, number), None)
            got += [sub.receive(10.0)["frame"] for _ in range(5)]
    assert got == [0, 1, 2, 3, 4] * 2
    assert sub.stats.restarts == 1 and sub.stats.gaps == []


def test_slow_subscriber_loses_frames_not_the_publisher(persons: Poses) -> None:
    total = 300
    published = threading.Event()
    with sink(hwm=1, sndbuf=4096) as pub, Subscriber(pub.bound_endpoint, rcvhwm=1, rcvbuf=4096) as sub:
        pub.write(frame(persons, 0), None)  # waits for the subscription

        def publish() -> None:
            for number in range(1, total):
                pub.write(frame(persons, number), None)
                time.sleep(0.005)
            published.set()

        thread = threading.Thread(target=publish)
        thread.start()
        frames, read_while_publishing = [], 0
        while True:
            message = sub.receive(1.0)
            if message is None:
                break
            frames.append(message["frame"])
            if not published.is_set():
                read_while_publishing = len(frames)
            time.sleep(0.1)  # a slow consumer
        thread.join()
    assert pub.sent == total and pub.dropped == 0
    assert read_while_publishing < total / 4  # the publisher did not wait for the reader
    assert frames == sorted(frames) and frames[0] == 0
    assert sub.stats.missing > 0 and len(frames) + sub.stats.missing == frames[-1] + 1


def _lag_of_slow_reader(persons: Poses, latest: bool, duration: float = 2.0) -> list[int]:
    """Publish at ~100 Hz for `duration` s while a reader sleeps 100 ms per message; for each
    received message, how many frames behind the newest published one it was."""
    newest = [0]
    stop = threading.Event()
    with sink() as pub, Subscriber(pub.bound_endpoint, conflate=latest) as sub:
        pub.write(frame(persons, 0), None)

        def publish() -> None:
            number = 0
            while not stop.is_set():
                number += 1
                pub.write(frame(persons, number), None)
                newest[0] = number
                time.sleep(0.01)

        thread = threading.Thread(target=publish)
        thread.start()
        lags = []
        try:
            end = time.monotonic() + duration
            while time.monotonic() < end:
                message = sub.receive(1.0)
                lags.append(newest[0] - message["frame"])
                time.sleep(0.1)
        finally:
            stop.set()
            thread.join()
    return lags


def test_latest_mode_gives_fresh_frames_to_a_slow_reader(persons: Poses) -> None:
    queued = _lag_of_slow_reader(persons, latest=False)
    fresh = _lag_of_slow_reader(persons, latest=True)
    assert queued[-1] > 50  # everything queues up: the reader falls further and further behind
    assert max(fresh[1:]) < 25  # only what arrived during the last read is passed over


def test_latest_mode_keeps_the_newest_frame_of_each_stream(persons: Poses) -> None:
    with sink() as pub, Subscriber(pub.bound_endpoint, conflate=True) as sub:
        pub.write(frame(persons, 0, "a"), None)
        assert sub.receive(5.0)["frame"] == 0
        for number in range(1, 100):
            pub.write(frame(persons, number, "a"), None)
            pub.write(frame(persons, number * 2, "b"), None)
        time.sleep(0.5)  # let everything arrive
        got = [(m["stream"], m["frame"]) for m in iter(lambda: sub.receive(0.5), None)]
    assert sorted(got) == [("a", 99), ("b", 198)]
    assert sub.stats.skipped == 98 * 2 and sub.stats.gaps == []


def test_latest_mode_end_message_does_not_displace_the_last_frame(persons: Poses) -> None:
    """The end message shares the stream's topic; in latest mode it must come after the stream's
    newest frame, not replace it."""
    with sink() as pub, Subscriber(pub.bound_endpoint, conflate=True, control=True) as sub:
        pub.write(frame(persons, 0, "a"), None)
        assert sub.receive(5.0)["frame"] == 0
        for number in range(1, 20):
            pub.write(frame(persons, number, "a"), None)
        pub.end_stream("a", 19)
        time.sleep(0.5)  # let everything arrive
        got = [(m.get("type", "frame"), m.get("frame", m.get("last_frame")))
               for m in iter(lambda: sub.receive(0.5), None) if m.get("type") != "heartbeat"]
    assert got == [("frame", 19), ("end", 19)]


# --- end of stream, heartbeats, dead publishers (schema v2) -------------------------------------

def _endpoint(scheme: str, tmp_path: Path) -> str:
    return "tcp://127.0.0.1:*" if scheme == "tcp" else f"ipc://{tmp_path}/pose.sock"


@pytest.mark.parametrize("scheme", ["tcp", "ipc"])
def test_end_of_stream_reveals_frames_lost_at_the_tail(persons: Poses, tmp_path: Path, scheme: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """The publisher skips frames 10..14 and then says the stream ended at 14: without the end
    message the subscriber could not tell that loss from a quiet stream."""
    gaps: list[Gap] = []
    config = load_config(overrides={"zmq.heartbeat_s": 0.1})
    with ZmqSink(config, _endpoint(scheme, tmp_path)) as pub, \
            Subscriber(pub.bound_endpoint, on_gap=gaps.append, control=True) as sub, \
            caplog.at_level(logging.WARNING, logger="posestream.stream.client"):
        for number in range(10):
            pub.write(frame(persons, number), None)
        pub.end_stream("cam0", 14)
        got = []
        while not sub.all_ended:
            message = sub.receive(5.0)
            assert message is not None
            got.append((message["type"], message.get("frame", message.get("last_frame"))))
    frames = [n for kind, n in got if kind == "frame"]
    assert frames == list(range(10)) and ("end", 14) in got
    assert gaps == [Gap("cam0", 10, 14, tail=True)]
    assert sub.stats.tail_missing == sub.stats.missing == 5 and sub.stats.ended == {"cam0": 14}
    assert any("its last 5 frame(s) never arrived (10..14)" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("scheme", ["tcp", "ipc"])
def test_tail_lost_to_a_full_queue_is_counted_from_the_heartbeat(persons: Poses, tmp_path: Path,
                                                                 scheme: str) -> None:
    """A subscriber that does not read while 300 frames go out loses the newest ones, and with them
    the end message; the heartbeat repeats which streams ended, so the tail loss is still found."""
    config = load_config(overrides={"zmq.heartbeat_s": 0.1, "zmq.hwm": 1, "zmq.sndbuf": 4096})
    total = 300
    with ZmqSink(config, _endpoint(scheme, tmp_path)) as pub, \
            Subscriber(pub.bound_endpoint, rcvhwm=1, rcvbuf=4096) as sub:
        pub.write(frame(persons, 0), None)
        assert sub.receive(10.0)["frame"] == 0
        for number in range(1, total):
            pub.write(frame(persons, number), None)
        pub.end_stream("cam0", total - 1)
        time.sleep(0.5)  # everything is out; the queues hold only a few old frames
        frames = [0]
        deadline = time.monotonic() + 10.0
        while not sub.all_ended and time.monotonic() < deadline:
            message = sub.receive(0.5)
            if message is not None:
                frames.append(message["frame"])
    stats = sub.stats
    assert stats.ended == {"cam0": total - 1}
    assert frames[-1] < total - 1 and stats.tail_missing == total - 1 - frames[-1]
    assert len(frames) + stats.missing == total  # every frame is either received or counted lost


@pytest.mark.parametrize("scheme", ["tcp", "ipc"])
def test_quiet_stream_is_alive_and_a_silent_publisher_is_dead(persons: Poses, tmp_path: Path,
                                                             scheme: str,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    config = load_config(overrides={"zmq.heartbeat_s": 0.05})
    pub = ZmqSink(config, _endpoint(scheme, tmp_path), streams=["cam0"])
    try:
        with Subscriber(pub.bound_endpoint, dead_after=3) as sub, \
                caplog.at_level(logging.WARNING, logger="posestream.stream.client"):
            pub.write(frame(persons, 0), None)
            assert sub.receive(10.0)["frame"] == 0
            assert sub.receive(0.6) is None  # no frame flows, but heartbeats do
            assert sub.stats.heartbeats >= 5 and not sub.stats.publisher_dead
            assert sub.stats.publisher == pub.publisher_id and not sub.all_ended
            pub.close()  # the publisher goes away without ending its stream
            assert sub.receive(1.0) is None
            assert sub.stats.publisher_dead and sub.stats.dead_events == 1
            assert sub.stats.ended == {}  # dead, not ended: the two are told apart
        assert any(f"publisher {pub.publisher_id}" in r.getMessage() and "is dead" in r.getMessage()
                   for r in caplog.records)
    finally:
        pub.close()


def test_control_messages_are_surfaced_on_request(persons: Poses, tmp_path: Path) -> None:
    config = load_config(overrides={"zmq.heartbeat_s": 0.05})
    with ZmqSink(config, _endpoint("ipc", tmp_path), streams=["cam0", "cam1"]) as pub, \
            Subscriber(pub.bound_endpoint, topics=["cam0"], control=True) as sub:
        pub.write(frame(persons, 0), None)
        beats = []
        deadline = time.monotonic() + 5.0
        while len(beats) < 3 and time.monotonic() < deadline:
            message = sub.receive(1.0)
            if message is not None and message["type"] == "heartbeat":
                beats.append(message)
    assert [b["seq"] for b in beats] == sorted(b["seq"] for b in beats)
    assert beats[-1]["streams"] == ["cam0", "cam1"] and beats[-1]["ended"] == {}
    assert beats[-1]["interval_s"] == 0.05 and beats[-1]["started"] <= beats[-1]["publish_ts"]


def test_v1_frames_are_still_accepted_and_no_heartbeat_means_no_verdict(persons: Poses) -> None:
    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    try:
        port = pub.bind_to_random_port("tcp://127.0.0.1")
        with Subscriber(f"tcp://127.0.0.1:{port}", dead_after=1) as sub:
            v1 = {k: v for k, v in frame_message(frame(persons, 0), time.time()).items()
                  if k != "type"}
            v1["v"] = 1
            deadline = time.monotonic() + 10
            message = None
            while message is None and time.monotonic() < deadline:  # slow joiner: resend
                pub.send_multipart([b"cam0", msgpack.packb(v1)])
                message = sub.receive(0.1)
            assert message == v1
            assert sub.stats.heartbeats == 0 and not sub.stats.publisher_dead
    finally:
        pub.close(linger=0)
        context.term()
