"""The aggregator on real ZMQ sockets (loopback), without Ray: two camera publishers in, one stream
out; CURVE camera streams (only the trusted key gets through) and epoch fencing."""
from __future__ import annotations

import socket
import time
from typing import Any

import numpy as np
import pytest
import zmq

from posestream.stream import curve_keys
from posestream.stream.core import wire
from posestream.stream.core.config import load_config
from posestream.stream.core.errors import ConfigError
from posestream.stream.core.results import FrameResult, Poses
from posestream.stream.core.settings import ZmqSettings
from posestream.stream.fleet.aggregator import Aggregator
from posestream.stream.fleet.status import CameraStatus


def zmq_settings(**changes: Any) -> ZmqSettings:
    return load_config().zmq.with_values(**{"hwm": 1000, "linger_ms": 0, **changes})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def frame(stream: str, number: int, latency_s: float, epoch: int | None = None) -> dict[str, Any]:
    poses = Poses(np.array([[10.0, 20.0, 30.0, 40.0]]), np.array([0.9]),
                  np.ones((1, 17, 3)), np.array([0.8]), np.array([3]), "coco17")
    result = FrameResult(stream=stream, frame=number, pts=None, capture_ts=time.time() - latency_s,
                         width=640, height=360, poses=poses)
    return wire.frame_message(result, publish_ts=time.time(), epoch=epoch)


def receive(sub: zmq.Socket, seconds: float) -> list[dict[str, Any]]:
    out, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        if sub.poll(50):
            out.append(wire.decode(*sub.recv_multipart()))
    return out


@pytest.fixture
def rig() -> Any:
    publish = f"tcp://127.0.0.1:{free_port()}"
    aggregator = Aggregator(publish, zmq_settings(heartbeat_s=0.2), window_s=10.0)
    aggregator.start()
    context = zmq.Context()
    cameras = {}
    for name in ("door", "yard"):
        pub = context.socket(zmq.PUB)
        port = pub.bind_to_random_port("tcp://127.0.0.1")
        aggregator.set_endpoint(name, f"tcp://127.0.0.1:{port}")
        cameras[name] = pub
    sub = context.socket(zmq.SUB)
    sub.subscribe(b"")
    sub.connect(publish)
    time.sleep(0.5)  # both sides connected (slow joiner)
    yield aggregator, cameras, sub
    aggregator.close(0)
    for sock in (*cameras.values(), sub):
        sock.close(0)
    context.term()


def test_frames_renamed_to_their_camera_and_measured(rig: Any) -> None:
    aggregator, cameras, sub = rig
    for number in range(10):  # both pipelines call their stream "lavfi"; the socket tells them apart
        cameras["door"].send_multipart(wire.encode(frame("lavfi", number, 0.05)))
        cameras["yard"].send_multipart(wire.encode(frame("lavfi", number, 0.2)))
        time.sleep(0.05)
    got = receive(sub, 1.0)
    frames = [m for m in got if wire.message_type(m) == "frame"]
    assert sorted({m["stream"] for m in frames}) == ["door", "yard"]
    assert [m["frame"] for m in frames if m["stream"] == "door"] == list(range(10))
    fps, p99, age = aggregator.figures("door", time.time())
    # Bounds that hold on a loaded machine: 10 frames 50 ms apart (sleeps only stretch, so at most
    # ~22 fps); latency = arrival - capture is at least what each camera's frames carried (50 vs
    # 200 ms), and a delivery delay only adds to it; the upper bound catches a unit mix-up.
    assert 0 < fps < 40 and age is not None and 0 <= age < 60
    assert 45 < p99 < 5000 and 195 < aggregator.figures("yard", time.time())[1] < 5000


def test_camera_heartbeats_stay_inside_and_the_aggregator_beats_for_all(rig: Any) -> None:
    aggregator, cameras, sub = rig
    beat = wire.heartbeat_message("pipeline-1", time.time(), 0, time.time(), 1.0, ["lavfi"], {})
    cameras["door"].send_multipart(wire.encode(beat))
    beats = [m for m in receive(sub, 0.8) if wire.message_type(m) == "heartbeat"]
    assert beats and {m["publisher"] for m in beats} == {aggregator.publisher_id}
    assert sorted(beats[-1]["streams"]) == ["door", "yard"]


def test_end_is_a_restart_while_running_and_forwarded_while_stopping(rig: Any) -> None:
    aggregator, cameras, sub = rig
    end = wire.end_message("lavfi", 41, time.time(), "pipeline-1")
    cameras["door"].send_multipart(wire.encode(end))
    assert not [m for m in receive(sub, 0.5) if wire.message_type(m) == "end"]
    aggregator.forward_ends = True
    cameras["door"].send_multipart(wire.encode(end))
    got = receive(sub, 0.8)
    assert [(m["stream"], m["last_frame"]) for m in got if wire.message_type(m) == "end"] == [("door", 41)]
    assert [m for m in got if wire.message_type(m) == "heartbeat"][-1]["ended"] == {"door": 41}


