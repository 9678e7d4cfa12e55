"""The ZMQ wire format, schema v2: message types, encoding (msgpack), decoding and validation.

Everything that publishes or reads the keypoint stream goes through this module, so the schema
lives in one place (docs/zmq.md describes it for people). A message is a ZMQ multipart
`[topic, payload]`; payload = one msgpack map with `"v"` (schema version) and `"type"`:

- `frame`: one processed frame (the v1 fields plus `"v": 2, "type": "frame"`); topic = stream name.
  Optional `epoch`: the publisher's incarnation (a fleet camera's restart or move); it only grows,
  and frame numbers start again in each epoch.
- `end`: the stream is finished; `last_frame` is the number of its last frame (null when it had
  none), so a subscriber counts the frames it lost at the tail. Topic = stream name, so it follows
  that stream's frames in order through any topic filter.
- `heartbeat`: sent by every publisher every `interval_s`, also while no frame flows; names the
  streams it serves and those that ended (with their last frame, repeating a lost `end`).
  Topic = `HEARTBEAT_TOPIC`.
- `status`: one fleet's view of its cameras (state, fps, p99 latency, last-frame age, restarts);
  topic = `STATUS_TOPIC`.

Control topics start with a NUL byte, which no stream name contains (`check_stream_name`), so
they never collide with a stream; subscribers subscribe to `CONTROL_PREFIX` besides their streams.
v1 frame messages (`"v": 1`, no `type`) are still accepted; a frame message may omit `type`.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping

import msgpack
import numpy as np

from posestream.stream.core.errors import InputError
from posestream.stream.core.keypoints import FORMATS
from posestream.stream.core.results import FrameResult, Poses

SCHEMA_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
CONTROL_PREFIX = b"\x00"
HEARTBEAT_TOPIC = CONTROL_PREFIX + b"heartbeat"
STATUS_TOPIC = CONTROL_PREFIX + b"status"
MESSAGE_TYPES = ("frame", "end", "heartbeat", "status")
CAMERA_STATES = ("running", "restarting", "unreachable", "waiting")

_NUMBER = (int, float)


def check_stream_name(name: str) -> str:
    """`name` if it can be a stream's topic (non-empty, no NUL); else `InputError`."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise InputError(f"stream name {name!r} must be a non-empty string without NUL characters")
    return name


# ---------------------------------------------------------------------------------------- building

def frame_message(result: FrameResult, publish_ts: float, epoch: int | None = None) -> dict[str, Any]:
    """The frame message of `result` (DESIGN.md section 7), published at `publish_ts`. `epoch`
    (optional) numbers the publisher's incarnation: it grows with every restart, and frame numbers
    start again within each epoch, so a subscriber tells a restart from disorder."""
    message = {"v": SCHEMA_VERSION, "type": "frame", "stream": result.stream, "frame": result.frame,
               "pts": result.pts, "capture_ts": result.capture_ts, "publish_ts": publish_ts,
               "width": result.width, "height": result.height, "format": result.poses.format,
               "persons": result.poses.to_persons()}
    if epoch is not None:
        message["epoch"] = epoch
    return message


def end_message(stream: str, last_frame: int | None, publish_ts: float,
                publisher: str) -> dict[str, Any]:
    """`stream` has ended; its last frame was `last_frame` (None: it produced no frame)."""
    return {"v": SCHEMA_VERSION, "type": "end", "stream": stream, "last_frame": last_frame,
            "publish_ts": publish_ts, "publisher": publisher}


def heartbeat_message(publisher: str, started: float, seq: int, publish_ts: float,
                      interval_s: float, streams: Iterable[str],
                      ended: Mapping[str, int | None]) -> dict[str, Any]:
    """Publisher `publisher` (started at unix time `started`) is alive; `seq` counts heartbeats
    from 0; the next one is due within `interval_s`."""
    return {"v": SCHEMA_VERSION, "type": "heartbeat", "publisher": publisher, "started": started,
            "seq": seq, "publish_ts": publish_ts, "interval_s": interval_s,
            "streams": list(streams), "ended": dict(ended)}


