"""`posestream subscribe URL`: print the live keypoint stream, one line per frame.

stdout gets only frames (JSON lines with `--json`, else a compact summary), so it can be piped into
other tools; gaps, skipped messages and the final tally go to stderr through logging.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

from posestream.stream.client import Subscriber
from posestream.commands.common import add_config_args, config_from_args
from posestream.stream.curve_keys import ClientCurve
from posestream.stream.core.errors import ConfigError, SourceTimeoutError

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "subscribe", help="print frames from a posestream ZMQ publisher",
        description="Connect to a posestream publisher and print one line per frame.")
    parser.add_argument("url", nargs="?", default=None,
                        help="publisher endpoint, e.g. tcp://127.0.0.1:5555 (default: zmq.endpoint)")
    parser.add_argument("--topic", action="append", default=[], metavar="NAME",
                        help="only this stream (repeatable; default: every stream)")
    parser.add_argument("--latest", action="store_true",
                        help="only the newest frame per stream; skip what piled up while busy")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--count", type=int, default=0, metavar="N", help="stop after N frames")
    parser.add_argument("--timeout", type=float, default=0.0, metavar="S",
                        help="stop when no frame arrives for S seconds (an error if none came)")
    parser.add_argument("--client-key", metavar="FILE",
                        help="CURVE: this client's .key_secret file (default: zmq.client_secret_key)")
    parser.add_argument("--server-key", metavar="FILE",
                        help="CURVE: the server's public .key file (default: zmq.server_public_key)")
    add_config_args(parser)
    parser.set_defaults(func=run)


def summary_line(message: dict[str, Any], now: float) -> str:
    """`cam0 #12 3 persons ids 1,2,5 age 4.1 ms`: age = now - publish time."""
    persons = message["persons"]
    ids = ",".join("-" if p["id"] is None else str(p["id"]) for p in persons) or "-"
    age_ms = (now - message["publish_ts"]) * 1000
    return (f"{message['stream']} #{message['frame']} {len(persons)} person"
            f"{'' if len(persons) == 1 else 's'} ids {ids} age {age_ms:.1f} ms")


def _curve(args: argparse.Namespace, settings: dict[str, Any]) -> ClientCurve | None:
    client = args.client_key or settings["client_secret_key"]
    server = args.server_key or settings["server_public_key"]
    if bool(client) != bool(server):
        raise ConfigError("CURVE needs both --client-key (.key_secret) and --server-key (.key)")
    return ClientCurve.from_files(client, server) if client else None


def run(args: argparse.Namespace) -> int:
    if args.count < 0:
        raise ConfigError(f"--count must be >= 0, got {args.count}")
    if args.timeout < 0:
        raise ConfigError(f"--timeout must be >= 0, got {args.timeout}")
    settings = config_from_args(args)["zmq"]
    url = args.url or settings["endpoint"]
    received = 0
    with Subscriber(url, topics=args.topic, conflate=args.latest, curve=_curve(args, settings)) as sub:
        try:
            while not args.count or received < args.count:
                message = sub.receive(args.timeout or None)
                if message is None:
                    if not received:
                        raise SourceTimeoutError(f"no frame from {url} within {args.timeout:g} s")
                    log.info("no frame for %g s; stopping", args.timeout)
                    break
                received += 1
                line = (json.dumps(message, separators=(",", ":")) if args.json
                        else summary_line(message, time.time()))
                print(line, flush=True)
        finally:
            stats = sub.stats
            log.info("%d frames received, %d missing in %d gaps, %d skipped as stale, %d malformed",
                     stats.received, stats.missing, len(stats.gaps), stats.skipped, stats.malformed)
    return 0
