"""`posestream demo`: the whole pipeline on a built-in clip, nothing to download beyond PyPI.

The clip pans across a public-domain photo shipped in scikit-image (see `stream.demo_clip`); the
run writes an annotated video and AlphaPose JSON, the same as `posestream run` with two sinks.
With `--web` the clip instead loops as a live stream into the browser viewer until Ctrl-C.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from posestream.commands.common import add_config_args, config_from_args
from posestream.stream.core.errors import ConfigError
from posestream.stream.core.settings import Settings


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the whole pipeline on a built-in example clip")
    parser.add_argument("--out", type=Path, default=Path("demo-output"),
                        help="output folder (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of the clip (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--web", nargs="?", const="", default=None, metavar="HOST:PORT",
                        help="loop the clip live into the web viewer (default [web] host/port) until Ctrl-C")
    add_config_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from posestream.stream.demo_clip import make_demo_clip
    from posestream.stream.pipeline import Pipeline
    from posestream.stream.progress import make_display

    config = config_from_args(args)
    args.out.mkdir(parents=True, exist_ok=True)
    clip = make_demo_clip(args.out / "demo_input.mp4", seconds=args.seconds)
    if args.web is not None:
        return _run_web(config, clip, args.web, args.quiet)
    video, results = args.out / "demo_annotated.mp4", args.out / "alphapose-results.json"
    sinks = [f"video:{video}", f"json:{results}"]
    with Pipeline(config, [str(clip)], sinks, "offline",
                  progress=None if args.quiet else make_display) as pipeline:
        report = pipeline.run()
    sys.stderr.write(report.format_table() + "\n")
    if report.exit_code == 0:
        print(f"demo: input {clip}\n      annotated video {video}\n      AlphaPose JSON {results}")
    return report.exit_code


def _run_web(config: Settings, clip: Path, target: str, quiet: bool) -> int:
    """The clip as an endless live stream (FFmpeg loops it at 30 fps in real time) into the viewer."""
    from posestream.plugins.sinks.web.settings import url_of, web_settings
    from posestream.stream.pipeline import Pipeline
    from posestream.stream.progress import make_display

    path = str(clip.resolve())
    if any(c in path for c in ":,;'\\[]="):
        raise ConfigError(f"demo --web: the clip path {path} has characters an FFmpeg filter graph "
                          "cannot take; choose another --out")
    source = f"lavfi:movie=filename={path}:loop=0,setpts=N/(30*TB),realtime"
    print(f"demo: open {url_of(web_settings(config, target))} in a browser; Ctrl-C stops",
          flush=True)
    with Pipeline(config, [source], [f"web:{target}" if target else "web"], "live",
                  progress=None if quiet else make_display) as pipeline:
        report = pipeline.run()
    sys.stderr.write(report.format_table() + "\n")
    return report.exit_code
