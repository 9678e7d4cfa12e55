"""`posestream demo`: the whole pipeline on a built-in clip, nothing to download beyond PyPI.

The clip pans across a public-domain photo shipped in scikit-image (see `stream.demo_clip`); the
run writes an annotated video and AlphaPose JSON, the same as `posestream run` with two sinks.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from posestream.commands.common import add_config_args, config_from_args


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the whole pipeline on a built-in example clip")
    parser.add_argument("--out", type=Path, default=Path("demo-output"),
                        help="output folder (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of the clip (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from posestream.stream.demo_clip import make_demo_clip
    from posestream.stream.pipeline import Pipeline
    from posestream.stream.progress import make_display

    config = config_from_args(args)
    args.out.mkdir(parents=True, exist_ok=True)
    clip = make_demo_clip(args.out / "demo_input.mp4", seconds=args.seconds)
    video, results = args.out / "demo_annotated.mp4", args.out / "alphapose-results.json"
    sinks = [f"video:{video}", f"json:{results}"]
    with Pipeline(config, [str(clip)], sinks, "offline",
                  progress=None if args.quiet else make_display) as pipeline:
        report = pipeline.run()
    sys.stderr.write(report.format_table() + "\n")
    if report.exit_code == 0:
        print(f"demo: input {clip}\n      annotated video {video}\n      AlphaPose JSON {results}")
    return report.exit_code
