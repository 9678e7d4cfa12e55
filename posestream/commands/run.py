"""`posestream run`: stream one or more sources through the pipeline into sinks."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from posestream.commands.common import add_config_args, config_from_args
from posestream.engines.backends.factory import backend_names

STRICT_EXIT = 3  # the run completed, but an input lost frames and --strict was asked for


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="run the streaming pipeline over video sources")
    parser.add_argument("--source", action="append", required=True, metavar="SRC",
                        help="video file, image folder, image list, webcam index or /dev/videoN, "
                             "rtsp://... or http(s):// camera URL, lavfi:FILTER (repeatable)")
    parser.add_argument("--sink", action="append", default=[], metavar="KIND:TARGET",
                        help="json:PATH, video:PATH, images:DIR, window, zmq[:ENDPOINT], web[:HOST:PORT] (repeatable)")
    policy = parser.add_mutually_exclusive_group()
    policy.add_argument("--live", dest="policy", action="store_const", const="live",
                        help="never block the source: drop the oldest unprocessed frame when behind")
    policy.add_argument("--offline", dest="policy", action="store_const", const="offline",
                        help="process every frame exactly once, in order (blocks the source)")
    parser.add_argument("--backend", choices=backend_names(),
                        help="inference backend (default: engine.backend); auto = the first of "
                             "engines/backends/factory.py's table that runs here (TensorRT on a GPU, else torch on a "
                             "visible GPU, else OpenVINO on the CPU when installed, else ONNX Runtime)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: engine.device)")
    parser.add_argument("--metrics", metavar="PATH", help="write the run's metrics as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or status line")
    parser.add_argument("--strict", action="store_true", default=None,
                        help="exit 3 when an input lost frames (undecodable packets, a file cut "
                             "short, unreadable images); default pipeline.strict")
    add_config_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from posestream.stream.pipeline import Pipeline
    from posestream.stream.progress import make_display

    config = config_from_args(args, **{"engine.backend": args.backend, "engine.device": args.device})
    engine = config.engine
    if engine.backend != "auto":
        # An explicitly chosen backend that cannot run here fails before any stage starts: one line,
        # no processes to tear down. (`auto` always finds one; the stages report their choice.)
        from posestream.engines.backends.factory import resolve_backend

        resolve_backend(engine.backend, engine.device)
    progress = None if args.quiet else make_display
    with Pipeline(config, args.source, args.sink, args.policy, progress=progress) as pipeline:
        report = pipeline.run()
    sys.stderr.write(report.format_table() + "\n")
    damage = input_damage(report.streams, interrupted=report.signal is not None)
    for line in damage:
        sys.stderr.write(f"input damaged: {line}\n")
    if args.metrics:
        report.write_json(args.metrics)
    strict = config.pipeline.strict if args.strict is None else args.strict
    if damage and strict and not report.exit_code:
        sys.stderr.write("posestream: error: input lost frames and --strict is on (exit 3)\n")
        return STRICT_EXIT
    return report.exit_code


def input_damage(streams: dict[str, dict[str, Any]], interrupted: bool) -> list[str]:
    """One line per stream whose source lost frames or met errors (see `stream.sources.damage`).
    A run stopped by a signal did not read its files to the end: only errors count then."""
    from posestream.stream.sources.damage import summary

    lines = []
    for name, stream in streams.items():
        stats = dict(stream.get("source", {}))
        if interrupted:
            stats["frames_expected"] = None
        lines.append(summary(f"stream {name}", stats))
    return [line for line in lines if line is not None]