def test_status_and_malformed_messages(rig: Any) -> None:
    aggregator, cameras, sub = rig
    cameras["yard"].send_multipart([b"lavfi", b"\xc1 not msgpack"])
    aggregator.publish_status([CameraStatus("door", "10.0.0.5", "running", 5.0, 80.0, 0.1, 0)])
    status = [m for m in receive(sub, 0.8) if wire.message_type(m) == "status"]
    assert status and status[0]["cameras"][0]["name"] == "door"
    assert aggregator.malformed == 1


def test_publish_address_in_use_is_one_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"tcp://127.0.0.1:{busy.getsockname()[1]}"
        with pytest.raises(ConfigError, match=f"fleet.publish: cannot bind {address}"):
            Aggregator(address, zmq_settings(), 10.0).start()


def test_epochs_fence_stale_and_repeated_frames(rig: Any) -> None:
    """A newer epoch starts a camera's numbering again; frames of an older epoch (a stale
    incarnation) and repeated numbers are dropped and counted, so subscribers never see them."""
    aggregator, cameras, sub = rig
    sent = [(5, 0), (5, 1), (5, 1), (9, 0), (5, 2), (9, 1), (9, 0), (9, 2)]  # (epoch, frame)
    for epoch, number in sent:
        cameras["door"].send_multipart(wire.encode(frame("lavfi", number, 0.05, epoch=epoch)))
        time.sleep(0.02)
    got = [(m["epoch"], m["frame"]) for m in receive(sub, 1.0) if wire.message_type(m) == "frame"]
    assert got == [(5, 0), (5, 1), (9, 0), (9, 1), (9, 2)]
    assert aggregator.dropped("door") == 3


def test_curve_camera_streams_only_the_trusted_key_gets_through(tmp_path: Any) -> None:
    """The aggregator reads a CURVE camera stream only with the server key it was given: a
    publisher with another key (a stale or rogue incarnation) never delivers a frame and shows up
    as failed handshakes; a camera that admits only other clients delivers nothing either."""
    client, camera, rogue = (curve_keys.new_key_pair() for _ in range(3))
    publish = f"tcp://127.0.0.1:{free_port()}"
    aggregator = Aggregator(publish, zmq_settings(heartbeat_s=0.2), 10.0, client=client)
    aggregator.start()
    context = zmq.Context()
    auths, pubs, contexts = [], {}, []
    for name, server, admits in (("good", camera, client), ("rogue", rogue, client),
                                 ("closed", camera, rogue)):
        contexts.append(zmq.Context())  # one ZAP handler per context: one context per camera
        auths.append(curve_keys.start_authenticator(contexts[-1], frozenset([admits.public])))
        pub = contexts[-1].socket(zmq.PUB)
        curve_keys.configure_server(pub, server)
        port = pub.bind_to_random_port("tcp://127.0.0.1")
        # "rogue" sits where the aggregator expects the camera's own key
        aggregator.set_endpoint(name, f"tcp://127.0.0.1:{port}", camera.public)
        pubs[name] = pub
    sub = context.socket(zmq.SUB)
    sub.subscribe(b"")
    sub.connect(publish)
    try:
        time.sleep(1.5)
        for number in range(5):
            for pub in pubs.values():
                pub.send_multipart(wire.encode(frame("lavfi", number, 0.05, epoch=1)))
            time.sleep(0.05)
        streams = [m["stream"] for m in receive(sub, 1.0) if wire.message_type(m) == "frame"]
        assert streams == ["good"] * 5
        assert aggregator.handshake_failures("rogue") >= 1
        assert aggregator.handshake_failures("closed") >= 1
        assert aggregator.handshake_failures("good") == 0
        with pytest.raises(ConfigError, match="needs the camera's server key"):
            aggregator.set_endpoint("good", "tcp://127.0.0.1:1")
    finally:
        aggregator.close(0)
        for sock in (*pubs.values(), sub):
            sock.close(0)
        for auth in auths:
            auth.stop()
        for ctx in (*contexts, context):
            ctx.term()


def test_aggregated_stream_keeps_the_zmq_curve_options(tmp_path: Any) -> None:
    """`[zmq]` curve/server_secret_key/allowed_clients protect the aggregated stream: an allowed
    subscriber receives its heartbeats, a plain one nothing."""
    curve_keys.generate_key_pair(tmp_path, "server")
    curve_keys.generate_key_pair(tmp_path / "clients", "viewer")
    publish = f"tcp://127.0.0.1:{free_port()}"
    settings = zmq_settings(heartbeat_s=0.1, curve=True, server_secret_key=str(tmp_path / "server.key_secret"),
                            allowed_clients=str(tmp_path / "clients"))
    aggregator = Aggregator(publish, settings, 10.0)
    aggregator.start()
    context = zmq.Context()
    viewer, plain = context.socket(zmq.SUB), context.socket(zmq.SUB)
    curve_keys.configure_client(viewer, curve_keys.ClientCurve.from_files(
        tmp_path / "clients" / "viewer.key_secret", tmp_path / "server.key"))
    try:
        for sock in (viewer, plain):
            sock.subscribe(b"")
            sock.connect(publish)
        assert [m for m in receive(viewer, 1.0) if wire.message_type(m) == "heartbeat"]
        assert receive(plain, 0.5) == []
    finally:
        aggregator.close(0)
        viewer.close(0)
        plain.close(0)
        context.term()
