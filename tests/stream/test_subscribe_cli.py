"""`posestream subscribe` and `posestream keys` as real processes on real loopback sockets."""
from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq

from posestream.plugins.sinks.zmq_sink import ZmqSink
from posestream.cli import main
from posestream.stream.core.config import load_config
from posestream.stream.curve_keys import load_key_pair, load_public_key
from posestream.stream.core.results import FrameResult, Poses
from posestream.stream.core.wire import frame_message

SUMMARY = re.compile(r"^(\w+) #(\d+) (\d+) persons? ids ([\d,-]+) age \d+\.\d ms$")


@pytest.fixture(scope="module")
def frames(shared: Path) -> list[FrameResult]:
    """Eight frames, each holding the annotated persons of one real COCO image."""
    data = json.loads((shared / "data/coco/person_keypoints.json").read_text())
    result = []
    for image in data["images"]:
        anns = [a for a in data["annotations"] if a["image_id"] == image["id"] and a["num_keypoints"]]
        poses = Poses(np.array([a["bbox"] for a in anns]), np.full(len(anns), 0.9),
                      np.array([a["keypoints"] for a in anns]).reshape(len(anns), 17, 3),
                      np.full(len(anns), 0.8), ids=np.arange(1, len(anns) + 1))
        result.append(FrameResult("cam0", len(result), image["width"], image["height"], poses,
                                  capture_ts=time.time()))
    return result


