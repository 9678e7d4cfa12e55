"""Flags every command shares: `--preset NAME`, `--config FILE` and `--set key=value` overrides."""
from __future__ import annotations

import argparse

from posestream.stream.core.config import Config, load_config, parse_value
from posestream.stream.core.errors import ConfigError


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="config file overriding config.toml defaults")
    parser.add_argument("--preset", metavar="NAME", help="shipped settings applied before --config and --set: "
                        "apache = models whose every weight is Apache-2.0/MIT")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set detector.input_size=320 (repeatable)")


def config_from_args(args: argparse.Namespace, **flags: object) -> Config:
    """Defaults, then `--config`, then `--set`, then command-specific flags (dotted keys, None = unset)."""
    overrides: dict[str, object] = {}
    for item in getattr(args, "overrides", []):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got '{item}'")
        overrides[key.strip()] = parse_value(value.strip())
    overrides.update({k: v for k, v in flags.items() if v is not None})
    return load_config(getattr(args, "config", None), overrides, getattr(args, "preset", None))