def status_message(cameras: Iterable[Mapping[str, Any]], publish_ts: float) -> dict[str, Any]:
    """A fleet's per-camera status; each camera is a map with the keys of `_CAMERA_FIELDS`
    (name, node, state, fps, p99_ms, last_frame_age_s, restarts). Validated here, so a fleet
    cannot publish what subscribers would reject."""
    message = {"v": SCHEMA_VERSION, "type": "status", "publish_ts": publish_ts,
               "cameras": [dict(camera) for camera in cameras]}
    return validate(message)


def topic_of(message: Mapping[str, Any]) -> bytes:
    """The ZMQ topic a message travels under."""
    kind = message.get("type", "frame")
    if kind == "heartbeat":
        return HEARTBEAT_TOPIC
    if kind == "status":
        return STATUS_TOPIC
    return message["stream"].encode("utf-8")


def _plain(value: Any) -> Any:
    """msgpack fallback for numpy scalars that slipped into a message."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__} in a stream message")


def encode(message: Mapping[str, Any]) -> list[bytes]:
    """`[topic, payload]` ready for `send_multipart`."""
    return [topic_of(message), msgpack.packb(message, default=_plain)]


# -------------------------------------------------------------------------------------- validation

def _fail(problem: str) -> None:
    raise InputError(f"stream message: {problem}")


def _is_number(value: Any) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_name(value: Any) -> bool:
    return isinstance(value, str) and value != "" and "\x00" not in value


def _check_field(message: Mapping[str, Any], key: str, check: Callable[[Any], bool], want: str,
                 where: str = "field") -> None:
    if key not in message:
        _fail(f"{where} '{key}' is missing")
    if not check(message[key]):
        _fail(f"{where} '{key}' must be {want}, got {message[key]!r:.60}")


def _check_person(person: Any, index: int, num_keypoints: int) -> None:
    where = f"persons[{index}]"
    if not isinstance(person, dict):
        _fail(f"{where} must be a map, got {type(person).__name__}")
    for key in ("id", "box", "box_score", "score", "keypoints"):
        if key not in person:
            _fail(f"{where} has no '{key}'")
    pid = person["id"]
    if pid is not None and not _is_count(pid):
        _fail(f"{where}.id must be null or a non-negative integer, got {pid!r}")
    box = person["box"]
    if not (isinstance(box, list) and len(box) == 4 and all(map(_is_number, box))):
        _fail(f"{where}.box must be [x, y, w, h], got {box!r:.60}")
    for key in ("box_score", "score"):
        if not _is_number(person[key]):
            _fail(f"{where}.{key} must be a number, got {person[key]!r}")
    keypoints = person["keypoints"]
    if not isinstance(keypoints, list) or len(keypoints) != num_keypoints:
        _fail(f"{where}.keypoints must hold {num_keypoints} [x, y, score] triplets")
    for kp in keypoints:
        if not (isinstance(kp, list) and len(kp) == 3 and all(map(_is_number, kp))):
            _fail(f"{where}.keypoints has an entry that is not [x, y, score]: {kp!r:.60}")


def _validate_frame(message: Mapping[str, Any]) -> None:
    _check_field(message, "stream", _is_name, "a non-empty string")
    _check_field(message, "frame", _is_count, "a non-negative integer")
    _check_field(message, "pts", lambda v: v is None or _is_number(v), "a number or null")
    for key in ("capture_ts", "publish_ts"):
        _check_field(message, key, _is_number, "a number")
    for key in ("width", "height"):
        _check_field(message, key, lambda v: _is_count(v) and v > 0, "a positive integer")
    _check_field(message, "format", lambda v: v in FORMATS, f"one of {', '.join(FORMATS)}")
    _check_field(message, "persons", lambda v: isinstance(v, list), "a list")
    if "epoch" in message:
        _check_field(message, "epoch", _is_count, "a non-negative integer")
    num_keypoints = FORMATS[message["format"]].num_keypoints
    for index, person in enumerate(message["persons"]):
        _check_person(person, index, num_keypoints)


def _validate_end(message: Mapping[str, Any]) -> None:
    _check_field(message, "stream", _is_name, "a non-empty string")
    _check_field(message, "last_frame", lambda v: v is None or _is_count(v),
                 "a non-negative integer or null")
    _check_field(message, "publish_ts", _is_number, "a number")
    _check_field(message, "publisher", lambda v: isinstance(v, str), "a string")


def _validate_heartbeat(message: Mapping[str, Any]) -> None:
    _check_field(message, "publisher", lambda v: isinstance(v, str) and v != "", "a non-empty string")
    for key in ("started", "publish_ts"):
        _check_field(message, key, _is_number, "a number")
    _check_field(message, "seq", _is_count, "a non-negative integer")
    _check_field(message, "interval_s", lambda v: _is_number(v) and v > 0, "a positive number")
    _check_field(message, "streams", lambda v: isinstance(v, list) and all(map(_is_name, v)),
                 "a list of stream names")
    _check_field(message, "ended", lambda v: isinstance(v, dict) and all(
        _is_name(k) and (f is None or _is_count(f)) for k, f in v.items()),
        "a map of stream name to last frame (or null)")


_CAMERA_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": (_is_name, "a non-empty string"),
    "node": (lambda v: isinstance(v, str), "a string"),
    "state": (lambda v: v in CAMERA_STATES, f"one of {', '.join(CAMERA_STATES)}"),
    "fps": (lambda v: v is None or (_is_number(v) and v >= 0), "a number >= 0 or null"),
    "p99_ms": (lambda v: v is None or (_is_number(v) and v >= 0), "a number >= 0 or null"),
    "last_frame_age_s": (lambda v: v is None or (_is_number(v) and v >= 0),
                         "a number >= 0 or null"),
    "restarts": (_is_count, "a non-negative integer"),
}


def _validate_status(message: Mapping[str, Any]) -> None:
    _check_field(message, "publish_ts", _is_number, "a number")
    _check_field(message, "cameras", lambda v: isinstance(v, list), "a list")
    for index, camera in enumerate(message["cameras"]):
        if not isinstance(camera, dict):
            _fail(f"cameras[{index}] must be a map, got {type(camera).__name__}")
        for key, (check, want) in _CAMERA_FIELDS.items():
            _check_field(camera, key, check, want, where=f"cameras[{index}] field")


_VALIDATORS: dict[str, Callable[[Mapping[str, Any]], None]] = {
    "frame": _validate_frame, "end": _validate_end, "heartbeat": _validate_heartbeat,
    "status": _validate_status,
}


def message_type(message: Mapping[str, Any]) -> str:
    """The message's type; a message without `type` is a frame (all of v1 is frames)."""
    return message.get("type", "frame")