def start_subscribe(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "posestream", "subscribe", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def finish(process: subprocess.Popen) -> tuple[int, list[str], str]:
    try:
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, out.splitlines(), err


def sink(**overrides: object) -> ZmqSink:
    # The subscriber is a fresh Python process: give it time to start and subscribe.
    settings = {"zmq.wait_for_subscriber_s": 30.0, **{f"zmq.{k}": v for k, v in overrides.items()}}
    return ZmqSink(load_config(overrides=settings), "tcp://127.0.0.1:*")


def test_json_lines_carry_every_frame(frames: list[FrameResult]) -> None:
    with sink() as pub:
        process = start_subscribe(pub.bound_endpoint, "--json", "--count", str(len(frames)),
                                  "--timeout", "30")
        for result in frames:
            pub.write(result, None)
        code, lines, err = finish(process)
    assert code == 0, err
    messages = [json.loads(line) for line in lines]
    assert len(messages) == len(frames)
    for result, message in zip(frames, messages):
        expected = frame_message(result, publish_ts=message["publish_ts"])
        assert message == json.loads(json.dumps(expected))
    assert f"{len(frames)} frames received, 0 missing in 0 gaps" in err


def test_summary_lines_and_topic_filter(frames: list[FrameResult]) -> None:
    with sink() as pub:
        process = start_subscribe(pub.bound_endpoint, "--topic", "cam1", "--count", "3",
                                  "--timeout", "30")
        for result in frames[:3]:
            pub.write(result, None)
            pub.write(FrameResult("cam1", result.frame, result.width, result.height, result.poses), None)
        code, lines, err = finish(process)
    assert code == 0, err
    parsed = [SUMMARY.match(line) for line in lines]
    assert all(parsed), lines
    assert [(m[1], int(m[2]), int(m[3])) for m in parsed] == \
        [("cam1", r.frame, len(r.poses)) for r in frames[:3]]
    assert parsed[0][4] == ",".join(str(i) for i in frames[0].poses.ids)


def test_until_end_stops_at_end_of_stream_and_reports_tail_loss(frames: list[FrameResult]) -> None:
    """Frames 0..5 are published, then the stream ends at frame 8: the command stops by itself and
    its tally names the three frames lost at the tail."""
    with sink() as pub:
        process = start_subscribe(pub.bound_endpoint, "--until-end", "--json")
        for result in frames[:6]:
            pub.write(result, None)
        pub.end_stream("cam0", 8)
        code, lines, err = finish(process)
    assert code == 0, err
    assert [json.loads(line)["frame"] for line in lines] == list(range(6))
    assert "6 frames received, 3 missing in 1 gaps (3 at the tail)" in err
    assert "tail loss: stream 'cam0' lost its last 3 frame(s) (6..8)" in err
    assert "every stream has ended" in err


def _readline(process: subprocess.Popen, timeout: float) -> str:
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    return process.stdout.readline() if ready else ""


def test_latest_skips_what_piled_up(frames: list[FrameResult]) -> None:
    with sink() as pub:
        process = start_subscribe(pub.bound_endpoint, "--latest", "--json", "--timeout", "2")
        try:
            pub.write(frames[0], None)
            assert json.loads(_readline(process, 30))["frame"] == 0
            os.kill(process.pid, signal.SIGSTOP)  # a busy consumer
            for number in range(1, 100):
                result = frames[number % len(frames)]
                pub.write(FrameResult("cam0", number, result.width, result.height, result.poses), None)
            time.sleep(0.3)
        finally:
            os.kill(process.pid, signal.SIGCONT)
        code, lines, err = finish(process)
    assert code == 0, err
    numbers = [json.loads(line)["frame"] for line in lines]
    assert numbers[-1] == 99 and len(numbers) < 20  # the newest frame, not a backlog of 99
    assert "skipped as stale" in err and "0 missing" in err


def test_garbage_is_skipped_with_a_warning(frames: list[FrameResult]) -> None:
    context = zmq.Context()
    pub = context.socket(zmq.XPUB)
    try:
        port = pub.bind_to_random_port("tcp://127.0.0.1")
        process = start_subscribe(f"tcp://127.0.0.1:{port}", "--json", "--count", "1",
                                  "--timeout", "30")
        assert pub.poll(30_000), "the subscriber never subscribed"
        assert pub.recv() == b"\x01"
        pub.send_multipart([b"cam0", b"\x92\xff\x00 garbage"])
        pub.send_multipart([b"cam0", msgpack.packb(frame_message(frames[1], publish_ts=time.time()))])
        code, lines, err = finish(process)
    finally:
        pub.close(linger=0)
        context.term()
    assert code == 0, err
    assert [json.loads(line)["frame"] for line in lines] == [1]
    assert "skipped a malformed message" in err and "1 malformed" in err


def test_curve_keys_from_the_command_line(frames: list[FrameResult], tmp_path: Path) -> None:
    for name, where in (("server", "server"), ("alice", "clients")):
        assert main(["keys", "generate", name, "--dir", str(tmp_path / where)]) == 0
    with sink(curve=True, server_secret_key=str(tmp_path / "server/server.key_secret"),
              allowed_clients=str(tmp_path / "clients")) as pub:
        allowed = start_subscribe(pub.bound_endpoint, "--json", "--count", "2", "--timeout", "30",
                                  "--client-key", str(tmp_path / "clients/alice.key_secret"),
                                  "--server-key", str(tmp_path / "server/server.key"))
        plain = start_subscribe(pub.bound_endpoint, "--timeout", "3")
        for result in frames[:2]:
            pub.write(result, None)
        code, lines, err = finish(allowed)
        plain_code, plain_lines, plain_err = finish(plain)
    assert code == 0, err
    assert [json.loads(line)["frame"] for line in lines] == [0, 1]
    assert plain_code == 2 and plain_lines == []
    assert "no frame from" in plain_err


def test_keys_generate_writes_a_usable_pair(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["keys", "generate", "cam-host", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "cam-host.key") in out and str(tmp_path / "cam-host.key_secret") in out
    pair = load_key_pair(tmp_path / "cam-host.key_secret")
    assert load_public_key(tmp_path / "cam-host.key") == pair.public
    assert zmq.curve_public(pair.secret) == pair.public
    assert (tmp_path / "cam-host.key_secret").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("argv, message", [
    (["subscribe", "http://127.0.0.1:5555"], "subscriber URL = 'http://127.0.0.1:5555' is not a ZMQ"),
    (["subscribe", "tcp://127.0.0.1:9", "--count", "-1"], "--count must be >= 0"),
    (["subscribe", "tcp://127.0.0.1:9", "--client-key", "a.key_secret"], "needs both --client-key"),
    (["subscribe", "tcp://127.0.0.1:9", "--client-key", "/nonexistent.key_secret",
      "--server-key", "/nonexistent.key"], "CURVE key file not found: /nonexistent.key_secret"),
    (["subscribe", "tcp://127.0.0.1:9", "--timeout", "0.2"], "no frame from tcp://127.0.0.1:9"),
    (["subscribe", "--set", "zmq.endpoint=udp://x:1", "--timeout", "0.2"], "is not a ZMQ endpoint"),
    (["keys", "generate", "../escape"], "must be a plain file name"),
])
def test_bad_input_is_one_line_and_exit_2(argv: list[str], message: str,
                                          capsys: pytest.CaptureFixture) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_existing_key_is_never_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["keys", "generate", "server", "--dir", str(tmp_path)]) == 0
    before = (tmp_path / "server.key_secret").read_bytes()
    assert main(["keys", "generate", "server", "--dir", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "server.key_secret").read_bytes() == before
