"""`posestream bench`: throughput, latency and accuracy of the configured pipeline next to the
sequential baseline and the targets (the work is done by `benchmarks.bench`)."""
from __future__ import annotations

import argparse

from posestream.commands.common import add_config_args, config_from_args


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help="measure model latency, pipeline throughput vs sequential, live latency, accuracy")
    from posestream.benchmarks.bench import add_arguments

    add_arguments(parser)
    add_config_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from posestream.benchmarks.bench import run_from_args

    return run_from_args(args, config_from_args(args))