def validate(message: Any) -> dict[str, Any]:
    """`message` itself if it is a valid v1 or v2 message; else `InputError` naming the problem."""
    if not isinstance(message, dict):
        _fail(f"expected a map, got {type(message).__name__}")
    version = message.get("v")
    if version not in SUPPORTED_VERSIONS or isinstance(version, bool):
        _fail(f"schema version {version!r} is not supported (this client reads "
              f"v{', v'.join(map(str, SUPPORTED_VERSIONS))})")
    kind = message_type(message)
    if version == 1 and kind != "frame":
        _fail(f"schema v1 has only frame messages, got type {kind!r}")
    if kind not in _VALIDATORS:
        _fail(f"unknown message type {kind!r} (expected one of {', '.join(MESSAGE_TYPES)})")
    _VALIDATORS[kind](message)
    return message


def decode(topic: bytes, payload: bytes) -> dict[str, Any]:
    """Unpack and validate one `[topic, payload]` pair; the topic must be the message's own."""
    try:
        message = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:  # ExtraData etc. are ValueErrors
        raise InputError(f"stream message: not msgpack ({type(exc).__name__}: {exc})") from None
    validate(message)
    expected = topic_of(message)
    if topic != expected:
        _fail(f"topic {topic!r} differs from the message's own {expected!r}")
    return message


def to_poses(message: Mapping[str, Any]) -> Poses:
    """A frame message's persons as `Poses` (numpy arrays), for consumers that compute on them."""
    return Poses.from_persons(message["persons"], message["format"])
