"""`posestream keys generate NAME`: make a CURVE key pair for the ZMQ stream.

The server's `.key_secret` goes to `zmq.server_secret_key`; each client's public `.key` goes into
the `zmq.allowed_clients` directory; a client needs its own `.key_secret` and the server's `.key`.
"""
from __future__ import annotations

import argparse

from posestream.commands.common import add_config_args, config_from_args
from posestream.stream.core.config import home_dir
from posestream.stream.curve_keys import generate_key_pair


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("keys", help="manage CURVE keys for the ZMQ stream",
                                   description="Manage CURVE keys for the ZMQ stream.")
    actions = parser.add_subparsers(dest="keys_action", metavar="ACTION", required=True)
    generate = actions.add_parser(
        "generate", help="write NAME.key (public) and NAME.key_secret (private, mode 0600)",
        description="Write a CURVE key pair: NAME.key (public) and NAME.key_secret (private).")
    generate.add_argument("name", help="key name, e.g. 'server' or a client's name")
    generate.add_argument("--dir", metavar="DIR",
                          help="where to write the files (default: <posestream home>/keys)")
    add_config_args(generate)
    generate.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    directory = args.dir or home_dir(config_from_args(args)) / "keys"
    public, secret = generate_key_pair(directory, args.name)
    print(f"public key: {public}")
    print(f"secret key: {secret}  (keep private)")
    return 0
