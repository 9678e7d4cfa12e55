"""`core.wire`: the schema-v2 control messages (end, heartbeat, status), topics and round trips.
Frame validation is covered case by case in test_client.py."""
from __future__ import annotations

import copy
import time

import msgpack
import pytest

from posestream.stream.core import wire
from posestream.stream.core.errors import InputError

from message_edits import edited


def _end() -> dict:
    return wire.end_message("cam0", 71, time.time(), "host:1:ab")


def _heartbeat() -> dict:
    return wire.heartbeat_message("host:1:ab", time.time() - 5, 4, time.time(), 1.0,
                                  ["cam0", "cam1"], {"cam1": None})


CAMERA = {"name": "door", "node": "10.0.0.7", "state": "running", "fps": 24.5, "p99_ms": 81.0,
          "last_frame_age_s": 0.04, "restarts": 0}


def _status() -> dict:
    return wire.status_message([CAMERA, {**CAMERA, "name": "yard", "state": "unreachable",
                                         "fps": None, "p99_ms": None, "last_frame_age_s": None,
                                         "restarts": 3}], time.time())


@pytest.mark.parametrize("build, topic", [
    (_end, b"cam0"), (_heartbeat, wire.HEARTBEAT_TOPIC), (_status, wire.STATUS_TOPIC),
])
def test_control_messages_round_trip_under_their_topic(build, topic: bytes) -> None:
    message = build()
    parts = wire.encode(message)
    assert parts[0] == topic and parts[0].startswith(wire.CONTROL_PREFIX) == (topic != b"cam0")
    assert wire.decode(*parts) == message and message["v"] == wire.SCHEMA_VERSION


def _change(build, path: tuple, value: object):
    return lambda: edited(copy.deepcopy(build()), path, value)


@pytest.mark.parametrize("make, match", [
    (_change(_end, ("last_frame",), None), None),
    (_change(_end, ("last_frame",), -1), "'last_frame' must be a non-negative integer or null"),
    (_change(_end, ("stream",), "a\x00b"), "'stream' must be a non-empty string"),
    (_change(_end, ("v",), 1), "schema v1 has only frame messages"),
    (_change(_heartbeat, ("interval_s",), 0), "'interval_s' must be a positive number"),
    (_change(_heartbeat, ("seq",), -3), "'seq' must be a non-negative integer"),
    (_change(_heartbeat, ("streams",), ["cam0", ""]), "'streams' must be a list of stream names"),
    (_change(_heartbeat, ("ended",), {"cam0": "x"}), "'ended' must be a map"),
    (_change(_heartbeat, ("publisher",), KeyError), "'publisher' is missing"),
    (_change(_status, ("cameras", 0, "state"), "sleeping"), r"cameras\[0\] field 'state' must be one of"),
    (_change(_status, ("cameras", 1, "restarts"), KeyError), r"cameras\[1\] field 'restarts' is missing"),
    (_change(_status, ("cameras", 0, "fps"), -1.0), r"'fps' must be a number >= 0 or null"),
    (_change(_status, ("cameras",), {}), "'cameras' must be a list"),
])
def test_control_message_validation(make, match: str | None) -> None:
    message = make()
    if match is None:
        assert wire.validate(message) is message
    else:
        with pytest.raises(InputError, match=match):
            wire.validate(message)


def test_status_message_refuses_a_bad_camera_before_it_is_sent() -> None:
    with pytest.raises(InputError, match="'state' must be one of running, restarting"):
        wire.status_message([{**CAMERA, "state": "ok"}], time.time())


def test_heartbeat_on_a_stream_topic_is_rejected() -> None:
    payload = msgpack.packb(_heartbeat())
    with pytest.raises(InputError, match="differs from the message's own"):
        wire.decode(b"cam0", payload)


@pytest.mark.parametrize("name", ["", "a\x00b", 3])
def test_check_stream_name(name: object) -> None:
    with pytest.raises(InputError, match="stream name"):
        wire.check_stream_name(name)  # type: ignore[arg-type]
