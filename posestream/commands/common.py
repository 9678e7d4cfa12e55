"""Flags every command shares: `--config FILE` and `--set key=value` overrides (defined with the
configuration, `stream.core.config`, so benchmarks take them too without importing the CLI)."""
from __future__ import annotations

from posestream.stream.core.config import add_config_args, config_from_args

__all__ = ["add_config_args", "config_from_args"]
