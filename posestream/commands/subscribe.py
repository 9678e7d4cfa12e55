"""`posestream subscribe URL`: print the live keypoint stream, one line per frame.

stdout gets only frames (JSON lines with `--json`, else a compact summary), so it can be piped into
other tools; gaps, skipped messages, a dead publisher and the final tally (with the frames lost at
the tail, known from end-of-stream messages) go to stderr through logging.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

from posestream.stream.client import Subscriber, SubscriberStats
from posestream.commands.common import add_config_args, config_from_args
from posestream.stream.curve_keys import ClientCurve
from posestream.stream.core.errors import ConfigError, SourceTimeoutError
from posestream.stream.core.settings import ZmqSettings

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
    parser.add_argument("--until-end", action="store_true",
                        help="stop when every stream seen has sent its end-of-stream message")
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


def _curve(args: argparse.Namespace, settings: ZmqSettings) -> ClientCurve | None:
    client = args.client_key or settings.client_secret_key
    server = args.server_key or settings.server_public_key
    if bool(client) != bool(server):
        raise ConfigError("CURVE needs both --client-key (.key_secret) and --server-key (.key)")
    return ClientCurve.from_files(client, server) if client else None


def run(args: argparse.Namespace) -> int:
    if args.count < 0:
        raise ConfigError(f"--count must be >= 0, got {args.count}")
    if args.timeout < 0:
        raise ConfigError(f"--timeout must be >= 0, got {args.timeout}")
    settings = config_from_args(args).zmq
    url = args.url or settings.endpoint
    received = 0
    # control=True: end messages must come back to us (for --until-end) even when no frame follows;
    # only frames are printed.
    with Subscriber(url, topics=args.topic, conflate=args.latest, curve=_curve(args, settings),
                    control=True) as sub:
        try:
            frame_deadline = time.monotonic() + args.timeout if args.timeout else None
            while not args.count or received < args.count:
                if args.until_end and sub.all_ended:
                    log.info("every stream has ended; stopping")
                    break
                wait = None if frame_deadline is None else max(0.0, frame_deadline - time.monotonic())
                message = sub.receive(wait)
                if message is None:
                    if not received:
                        raise SourceTimeoutError(f"no frame from {url} within {args.timeout:g} s")
                    log.info("no frame for %g s; stopping", args.timeout)
                    break
                if message.get("type", "frame") != "frame":
                    continue
                received += 1
                if args.timeout:
                    frame_deadline = time.monotonic() + args.timeout
                line = (json.dumps(message, separators=(",", ":")) if args.json
                        else summary_line(message, time.time()))
                print(line, flush=True)
        finally:
            _tally(sub.stats)
    return 0


def _tally(stats: SubscriberStats) -> None:
    """The final summary on stderr: what arrived, what was lost (and how much of it at the tail)."""
    log.info("%d frames received, %d missing in %d gaps (%d at the tail), %d skipped as stale, "
             "%d malformed", stats.received, stats.missing, len(stats.gaps), stats.tail_missing,
             stats.skipped, stats.malformed)
    for gap in stats.gaps:
        if gap.tail:
            log.info("tail loss: stream %r lost its last %d frame(s) (%d..%d)", gap.stream,
                     gap.missing, gap.first, gap.last)
    if stats.ended:
        log.info("ended: %s", ", ".join(f"{name} (last frame {last})"
                                        for name, last in stats.ended.items()))
    if stats.publisher_dead:
        log.warning("publisher %s sent no heartbeat at the end (dead)", stats.publisher)
