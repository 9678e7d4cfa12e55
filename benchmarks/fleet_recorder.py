"""A subscriber that runs inside a test host (network namespace) and reports what it receives as
JSON lines on stdout, for the fleet network tests: `python recorder.py URL [--curve SECRET SERVER]`.

`--raw` reads with a bare ZMQ SUB socket (optionally a CURVE client) and reports every message it
gets, valid or not: the attacker's view, which must stay empty. Without it, the posestream
`Subscriber` (control messages on) reports frames with their epoch, status messages and gaps.
Each line: {"t": arrival time, "kind": ..., ...}. Runs until killed.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import zmq


def emit(kind: str, **fields: object) -> None:
    sys.stdout.write(json.dumps({"t": time.time(), "kind": kind, **fields}) + "\n")
    sys.stdout.flush()


def raw(url: str, curve: list[str] | None) -> None:
    from posestream.stream.curve_keys import ClientCurve, configure_client

    context = zmq.Context()
    sock = context.socket(zmq.SUB)
    if curve:
        configure_client(sock, ClientCurve.from_files(*curve))
    sock.subscribe(b"")
    sock.connect(url)
    emit("ready")
    while True:
        if sock.poll(1000):
            parts = sock.recv_multipart()
            emit("message", topic=parts[0][:40].decode("utf-8", "replace"), size=sum(map(len, parts)))


def subscribe(url: str, curve: list[str] | None) -> None:
    from posestream.stream.client import Subscriber

    with Subscriber(url, control=True, curve=tuple(curve) if curve else None,
                    on_gap=lambda g: emit("gap", stream=g.stream, first=g.first, last=g.last)) as sub:
        emit("ready")
        for message in sub:
            kind = message["type"] if "type" in message else "frame"
            if kind == "frame":
                emit("frame", stream=message["stream"], frame=message["frame"],
                     epoch=message.get("epoch"), publish_ts=message["publish_ts"],
                     capture_ts=message["capture_ts"])
            elif kind == "status":
                emit("status", cameras=message["cameras"])
            elif kind == "heartbeat":
                emit("heartbeat", publisher=message["publisher"], streams=message["streams"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--curve", nargs=2, metavar=("CLIENT_SECRET", "SERVER_PUBLIC"))
    parser.add_argument("--raw", action="store_true")
    args = parser.parse_args()
    (raw if args.raw else subscribe)(args.url, args.curve)


if __name__ == "__main__":
    main()
