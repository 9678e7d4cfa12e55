"""`posestream run`: stream one or more sources through the pipeline into sinks."""
from __future__ import annotations

import argparse
import sys

from posestream.commands.common import add_config_args, config_from_args
from posestream.engines.factory import backend_names


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
                             "engines/factory.py's table that runs here (TensorRT on a GPU, else torch on a "
                             "visible GPU, else OpenVINO on the CPU when installed, else ONNX Runtime)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: engine.device)")
    parser.add_argument("--metrics", metavar="PATH", help="write the run's metrics as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or status line")
    add_config_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from posestream.stream.pipeline import Pipeline
    from posestream.stream.progress import make_display

    config = config_from_args(args, **{"engine.backend": args.backend, "engine.device": args.device})
    engine = config["engine"]
    if engine["backend"] != "auto":
        # An explicitly chosen backend that cannot run here fails before any stage starts: one line,
        # no processes to tear down. (`auto` always finds one; the stages report their choice.)
        from posestream.engines.factory import resolve_backend

        resolve_backend(engine["backend"], engine["device"])
    progress = None if args.quiet else make_display
    with Pipeline(config, args.source, args.sink, args.policy, progress=progress) as pipeline:
        report = pipeline.run()
    sys.stderr.write(report.format_table() + "\n")
    if args.metrics:
        report.write_json(args.metrics)
    return report.exit_code
