"""`posestream` command line. Sub-commands live in `posestream.commands.*`; this module only dispatches
and turns posestream errors into one clear line and a non-zero exit."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from posestream.stream.core.errors import PosestreamError

# Order here is the order in `posestream --help`.
COMMAND_MODULES = ("run", "image", "demo", "models", "engines", "subscribe", "keys", "bench", "eval",
                   "fleet")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="posestream", description=(
        "Real-time multi-person 2D pose estimation over live video."))
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"posestream.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"posestream.commands.{name}":
                raise
            continue  # command not built yet
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except PosestreamError as exc:
        print(f"posestream: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("posestream: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


