"""The private feed between the web sink (sinks process) and the viewer server (supervisor process).

A message is `[topic, body]` or `[topic, body, jpeg]`; topic = kind byte + stream name + NUL (the
NUL keeps "cam1" from matching "cam10" in ZMQ's prefix filter). Body = msgpack of the wire message
and the per-stage (enter, exit) timings. Both ends are ours, so msgpack with plain types suffices.
"""
from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

TOPIC_KEYPOINTS = b"k"  # every frame, keypoints only; always subscribed
TOPIC_FRAME = b"j"      # keypoints + JPEG; subscribed per stream while someone watches it


def topic(kind: bytes, stream: str) -> bytes:
    return kind + stream.encode("utf-8") + b"\0"


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__} in a feed message")


def pack(message: dict[str, Any], timings: dict[str, tuple[float, float]]) -> bytes:
    return msgpack.packb({"m": message, "t": timings}, default=_plain)


def unpack(body: bytes) -> tuple[dict[str, Any], dict[str, list[float]]]:
    data = msgpack.unpackb(body)
    return data["m"], data["t"]
